"""Edge log import: what EdgeLogWriter logged on the robot comes back as a robota dataset."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from dataset_helpers import smooth_image

from robota.datasets import open_dataset
from robota.datasets.edge_log import import_edge_log
from robota.edge.executor import SensorFrame
from robota.edge.recorder import EdgeLogWriter
from robota.edge.safety import SafeCommand
from robota.edge.synthetic import synthesize_observations
from robota.errors import DatasetError
from robota.import_cli import register
from robota.spec import ACTION, OBS_IMAGES, OBS_PART_POSE, OBS_STATE, OBS_VELOCITY, OBS_WRENCH, TASK, UR5E, make_arm_spec

SPEC = make_arm_spec(UR5E, 10, {"wrist": (32, 32)})
WRIST = OBS_IMAGES + "wrist"
VECTOR_KEYS = (OBS_STATE, OBS_VELOCITY, OBS_WRENCH, OBS_PART_POSE)


def log_episode(writer: EdgeLogWriter, ticks: int, seed: int) -> tuple[list[dict], np.ndarray]:
    """Log `ticks` ticks, the first without an observation; return the logged ones and commands."""
    observations = synthesize_observations(SPEC, ticks, seed=seed)
    commands = np.stack([np.arange(7) / 10 + seed + tick for tick in range(ticks)])  # (ticks, 7)
    for tick, observation in enumerate(observations):
        # H.264 distorts random noise beyond comparison, so the logged image is a smooth gradient.
        observation[WRIST] = smooth_image(32, 32, tick + 7 * seed)
        frame = SensorFrame(observation if tick else None, {"joint_states": time.monotonic()})
        held = tick == 2
        safe = SafeCommand(commands[tick], held=held, reasons=("velocity_limit",) if held else ())
        writer(frame, commands[tick] + 0.5, safe)
    return observations[1:], commands[1:]


@pytest.fixture
def edge_log(tmp_path: Path) -> tuple[Path, list]:
    """An edge log of two episodes with 6 and 4 ticks; returns the folder and what was logged."""
    logged = []
    with EdgeLogWriter(tmp_path / "log", SPEC, bundle="runs/act-bundle") as writer:
        logged.append(log_episode(writer, 6, seed=1))
        writer.start_episode()
        logged.append(log_episode(writer, 4, seed=2))
    return tmp_path / "log", logged


def test_edge_log_import_values(edge_log, tmp_path: Path, caplog) -> None:
    log_dir, logged = edge_log

    with caplog.at_level(logging.WARNING, logger="robota.datasets.edge_log"):
        output = import_edge_log(log_dir, tmp_path / "dataset")
    dataset = open_dataset(output)

    assert dataset.spec.fingerprint() == SPEC.fingerprint()
    assert dataset.episode_lengths == [5, 3]
    for index, (observations, commands) in enumerate(logged):
        episode = dataset.episode(index)
        np.testing.assert_array_equal(episode[ACTION], commands.astype(np.float32))
        for key in VECTOR_KEYS:
            np.testing.assert_array_equal(episode[key], np.stack([o[key] for o in observations]))
        assert episode[TASK] == [o[TASK] for o in observations]
        error = np.abs(episode[WRIST].astype(np.int16) - np.stack([o[WRIST] for o in observations])).mean()
        assert error < 3.0, f"episode {index}: mean abs image error {error:.2f}"

    metadata = dataset.episode_metadata(0)
    assert metadata["bundle"] == "runs/act-bundle"
    assert metadata["held_frames"] == 1
    assert metadata["source_log_episode"].endswith("episode_000000")
    # The ticks were logged back to back, not at 10 Hz.
    assert any("spec's fps 10" in r.getMessage() for r in caplog.records)


def test_edge_log_import_cli(edge_log, tmp_path: Path, capsys) -> None:
    log_dir, _ = edge_log
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["import", "edge-log", str(log_dir), str(tmp_path / "dataset")])
    status = args.handler(args)

    assert status == 0
    assert "wrote 2 episodes, 8 frames at 10 Hz" in capsys.readouterr().out


def test_edge_log_import_rejects_mixed_specs(edge_log, tmp_path: Path) -> None:
    log_dir, _ = edge_log
    meta_path = log_dir / "episode_000001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["spec"]["fps"] = 20
    meta_path.write_text(json.dumps(meta))

    with pytest.raises(DatasetError, match="episode_000001: logged with another spec"):
        import_edge_log(log_dir, tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


def test_edge_log_import_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no episode_\\* folders found"):
        import_edge_log(tmp_path, tmp_path / "dataset")


def test_edge_log_import_without_observations(tmp_path: Path) -> None:
    with EdgeLogWriter(tmp_path / "log", SPEC) as writer:
        writer(SensorFrame(None, {}), None, SafeCommand(np.zeros(7), held=True, reasons=("no_action",)))

    with pytest.raises(DatasetError, match="no episode has a complete observation"):
        import_edge_log(tmp_path / "log", tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()
