"""The exact McNemar test against hand-worked values, baseline pairing and thresholds."""

from __future__ import annotations

import pytest

from robota.suite import Thresholds
from robota.suite_stats import compare_with_baseline, mcnemar_exact, summarise_scenario


@pytest.mark.parametrize(
    ("lost", "gained", "p_value"),
    [
        (0, 0, 1.0),
        # n = 5, all one way: 2 * (1/2)^5.
        (5, 0, 0.0625),
        # n = 6, all one way: 2 * (1/2)^6.
        (6, 0, 0.03125),
        (0, 6, 0.03125),
        # n = 12, P(X <= 2) = (1 + 12 + 66) / 4096, doubled.
        (10, 2, 158 / 4096),
        # n = 4, P(X <= 2) = 11/16, doubled and capped at 1.
        (2, 2, 1.0),
        # n = 8, P(X <= 1) = 9/256, doubled.
        (7, 1, 18 / 256),
    ],
)
def test_mcnemar_hand_worked(lost, gained, p_value):
    assert mcnemar_exact(lost, gained) == pytest.approx(p_value, abs=1e-12)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 3)


def _row(seed: int, success: bool, **metrics) -> dict:
    row = {
        "scenario": "s",
        "seed": seed,
        "success": success,
        "time_to_success_s": 3.0 if success else None,
        "max_contact_force_n": 10.0,
        "cell_collisions": 0,
        "joint_limit_violations": 0,
        "velocity_limit_violations": 0,
        "tool_path_length_m": 1.0,
        "action_jerk_rms_rad_s3": 5.0,
    }
    row.update(metrics)
    return row


def test_baseline_pairs_by_seed():
    baseline = [_row(seed, True) for seed in range(10)]
    # Seeds 0..5 now fail, 6..9 still succeed, seed 99 has no partner.
    current = [_row(seed, seed >= 6) for seed in range(10)] + [_row(99, False)]
    comparison = compare_with_baseline(current, baseline, alpha=0.05)
    assert comparison["pairs"] == 10
    assert comparison["unpaired_seeds"] == 1
    assert comparison["lost"] == 6
    assert comparison["gained"] == 0
    assert comparison["p_value"] == pytest.approx(0.03125)
    assert comparison["regression"] is True


def test_improvement_is_no_regression():
    baseline = [_row(seed, False) for seed in range(8)]
    current = [_row(seed, True) for seed in range(8)]
    comparison = compare_with_baseline(current, baseline, alpha=0.05)
    assert comparison["gained"] == 8
    assert comparison["p_value"] < 0.05
    assert comparison["regression"] is False


def test_five_lost_pairs_not_significant():
    baseline = [_row(seed, True) for seed in range(5)]
    current = [_row(seed, False) for seed in range(5)]
    comparison = compare_with_baseline(current, baseline, alpha=0.05)
    assert comparison["p_value"] == pytest.approx(0.0625)
    assert comparison["regression"] is False


def test_summary_interval_and_median():
    rows = [_row(0, True), _row(1, True, time_to_success_s=5.0), _row(2, False)]
    summary = summarise_scenario(rows, Thresholds())
    assert summary["successes"] == 2
    assert summary["success_rate"] == pytest.approx(2 / 3)
    low, high = summary["success_interval_95"]
    assert low == pytest.approx(0.2077, abs=1e-4)
    assert high == pytest.approx(0.9385, abs=1e-4)
    assert summary["time_to_success_median_s"] == pytest.approx(4.0)
    assert summary["threshold_failures"] == []


def test_thresholds_name_worst_episode():
    rows = [_row(0, True), _row(1, False, max_contact_force_n=250.0, cell_collisions=2)]
    thresholds = Thresholds(min_success_rate=0.9, max_contact_force_n=200.0, max_cell_collisions=0)
    failures = summarise_scenario(rows, thresholds)["threshold_failures"]
    assert len(failures) == 3
    assert "below min_success_rate 0.9" in failures[0]
    assert "max_contact_force_n 250 in the episode of seed 1" in failures[1]
    assert "cell_collisions 2 in the episode of seed 1" in failures[2]
