"""Wilson intervals and latency percentiles against values worked out by hand."""

from __future__ import annotations

import pytest

from robota.stats import latency_percentiles_ms, wilson_interval


def test_wilson_known_value():
    # 40 of 50: p = 0.8, z = 1.96 gives [0.6696, 0.8876] (Wilson 1927, score interval).
    low, high = wilson_interval(40, 50)
    assert low == pytest.approx(0.6696, abs=1e-4)
    assert high == pytest.approx(0.8876, abs=1e-4)


def test_wilson_all_successes_stays_below_one():
    low, high = wilson_interval(50, 50)
    assert high == 1.0
    assert low == pytest.approx(0.9287, abs=1e-4)


def test_wilson_no_successes_starts_at_zero():
    low, high = wilson_interval(0, 20)
    assert low == 0.0
    assert high == pytest.approx(0.1611, abs=1e-4)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)


def test_latency_percentiles_in_milliseconds():
    result = latency_percentiles_ms([0.001] * 99 + [0.101])
    assert result["p50_ms"] == pytest.approx(1.0)
    assert result["p99_ms"] == pytest.approx(2.0)
