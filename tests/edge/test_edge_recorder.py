"""The edge log: what the executor ran is written per tick and read back as arrays."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from robota.edge.executor import SensorFrame
from robota.edge.recorder import EdgeLogWriter, iter_edge_episodes, read_edge_episode
from robota.edge.safety import SafeCommand
from robota.edge.synthetic import synthesize_observations
from robota.errors import RobotaError
from robota.spec import ACTION, OBS_IMAGES, OBS_STATE, TASK, UR5E, make_arm_spec

SPEC = make_arm_spec(UR5E, 10, {"wrist": (8, 8)})


def write_ticks(writer: EdgeLogWriter, count: int) -> list[dict]:
    observations = synthesize_observations(SPEC, count, seed=3)
    for index, observation in enumerate(observations):
        frame = SensorFrame(observation if index else None, {"joint_states": time.monotonic()})
        command = np.full(7, float(index))
        proposed = None if index == 1 else command + 0.5
        writer(frame, proposed, SafeCommand(command, held=index == 1, reasons=("no_action",) if index == 1 else ()))
    return observations


def test_edge_log_round_trip(tmp_path: Path) -> None:
    with EdgeLogWriter(tmp_path / "log", SPEC, bundle="bundle") as writer:
        observations = write_ticks(writer, 5)

    episode = read_edge_episode(tmp_path / "log" / "episode_000000")
    # Tick 0 had no observation, so 4 frames remain.
    assert episode[ACTION].shape == (4, 7)
    np.testing.assert_allclose(episode[ACTION][:, 0], [1, 2, 3, 4])
    assert np.isnan(episode["proposed"][0]).all()
    assert episode["held"].tolist() == [True, False, False, False]
    np.testing.assert_allclose(episode[OBS_STATE], np.stack([o[OBS_STATE] for o in observations[1:]]), atol=1e-6)
    np.testing.assert_array_equal(episode[OBS_IMAGES + "wrist"], np.stack([o[OBS_IMAGES + "wrist"] for o in observations[1:]]))
    assert episode[TASK] == [o[TASK] for o in observations[1:]]
    assert episode["meta"]["bundle"] == "bundle"


def test_edge_log_numbers_episodes(tmp_path: Path) -> None:
    writer = EdgeLogWriter(tmp_path, SPEC)
    write_ticks(writer, 3)
    second = writer.start_episode()
    write_ticks(writer, 2)
    writer.close()
    assert second.name == "episode_000001"
    assert [len(e[ACTION]) for e in iter_edge_episodes(tmp_path)] == [2, 1]


def test_edge_log_tolerates_cut_last_line(tmp_path: Path) -> None:
    with EdgeLogWriter(tmp_path, SPEC) as writer:
        write_ticks(writer, 4)
    frames = tmp_path / "episode_000000" / "frames.jsonl"
    frames.write_text(frames.read_text()[:-20])
    assert len(read_edge_episode(tmp_path / "episode_000000")[ACTION]) == 2


def test_edge_log_rejects_other_folder(tmp_path: Path) -> None:
    with pytest.raises(RobotaError, match="not a readable edge log"):
        read_edge_episode(tmp_path)


def test_edge_log_episode_without_observation(tmp_path: Path) -> None:
    with EdgeLogWriter(tmp_path, SPEC) as writer:
        write_ticks(writer, 1)  # tick 0 has no observation

    episode = read_edge_episode(tmp_path / "episode_000000")
    assert episode[ACTION].shape == (0, 7)
    assert episode[OBS_STATE].shape == (0, 7)
    assert episode[OBS_IMAGES + "wrist"].shape == (0, 8, 8, 3)
    assert episode[TASK] == []
