"""A recorder killed with SIGKILL mid-episode: the next open keeps every saved episode."""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dataset_helpers import make_frame

from robota.datasets import DatasetWriter, open_dataset
from robota.errors import DatasetError

pytestmark = pytest.mark.multiprocess

HELPERS = Path(__file__).resolve().parent
# Saves episodes of 4, 5 and 6 frames, then adds frames to a fourth episode until killed.
RECORDER = f"""
import sys, time
sys.path.insert(0, {str(HELPERS)!r})
from dataset_helpers import FPS, make_frame
from robota.datasets import DatasetWriter
from robota.spec import UR5E, make_arm_spec

spec = make_arm_spec(UR5E, FPS, {{"wrist": (32, 32)}})
writer = DatasetWriter(sys.argv[1], spec, robot_type="ur5e")
for episode in range(3):
    for step in range(4 + episode):
        writer.add_frame(make_frame(spec, episode, step))
    writer.save_episode({{"seed": episode}})
step = 0
while True:
    writer.add_frame(make_frame(spec, 3, step))
    step += 1
    print("frame", step, flush=True)
    time.sleep(0.01)
"""


def kill_recorder_mid_episode(root: Path, frames: int = 5, timeout_s: float = 60.0) -> None:
    """Start the recorder, wait until it added `frames` unsaved frames, then SIGKILL it by PID."""
    process = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([process.stdout], [], [], remaining)[0]:
                raise TimeoutError(f"recorder printed no frame {frames} within {timeout_s} s")
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"recorder exited with status {process.wait()}")
            if line.split() == ["frame", str(frames)]:
                break
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        process.stdout.close()


def dropped_frames(log: str) -> int:
    match = re.search(r"dropped (\d+) unsaved frames", log)
    assert match, log
    return int(match.group(1))


def test_next_open_finalises_saved_episodes(tmp_path: Path, caplog) -> None:
    root = tmp_path / "d"
    kill_recorder_mid_episode(root)
    assert not (root / "meta/info.json").exists()
    for path in root.rglob("*.parquet"):
        pq.read_metadata(path)  # every parquet file has its footer

    with caplog.at_level(logging.WARNING, logger="robota.datasets"):
        reader = open_dataset(root)
    assert dropped_frames(caplog.text) >= 5
    assert "3 saved episodes kept" in caplog.text
    assert reader.episode_lengths == [4, 5, 6]
    assert [reader.episode_metadata(i)["seed"] for i in range(3)] == [0, 1, 2]
    assert reader.episode(2)["observation.images.wrist"].shape == (6, 32, 32, 3)
    assert not (root / ".recording").exists()
    assert not list(root.rglob("*.tmp"))


def test_next_writer_finalises_and_rejects(tmp_path: Path, caplog, small_spec) -> None:
    root = tmp_path / "d"
    kill_recorder_mid_episode(root)
    with caplog.at_level(logging.WARNING, logger="robota.datasets"):
        with pytest.raises(DatasetError, match=r"its 3 saved episodes are now finalised"):
            DatasetWriter(root, small_spec, robot_type="ur5e")
    assert dropped_frames(caplog.text) >= 5
    assert open_dataset(root).episode_lengths == [4, 5, 6]


def test_resume_continues_after_kill(tmp_path: Path, caplog, small_spec) -> None:
    root = tmp_path / "d"
    kill_recorder_mid_episode(root)
    with caplog.at_level(logging.WARNING, logger="robota.datasets"):
        writer = DatasetWriter(root, small_spec, robot_type="ur5e", resume=True)
    assert dropped_frames(caplog.text) >= 5
    with writer:
        writer.add_frame(make_frame(small_spec, 3, 0))
        writer.save_episode({"seed": 3})
    assert open_dataset(root).episode_lengths == [4, 5, 6, 1]


def test_open_during_live_recording_rejected(tmp_path: Path, small_spec) -> None:
    root = tmp_path / "d"
    writer = DatasetWriter(root, small_spec, robot_type="ur5e")
    writer.add_frame(make_frame(small_spec, 0, 0))
    writer.save_episode()
    with pytest.raises(DatasetError, match=r"another process is recording into"):
        open_dataset(root)
    writer.close()
    assert open_dataset(root).episode_lengths == [1]


def test_nothing_saved_before_kill(tmp_path: Path, small_spec) -> None:
    root = tmp_path / "d"
    writer = DatasetWriter(root, small_spec, robot_type="ur5e")
    writer.add_frame(make_frame(small_spec, 0, 0))
    writer._lock.close()  # the kernel closes the files of a killed process
    writer._frame_counter.close()
    with pytest.raises(DatasetError, match=r"stopped before any episode was saved.*1 unsaved frames"):
        open_dataset(root)
    assert not (root / ".recording").exists()


def test_kill_during_close_recovered(tmp_path: Path, small_spec) -> None:
    """A kill while close() writes the final files leaves temporary files and no info.json."""
    root = tmp_path / "d"
    writer = DatasetWriter(root, small_spec, robot_type="ur5e")
    for step in range(3):
        writer.add_frame(make_frame(small_spec, 0, step))
    writer.save_episode()
    partial = root / "data/chunk-000/.file-000.parquet.4242.tmp"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"PAR1 half a file")
    (root / "meta").mkdir()
    (root / "meta/tasks.parquet").write_bytes(b"PAR1")
    writer._lock.close()  # the kernel closes the files of a killed process

    reader = open_dataset(root)
    assert reader.episode_lengths == [3]
    assert not partial.exists()
    assert not list(root.rglob("*.tmp"))
    assert reader.tasks == ["pick the part"]


def test_kill_between_save_and_rename(tmp_path: Path, small_spec, monkeypatch) -> None:
    """An episode whose episode.json was written is kept even if its folder was not moved yet."""
    root = tmp_path / "d"
    writer = DatasetWriter(root, small_spec, robot_type="ur5e")
    writer.add_frame(make_frame(small_spec, 0, 0))
    writer.save_episode()
    for step in range(2):
        writer.add_frame(make_frame(small_spec, 1, step))

    def killed(self, target):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(Path, "rename", killed)
    with pytest.raises(KeyboardInterrupt):
        writer.save_episode()
    monkeypatch.undo()
    writer._lock.close()  # the kernel closes the files of a killed process

    assert open_dataset(root).episode_lengths == [1, 2]
