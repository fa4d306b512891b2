"""A fixed-rate control loop: read an observation, run the policy, send the action, each tick.

Ticks follow a fixed grid of `time.monotonic()` deadlines, `start + k / rate_hz`. A tick that
runs past the next deadline is counted as an overrun, and the loop then waits for the first
deadline still ahead. It never runs the missed ticks back to back, and the grid never drifts.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Latency and jitter samples kept for the statistics: the last 10 minutes at 50 Hz.
STATS_WINDOW_TICKS = 30_000


@dataclasses.dataclass(frozen=True)
class LoopStats:
    """Timing of a `ControlLoop.run` call.

    Latency is the time from the start of a tick to the return of `send_action`. Jitter is how
    late a tick started after its deadline. Percentiles cover the last `STATS_WINDOW_TICKS`
    ticks; they are NaN when no tick ran.

    Attributes:
        ticks: Ticks that ran.
        overruns: Ticks that ended after the next tick's deadline.
        missed_deadlines: Deadlines skipped because a tick overran them.
        duration_s: Wall time of the run.
        latency_p50_ms: Median tick latency.
        latency_p99_ms: 99th percentile of tick latency.
        jitter_p99_ms: 99th percentile of the start delay after the deadline.
    """

    ticks: int
    overruns: int
    missed_deadlines: int
    duration_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    jitter_p99_ms: float


class ControlLoop:
    """Run `send_action(policy(read_observation()))` at a fixed rate.

    Exceptions from the callables are logged and re-raised, and they end the run.

    Args:
        policy: Maps an observation to an action, for example a `BundlePolicy`.
        read_observation: Returns the latest observation; it must not block for long, since
            its time counts against the tick.
        send_action: Sends an action `(action_dim,)` to the robot.
        rate_hz: Ticks per second.

    Raises:
        ValueError: `rate_hz` is not positive and finite.
    """

    def __init__(
        self,
        policy: Callable[[Mapping[str, Any]], np.ndarray],
        read_observation: Callable[[], Mapping[str, Any]],
        send_action: Callable[[np.ndarray], None],
        rate_hz: float,
    ):
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be positive and finite, got {rate_hz}")
        self.policy = policy
        self.read_observation = read_observation
        self.send_action = send_action
        self.rate_hz = float(rate_hz)
        self.period_s = 1.0 / self.rate_hz
        # Grid index of the tick that runs now: deadlines skipped after an overrun count too,
        # so `index * period_s` is the tick's time since the start of the run.
        self.tick_index = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask a running loop to return after the current tick; safe from any thread."""
        self._stop.set()

    def run(self, *, max_ticks: int | None = None, duration_s: float | None = None) -> LoopStats:
        """Run ticks until `max_ticks` ran, `duration_s` passed or `stop()` was called.

        With neither limit the loop runs until `stop()`. Every wait inside lasts at most one
        period, so `stop()` takes effect within one period plus the current tick.

        Args:
            max_ticks: Ticks to run.
            duration_s: Seconds to run; no tick starts after this time.

        Returns:
            Tick counts and timing of this run.
        """
        if max_ticks is not None and max_ticks < 0:
            raise ValueError(f"max_ticks must be >= 0, got {max_ticks}")
        if duration_s is not None and not duration_s >= 0:
            raise ValueError(f"duration_s must be >= 0, got {duration_s}")
        self._stop.clear()
        logger.info("control loop starting at %.1f Hz", self.rate_hz)

        timing = _Timing(self.period_s)
        start = time.monotonic()
        end = math.inf if duration_s is None else start + duration_s
        while not self._stop.is_set() and (max_ticks is None or timing.ticks < max_ticks):
            deadline = start + timing.next_index * self.period_s
            if deadline >= end:
                break
            # Event.wait wakes early on stop(); its timeout is at most one period.
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                break
            tick_start = time.monotonic()
            self.tick_index = timing.next_index
            self._tick()
            timing.record(start, deadline, tick_start, time.monotonic())

        stats = timing.stats(time.monotonic() - start)
        logger.info(
            "control loop stopped after %d ticks, %d overruns, latency p99 %.2f ms",
            stats.ticks,
            stats.overruns,
            stats.latency_p99_ms,
        )
        return stats

    def _tick(self) -> None:
        try:
            observation = self.read_observation()
            action = self.policy(observation)
            self.send_action(action)
        except Exception:
            logger.exception("control loop tick failed; stopping")
            raise


class _Timing:
    """Tick counters, the next deadline's index and bounded latency and jitter samples."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self.ticks = 0
        self.overruns = 0
        self.missed_deadlines = 0
        self.next_index = 0
        self.latencies_s: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW_TICKS)
        self.jitters_s: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW_TICKS)

    def record(self, start: float, deadline: float, tick_start: float, tick_end: float) -> None:
        self.ticks += 1
        self.latencies_s.append(tick_end - tick_start)
        self.jitters_s.append(max(0.0, tick_start - deadline))

        # The next deadline is the first grid point after the tick's end; any skipped ones
        # are missed, and skipping them keeps the grid in phase.
        next_index = max(self.next_index + 1, math.floor((tick_end - start) / self.period_s) + 1)
        if next_index > self.next_index + 1:
            self.overruns += 1
            self.missed_deadlines += next_index - self.next_index - 1
        self.next_index = next_index

    def stats(self, duration_s: float) -> LoopStats:
        def percentile_ms(samples: collections.deque[float], q: float) -> float:
            return float(np.percentile(samples, q) * 1e3) if samples else math.nan

        return LoopStats(
            ticks=self.ticks,
            overruns=self.overruns,
            missed_deadlines=self.missed_deadlines,
            duration_s=duration_s,
            latency_p50_ms=percentile_ms(self.latencies_s, 50),
            latency_p99_ms=percentile_ms(self.latencies_s, 99),
            jitter_p99_ms=percentile_ms(self.jitters_s, 99),
        )
