"""ControlLoop: fixed-rate ticks that stop at their limit, count overruns and re-raise errors.

Timing is never asserted beyond what the deadline grid guarantees by construction.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from robota.edge.policy import BundlePolicy
from robota.edge.runtime import ControlLoop
from robota.edge.synthetic import synthesize_observations


def test_loop_runs_max_ticks_at_50_hz() -> None:
    sent = []
    loop = ControlLoop(lambda o: np.zeros(7), lambda: {}, sent.append, rate_hz=50.0)

    stats = loop.run(max_ticks=10)

    assert stats.ticks == 10
    assert len(sent) == 10
    assert stats.overruns <= stats.ticks
    assert math.isfinite(stats.latency_p50_ms)
    assert stats.latency_p99_ms >= stats.latency_p50_ms
    assert stats.jitter_p99_ms >= 0


def test_loop_stops_at_duration() -> None:
    loop = ControlLoop(lambda o: np.zeros(7), lambda: {}, lambda a: None, rate_hz=50.0)

    stats = loop.run(duration_s=0.1)

    # Deadlines at 0, 20, 40, 60 and 80 ms lie before the end; one at 100 ms does not.
    assert 1 <= stats.ticks <= 5


def test_loop_counts_overruns_without_catching_up() -> None:
    def slow_policy(observation):
        time.sleep(0.03)  # 1.5 periods at 50 Hz
        return np.zeros(7)

    loop = ControlLoop(slow_policy, lambda: {}, lambda a: None, rate_hz=50.0)

    stats = loop.run(max_ticks=3)

    assert stats.ticks == 3
    assert stats.overruns == 3
    assert stats.missed_deadlines >= 3


def test_loop_stop_from_callback() -> None:
    sent = []

    def send(action):
        sent.append(action)
        if len(sent) == 3:
            loop.stop()

    loop = ControlLoop(lambda o: np.zeros(7), lambda: {}, send, rate_hz=100.0)

    stats = loop.run()

    assert stats.ticks == 3


def test_loop_reraises_callback_error() -> None:
    def read():
        raise ConnectionError("robot disconnected")

    loop = ControlLoop(lambda o: np.zeros(7), read, lambda a: None, rate_hz=50.0)

    with pytest.raises(ConnectionError, match="robot disconnected"):
        loop.run(max_ticks=5)


@pytest.mark.parametrize("rate_hz", [0.0, -10.0, math.inf, math.nan])
def test_loop_rejects_invalid_rate(rate_hz: float) -> None:
    with pytest.raises(ValueError, match="rate_hz must be positive"):
        ControlLoop(lambda o: o, lambda: {}, lambda a: None, rate_hz=rate_hz)


def test_loop_without_ticks_reports_nan() -> None:
    loop = ControlLoop(lambda o: np.zeros(7), lambda: {}, lambda a: None, rate_hz=50.0)

    stats = loop.run(max_ticks=0)

    assert stats.ticks == 0
    assert math.isnan(stats.latency_p50_ms)


def test_loop_drives_bundle_policy(exported_bundle: Path) -> None:
    policy = BundlePolicy.from_path(exported_bundle)
    observations = synthesize_observations(policy.spec, 6, seed=5)
    sent = []
    loop = ControlLoop(policy, iter(observations).__next__, sent.append, rate_hz=50.0)

    stats = loop.run(max_ticks=6)

    assert stats.ticks == 6
    assert [a.shape for a in sent] == [(7,)] * 6
