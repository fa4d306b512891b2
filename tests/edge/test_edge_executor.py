"""The asynchronous executor: temporal ensembling, non-blocking ticks and inference failures."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from robota.edge.executor import AsyncExecutor, SensorFrame, TemporalEnsembler
from robota.edge.safety import Reason, SafetyConfig, SafetyFilter
from robota.edge.synthetic import synthesize_observations
from robota.errors import RobotaError
from robota.spec import OBS_STATE, OBS_WRENCH, UR5E, make_arm_spec

SPEC = make_arm_spec(UR5E, 10, {})
CHUNK = 8
HOME_RAD = np.array([2.896648, -1.966792, 2.017901, -1.621908, -1.570789, -1.815746])


@dataclasses.dataclass
class FakeManifest:
    chunk_size: int = CHUNK

    def safety_config(self) -> SafetyConfig:
        return SafetyConfig.default_for(UR5E)


class FakeModel:
    """Returns chunks that hold the observed joints with a small offset, after `delay_s`."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.spec = SPEC
        self.manifest = FakeManifest()
        self.delay_s = delay_s
        self.fail = fail
        self.calls = 0
        self.release = threading.Event()

    def run(self, inputs):
        self.calls += 1
        if self.fail:
            raise ValueError("model exploded")
        if self.delay_s:
            self.release.wait(self.delay_s)
        state = inputs[OBS_STATE][0]
        action = np.append(state[:6] + 0.001, 1.0).astype(np.float32)
        return np.broadcast_to(action, (1, CHUNK, 7)).copy()


def observation() -> dict:
    obs = synthesize_observations(SPEC, 1)[0]
    obs[OBS_STATE] = np.append(HOME_RAD, 0.085).astype(np.float32)
    obs[OBS_WRENCH] = np.zeros(6, dtype=np.float32)
    return obs


def fresh_frame() -> SensorFrame:
    now = time.monotonic()
    return SensorFrame(observation(), {"joint_states": now, "wrench": now})


def test_ensembler_weights_oldest_most() -> None:
    ensembler = TemporalEnsembler(chunk_size=4, decay=0.5)
    ensembler.add(0, np.zeros((4, 2)))
    ensembler.add(1, np.ones((4, 2)))
    w_old, w_new = 1.0, np.exp(-0.5)
    expected = w_new / (w_old + w_new)
    np.testing.assert_allclose(ensembler.action_at(1), [expected, expected])
    np.testing.assert_allclose(ensembler.action_at(0), [0.0, 0.0])


def test_ensembler_drops_expired_chunks() -> None:
    ensembler = TemporalEnsembler(chunk_size=3, decay=0.01)
    ensembler.add(0, np.zeros((3, 1)))
    assert ensembler.action_at(3) is None
    ensembler.add(2, np.full((3, 1), 5.0))
    np.testing.assert_allclose(ensembler.action_at(4), [5.0])


def test_ensembler_latest_only() -> None:
    ensembler = TemporalEnsembler(chunk_size=4, decay=None)
    ensembler.add(0, np.zeros((4, 1)))
    ensembler.add(1, np.full((4, 1), 2.0))
    np.testing.assert_allclose(ensembler.action_at(2), [2.0])


def test_ensembler_skips_passed_ticks() -> None:
    # A chunk from tick 0's observation that arrives at tick 5 contributes its 6th action.
    ensembler = TemporalEnsembler(chunk_size=8, decay=None)
    chunk = np.arange(8, dtype=np.float64)[:, None]
    ensembler.add(0, chunk)
    np.testing.assert_allclose(ensembler.action_at(5), [5.0])


def test_executor_follows_chunks() -> None:
    sent = []
    model = FakeModel()
    executor = AsyncExecutor(model, fresh_frame, sent.append, rate_hz=50.0)
    stats = executor.run(max_ticks=40)
    assert stats.loop.ticks == 40
    assert stats.commands_sent == 40
    assert stats.predictions >= 1
    # The last commands reached the chunk's target: home + 1 mrad, gripper closed.
    np.testing.assert_allclose(sent[-1][:6], HOME_RAD + 0.001, atol=1e-6)
    assert sent[-1][6] == pytest.approx(1.0)


def test_executor_never_waits_for_inference() -> None:
    sent = []
    model = FakeModel(delay_s=30.0)  # a tick that waited for inference would hang here

    def send(command: np.ndarray) -> None:
        sent.append(command)
        if len(sent) == 15:
            model.release.set()  # lets the worker end, after the last tick's poll

    executor = AsyncExecutor(model, fresh_frame, send, rate_hz=50.0)
    stats = executor.run(max_ticks=15)
    assert stats.loop.ticks == 15
    assert stats.commands_sent == 15
    assert stats.no_action_ticks == 15
    assert stats.holds == 15
    assert stats.interventions[Reason.NO_ACTION] == 15
    for command in sent:
        np.testing.assert_allclose(command[:6], HOME_RAD)


def test_executor_waits_for_first_observation() -> None:
    sent = []
    executor = AsyncExecutor(FakeModel(), lambda: SensorFrame(None, {}), sent.append, rate_hz=100.0)
    stats = executor.run(max_ticks=5)
    assert sent == []
    assert stats.waiting_ticks == 5


def test_executor_holds_then_raises_on_inference_error() -> None:
    sent = []
    executor = AsyncExecutor(FakeModel(fail=True), fresh_frame, sent.append, rate_hz=50.0)
    with pytest.raises(RobotaError, match="inference failed"):
        executor.run(max_ticks=50)
    assert sent, "the executor sends a hold before it stops"
    np.testing.assert_allclose(sent[-1][:6], HOME_RAD)


def test_executor_watchdog_holds_on_stale_frame() -> None:
    sent = []
    stale = SensorFrame(observation(), {"joint_states": time.monotonic() - 10.0})
    safety = SafetyFilter(UR5E, SafetyConfig.default_for(UR5E), 50.0)
    executor = AsyncExecutor(FakeModel(), lambda: stale, sent.append, rate_hz=50.0, safety=safety)
    stats = executor.run(max_ticks=10)
    assert stats.holds == 10
    assert stats.interventions[Reason.WATCHDOG] == 10


def test_executor_calls_recorder_each_tick() -> None:
    records = []
    executor = AsyncExecutor(
        FakeModel(),
        fresh_frame,
        lambda command: None,
        rate_hz=50.0,
        recorder=lambda frame, proposed, safe: records.append(safe),
    )
    executor.run(max_ticks=6)
    assert len(records) == 6


def test_executor_wrench_stop_holds_measured_joints() -> None:
    # The arm lags 3 mrad behind, pushing against something, from tick 5 on.
    ticks = []
    lagging = np.append(HOME_RAD - 0.003, 0.085).astype(np.float32)

    def read_frame() -> SensorFrame:
        frame = fresh_frame()
        if len(ticks) >= 5:
            frame.observation[OBS_STATE] = lagging
            frame.observation[OBS_WRENCH] = np.array([0, 0, -150.0, 0, 0, 0], dtype=np.float32)
        ticks.append(len(ticks))
        return frame

    sent = []
    executor = AsyncExecutor(FakeModel(), read_frame, sent.append, rate_hz=50.0)
    stats = executor.run(max_ticks=12)

    assert stats.interventions[Reason.WRENCH_LIMIT] == 1
    assert stats.interventions[Reason.PROTECTIVE_STOP] == 4
    # Ticks 5 and 6 are below the 3-reading debounce; tick 7 stops where the arm is.
    assert not np.allclose(sent[6][:6], lagging[:6], atol=1e-6)
    for command in sent[7:]:
        np.testing.assert_allclose(command[:6], lagging[:6], atol=1e-6)
