"""A fixed-rate executor fed by asynchronous inference through an action-chunk buffer.

The control thread never waits for the model. Each tick it hands the latest observation to an
inference worker thread (which runs ONNX Runtime whenever it is free, always on the newest
observation), collects the chunks that finished, blends the actions that all live chunks hold
for this tick, passes the result through the `SafetyFilter` and sends it. When no chunk covers
the tick, the filter holds the last safe command, and the hold is counted.

Timing: a chunk predicted from the observation of tick `t` holds the actions for ticks
`t, t + 1, ..., t + chunk_size - 1`. It arrives some ticks later, and the actions for ticks that
already passed are never executed. So the blend is latency-aware by construction: slow inference
skips stale actions instead of replaying them late.

Blending is the temporal ensembling of ACT (Zhao et al., 2023, "Learning Fine-Grained Bimanual
Manipulation with Low-Cost Hardware"): the actions of all chunks that cover the tick are averaged with weights `exp(-decay * i)`, where `i = 0` is the oldest chunk. With
`decay=None` the newest chunk alone is executed.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from robota.edge.runtime import ControlLoop, LoopStats
from robota.edge.safety import SafeCommand, SafetyFilter
from robota.errors import RobotaError
from robota.spec import OBS_STATE, OBS_WRENCH, Spec, build_policy_inputs

logger = logging.getLogger(__name__)

# ACT's ensembling coefficient m (Zhao et al. 2023): older chunks weigh slightly more.
DEFAULT_ENSEMBLE_DECAY = 0.01
# Inference durations kept for the statistics.
INFERENCE_WINDOW = 10_000
# Seconds `stop()` waits for the worker thread to end its current prediction.
WORKER_JOIN_TIMEOUT_S = 5.0


class ChunkModel(Protocol):
    """The model interface of the executor, which `Bundle` implements."""

    spec: Spec

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class SensorFrame:
    """The latest sensor data when a tick starts.

    Attributes:
        observation: Raw observation keyed by feature key, or `None` while a feature has not
            arrived yet.
        stamps_s: `time.monotonic()` of the last message per source (`joint_states`,
            `camera/<name>`, `wrench`, ...), `None` for a source that never sent one. The
            watchdog watches every source listed.
    """

    observation: Mapping[str, Any] | None
    stamps_s: Mapping[str, float | None] = dataclasses.field(default_factory=dict)


class TemporalEnsembler:
    """Chunks keyed by the tick they start at, blended per tick.

    Args:
        chunk_size: Actions per chunk.
        decay: Weight decay `m` of `exp(-m * i)` over chunks, oldest first; `None` executes
            the newest chunk alone.
    """

    def __init__(self, chunk_size: int, decay: float | None = DEFAULT_ENSEMBLE_DECAY):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if decay is not None and not (math.isfinite(decay) and decay >= 0):
            raise ValueError(f"decay must be a finite number >= 0 or None, got {decay}")
        self.chunk_size = chunk_size
        self.decay = decay
        self._chunks: collections.deque[tuple[int, np.ndarray]] = collections.deque()

    def clear(self) -> None:
        self._chunks.clear()

    def add(self, start_tick: int, chunk: np.ndarray) -> None:
        """Add a chunk `(chunk_size, action_dim)` whose first action is for `start_tick`."""
        if chunk.shape[0] != self.chunk_size:
            raise ValueError(f"chunk has {chunk.shape[0]} actions, expected {self.chunk_size}")
        self._chunks.append((int(start_tick), np.asarray(chunk, dtype=np.float64)))

    def action_at(self, tick: int) -> np.ndarray | None:
        """Blend the actions that live chunks hold for `tick`; `None` when none covers it."""
        while self._chunks and self._chunks[0][0] + self.chunk_size <= tick:
            self._chunks.popleft()
        # Oldest first, since chunks arrive in the order of their observations.
        covering = [chunk[tick - start] for start, chunk in self._chunks if start <= tick]
        if not covering:
            return None
        if self.decay is None:
            return covering[-1].copy()
        weights = np.exp(-self.decay * np.arange(len(covering)))  # (chunks,)
        stacked = np.stack(covering)  # (chunks, action_dim)
        return weights @ stacked / weights.sum()


class InferenceWorker:
    """A thread that predicts chunks from the newest observation it was given.

    `submit` never waits for a prediction: an observation that waits while the model runs is
    replaced by a newer one. An exception in the model ends the thread and is re-raised by `poll`.

    Args:
        model: A `Bundle` or any object with `.spec` and `.run(inputs)`.
    """

    def __init__(self, model: ChunkModel):
        self.model = model
        self._condition = threading.Condition()
        self._pending: tuple[int, Mapping[str, Any]] | None = None
        self._results: list[tuple[int, np.ndarray]] = []
        self._error: BaseException | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self.predictions = 0
        self.replaced = 0
        self.durations_s: collections.deque[float] = collections.deque(maxlen=INFERENCE_WINDOW)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._work, name="robota-inference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and wait for its current prediction, up to a deadline."""
        with self._condition:
            self._running = False
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(WORKER_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                logger.warning(
                    "inference worker still running after %.0f s; leaving it as a daemon thread",
                    WORKER_JOIN_TIMEOUT_S,
                )
        self._thread = None

    def submit(self, tick: int, observation: Mapping[str, Any]) -> None:
        with self._condition:
            if self._pending is not None:
                self.replaced += 1
            self._pending = (tick, observation)
            self._condition.notify()

    def poll(self) -> list[tuple[int, np.ndarray]]:
        """Return the chunks finished since the last call as `(start_tick, chunk)`, oldest first.

        Raises:
            RobotaError: The model raised; the original exception is the cause.
        """
        with self._condition:
            results, self._results = self._results, []
            error = self._error
        if error is not None:
            raise RobotaError(f"inference failed: {error!r}; the executor stopped") from error
        return results

    def _work(self) -> None:
        while True:
            with self._condition:
                while self._running and self._pending is None:
                    self._condition.wait(timeout=1.0)
                if not self._running:
                    return
                tick, observation = self._pending
                self._pending = None

            started = time.perf_counter()
            try:
                inputs = build_policy_inputs(self.model.spec, [observation])
                chunk = self.model.run(inputs)[0]  # (chunk, action_dim)
            except Exception as error:  # re-raised on the control thread by poll()
                logger.exception("inference failed on the observation of tick %d", tick)
                with self._condition:
                    self._error = error
                return
            self.durations_s.append(time.perf_counter() - started)
            with self._condition:
                self._results.append((tick, chunk))
                self.predictions += 1


@dataclasses.dataclass(frozen=True)
class ExecutorStats:
    """Counts and timing of an `AsyncExecutor.run`.

    Attributes:
        loop: Tick timing of the control loop.
        commands_sent: Commands handed to `send_command`.
        holds: Ticks whose command was the previous one re-sent.
        no_action_ticks: Ticks without a chunk covering them (a subset of `holds`).
        waiting_ticks: Ticks before the first complete observation, when nothing was sent.
        predictions: Chunks the worker finished.
        replaced_observations: Observations replaced by a newer one before inference took them.
        interventions: Safety interventions by reason.
        inference_p50_ms: Median duration of one prediction (inputs built and model run).
        inference_p99_ms: 99th percentile of that duration.
        tick_overhead_p50_ms: Median time the control thread spent per tick in the executor,
            that is blending, the safety filter and the recorder; inference is not included.
        tick_overhead_p99_ms: 99th percentile of that time.
    """

    loop: LoopStats
    commands_sent: int
    holds: int
    no_action_ticks: int
    waiting_ticks: int
    predictions: int
    replaced_observations: int
    interventions: dict[str, int]
    inference_p50_ms: float
    inference_p99_ms: float
    tick_overhead_p50_ms: float
    tick_overhead_p99_ms: float


# Called once per sent command with the frame, the proposed action and the filter's output.
Recorder = Callable[[SensorFrame, "np.ndarray | None", SafeCommand], None]


class AsyncExecutor:
    """Run a model at a fixed rate with asynchronous inference, ensembling and the safety filter.

    Args:
        model: A `Bundle` (or any object with `.spec`, `.manifest.chunk_size` and `.run`).
        read_frame: Returns the latest `SensorFrame`; it must not block.
        send_command: Sends a command `(action_dim,)`: joint positions in rad, then the
            gripper command in [0, 1].
        safety: The filter every action passes; `None` builds one from the manifest's limits.
        rate_hz: Ticks per second; `None` uses the spec's fps.
        ensemble_decay: See `TemporalEnsembler`; `None` executes the newest chunk alone.
        inference_every: Ticks between observations handed to the worker.
        recorder: Optional hook called with every executed tick, for example an `EdgeLogWriter`.
    """

    def __init__(
        self,
        model,
        read_frame: Callable[[], SensorFrame],
        send_command: Callable[[np.ndarray], None],
        *,
        safety: SafetyFilter | None = None,
        rate_hz: float | None = None,
        ensemble_decay: float | None = DEFAULT_ENSEMBLE_DECAY,
        inference_every: int = 1,
        recorder: Recorder | None = None,
    ):
        if inference_every < 1:
            raise ValueError(f"inference_every must be >= 1, got {inference_every}")
        spec: Spec = model.spec
        rate_hz = float(spec.fps if rate_hz is None else rate_hz)
        self.spec = spec
        self.safety = safety or SafetyFilter(spec.robot, model.manifest.safety_config(), rate_hz)
        self.read_frame = read_frame
        self.send_command = send_command
        self.recorder = recorder
        self.inference_every = inference_every
        self.worker = InferenceWorker(model)
        self.ensembler = TemporalEnsembler(model.manifest.chunk_size, ensemble_decay)
        self.loop = ControlLoop(self._step, self.read_frame, self._send, rate_hz)
        self._reset_counts()

    def stop(self) -> None:
        """Ask a running executor to return after the current tick; safe from any thread."""
        self.loop.stop()

    def run(self, *, max_ticks: int | None = None, duration_s: float | None = None) -> ExecutorStats:
        """Run until `max_ticks`, `duration_s` or `stop()`; see `ControlLoop.run`.

        Raises:
            RobotaError: Inference failed; the last safe command was sent before it is raised.
        """
        self._reset_counts()
        self.ensembler.clear()
        self.worker.start()
        try:
            loop_stats = self.loop.run(max_ticks=max_ticks, duration_s=duration_s)
        finally:
            self.worker.stop()
        return self._stats(loop_stats)

    def _reset_counts(self) -> None:
        self.commands_sent = 0
        self.holds = 0
        self.no_action_ticks = 0
        self.waiting_ticks = 0
        self._overheads_s: collections.deque[float] = collections.deque(maxlen=INFERENCE_WINDOW)

    def _step(self, frame: SensorFrame) -> SafeCommand | None:
        """Run one tick: feed the worker, blend and filter; `None` before the first observation."""
        started = time.perf_counter()
        tick = self.loop.tick_index
        observation = frame.observation
        if self.safety.last_command is None:
            if observation is None:
                self.waiting_ticks += 1
                return None
            self._reset_safety(observation)

        if observation is not None and tick % self.inference_every == 0:
            self.worker.submit(tick, observation)
        try:
            for start_tick, chunk in self.worker.poll():
                self.ensembler.add(start_tick, chunk)
        except RobotaError:
            self.send_command(self.safety.filter(None).command)  # hold before stopping
            raise

        proposed = self.ensembler.action_at(tick)
        wrench = measured = None
        if observation is not None:
            wrench = observation.get(OBS_WRENCH)
            measured = np.asarray(observation[OBS_STATE][: self.spec.robot.num_joints])
        safe = self.safety.filter(
            proposed, wrench=wrench, stamps_s=frame.stamps_s, joint_positions_rad=measured
        )
        self.no_action_ticks += proposed is None
        self.holds += safe.held
        if self.recorder is not None:
            self.recorder(frame, proposed, safe)
        self._overheads_s.append(time.perf_counter() - started)
        return safe

    def _reset_safety(self, observation: Mapping[str, Any]) -> None:
        """Start the filter at the measured joints and the gripper's current state."""
        robot = self.spec.robot
        state = np.asarray(observation[OBS_STATE], dtype=np.float64)
        # The gripper command is 0 open and 1 closed, the state its opening in metres.
        gripper = 1.0 - state[robot.num_joints] / robot.gripper_max_opening_m
        self.safety.reset(state[: robot.num_joints], gripper_command=float(np.clip(gripper, 0, 1)))

    def _send(self, safe: SafeCommand | None) -> None:
        if safe is None:
            return
        self.send_command(safe.command)
        self.commands_sent += 1

    def _stats(self, loop_stats: LoopStats) -> ExecutorStats:
        def percentile_ms(samples, q: float) -> float:
            return float(np.percentile(samples, q) * 1e3) if samples else math.nan

        durations = list(self.worker.durations_s)
        return ExecutorStats(
            loop=loop_stats,
            commands_sent=self.commands_sent,
            holds=self.holds,
            no_action_ticks=self.no_action_ticks,
            waiting_ticks=self.waiting_ticks,
            predictions=self.worker.predictions,
            replaced_observations=self.worker.replaced,
            interventions=dict(self.safety.counts),
            inference_p50_ms=percentile_ms(durations, 50),
            inference_p99_ms=percentile_ms(durations, 99),
            tick_overhead_p50_ms=percentile_ms(self._overheads_s, 50),
            tick_overhead_p99_ms=percentile_ms(self._overheads_s, 99),
        )
