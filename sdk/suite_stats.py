"""Statistics of a suite run: per-scenario aggregates, thresholds and the paired baseline test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robota.stats import wilson_interval
from robota.suite import Thresholds


def mcnemar_exact(lost: int, gained: int) -> float:
    """Return the two-sided p-value of the exact McNemar test.

    Under the null hypothesis of no change, each discordant pair is equally likely to go either
    way, so the smaller count follows Binomial(lost + gained, 1/2).

    Args:
        lost: Pairs that succeeded in the baseline and failed now.
        gained: Pairs that failed in the baseline and succeed now.
    """
    if lost < 0 or gained < 0:
        raise ValueError(f"discordant counts must be non-negative, got {lost} and {gained}")
    n = lost + gained
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(lost, gained) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def summarise_scenario(rows: Sequence[Mapping[str, Any]], thresholds: Thresholds) -> dict[str, Any]:
    """Aggregate one scenario's rows and check them against the thresholds.

    Returns:
        Counts, the success rate with its 95% Wilson interval, time-to-success and metric
        summaries, and `threshold_failures`: one sentence per missed threshold.
    """
    successes = sum(bool(row["success"]) for row in rows)
    low, high = wilson_interval(successes, len(rows))
    times = [row["time_to_success_s"] for row in rows if row["time_to_success_s"] is not None]
    summary: dict[str, Any] = {
        "episodes": len(rows),
        "successes": successes,
        "success_rate": successes / len(rows) if rows else 0.0,
        "success_interval_95": [low, high],
        "time_to_success_median_s": float(np.median(times)) if times else None,
        "max_contact_force_n": max((row["max_contact_force_n"] for row in rows), default=0.0),
        "cell_collisions": sum(row["cell_collisions"] for row in rows),
        "joint_limit_violations": sum(row["joint_limit_violations"] for row in rows),
        "velocity_limit_violations": sum(row["velocity_limit_violations"] for row in rows),
        "tool_path_length_mean_m": _mean(row["tool_path_length_m"] for row in rows),
        "action_jerk_rms_mean_rad_s3": _mean(row["action_jerk_rms_rad_s3"] for row in rows),
    }
    if any("bundle" in row for row in rows):
        summary["bundle_agreement"] = summarise_agreement(rows)
    summary["threshold_failures"] = threshold_failures(rows, summary, thresholds)
    return summary


def threshold_failures(
    rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], thresholds: Thresholds
) -> list[str]:
    """Return one sentence per threshold that the scenario misses."""
    failures = []
    minimum = thresholds.min_success_rate
    if minimum is not None and summary["success_rate"] < minimum:
        failures.append(
            f"success rate {summary['success_rate']:.3f} is below min_success_rate {minimum}"
        )
    for metric, limit in thresholds.episode_limits().items():
        worst = max(rows, key=lambda row: row[metric], default=None)
        if worst is not None and worst[metric] > limit:
            failures.append(
                f"{metric} {worst[metric]:.4g} in the episode of seed {worst['seed']} exceeds "
                f"the threshold {limit}"
            )
    return failures


def summarise_agreement(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Compare the checkpoint's and the bundle's episodes of the same seeds."""
    paired = [row for row in rows if "bundle" in row]
    same_success = sum(row["success"] == row["bundle"]["success"] for row in paired)
    same_steps = sum(row["steps"] == row["bundle"]["steps"] for row in paired)
    differences = [row["bundle"]["action_max_abs_diff"] for row in paired]
    return {
        "episodes": len(paired),
        "same_success": same_success,
        "same_steps": same_steps,
        "success_agreement": same_success / len(paired) if paired else None,
        "action_max_abs_diff": max(differences, default=None),
    }


def compare_with_baseline(
    rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]], alpha: float
) -> dict[str, Any]:
    """Pair one scenario's episodes with a baseline's by seed and run the exact McNemar test.

    A regression is a significant test (p < alpha) with more pairs lost than gained.
    """
    baseline = {int(row["seed"]): bool(row["success"]) for row in baseline_rows}
    pairs = [(baseline[row["seed"]], bool(row["success"])) for row in rows if row["seed"] in baseline]
    lost = sum(before and not now for before, now in pairs)
    gained = sum(now and not before for before, now in pairs)
    p_value = mcnemar_exact(lost, gained)
    baseline_successes = sum(before for before, _ in pairs)
    return {
        "pairs": len(pairs),
        "unpaired_seeds": len(rows) - len(pairs),
        "baseline_success_rate": baseline_successes / len(pairs) if pairs else None,
        "lost": lost,
        "gained": gained,
        "p_value": p_value,
        "alpha": alpha,
        "regression": bool(p_value < alpha and lost > gained),
    }


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None
