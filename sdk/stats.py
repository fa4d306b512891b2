"""Statistics for success rates: Wilson score intervals and latency percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Return the Wilson score interval of a binomial proportion.

    Unlike the normal approximation, it stays inside [0, 1] and is sensible at 0 or n
    successes, which is where small regression suites often land.

    Args:
        successes: Number of successful episodes.
        trials: Number of episodes; 0 gives the uninformative interval (0, 1).
        z: Normal quantile; the default gives a 95% interval.
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def latency_percentiles_ms(durations_s: Sequence[float]) -> dict[str, float]:
    """Return p50 and p99 of durations given in seconds, in milliseconds."""
    values = np.asarray(durations_s, dtype=np.float64) * 1000.0
    if values.size == 0:
        raise ValueError("no durations to summarise")
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}
