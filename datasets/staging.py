"""The staging folder of a recording in progress, and recovery of an interrupted recording.

While `DatasetWriter` records into `<root>`, it keeps everything under `<root>/.recording/`:

    writer.json                       the spec and writer settings, written first
    writer.lock                       held with flock(2) by the recording process
    episodes/episode_XXXXXX/          one folder per saved episode, moved into place in one rename
    current/                          the episode being recorded; `frames.count` grows one
                                      byte per added frame, so a crash keeps the frame count

A recorder that dies (even by SIGKILL) leaves its saved episodes whole. `recover_recording`
finalises them into a dataset and drops the partial episode; `open_dataset` and `DatasetWriter`
call it on such a folder. The kernel releases the flock when the recording process dies, so a
live recording is never finalised under its writer.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows has no flock(2)
    fcntl = None

from robota.datasets import finalise
from robota.errors import DatasetError
from robota.spec import Spec

logger = logging.getLogger(__name__)

STAGING_DIR = ".recording"
SETTINGS_FILE = "writer.json"
LOCK_FILE = "writer.lock"
CURRENT_DIR = "current"
FRAME_COUNT_FILE = "frames.count"
EPISODE_RECORD_FILE = "episode.json"

# Folders of the final layout; a crash during finalising can leave them half written.
FINAL_FOLDERS = ("meta", "data", "videos")


def lock_staging(staging: Path) -> IO[bytes]:
    """Take the recording lock of a staging folder and return the open lock file.

    Raises:
        DatasetError: Another live process records into the folder, or the folder is not
            writable.
    """
    try:
        handle = open(staging / LOCK_FILE, "ab")
    except PermissionError:
        raise DatasetError(
            f"{staging.parent} contains an interrupted recording, and finalising it needs write "
            "access to the folder; make it writable (or copy it somewhere writable) and open it again"
        ) from None
    if fcntl is None:
        # NOTE: without flock (on Windows) a live recording is not protected from being
        # finalised by another process that opens the same folder.
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DatasetError(
            f"another process is recording into {staging.parent} (it holds {staging / LOCK_FILE}); "
            "wait for it to close its DatasetWriter, or stop that process first"
        ) from None
    return handle


def load_staged_episodes(staging: Path) -> list[dict[str, Any]]:
    """Read the records of the saved episodes, in episode order."""
    records = []
    for folder in sorted(staging.joinpath("episodes").glob("episode_*")):
        record_path = folder / EPISODE_RECORD_FILE
        if record_path.exists():
            records.append(json.loads(record_path.read_text()))
    return records


def drop_partial_episode(staging: Path) -> int:
    """Delete the episode that was being recorded when the recording stopped.

    An episode whose `episode.json` was written but not yet moved into place was completely
    saved, so it is moved into place instead.

    Returns:
        The number of frames dropped. A warning is logged when there were any.
    """
    current = staging / CURRENT_DIR
    if not current.exists():
        return 0
    record_path = current / EPISODE_RECORD_FILE
    if record_path.exists():
        index = json.loads(record_path.read_text())["episode_index"]
        current.rename(staging / "episodes" / f"episode_{index:06d}")
        logger.info("kept episode %d, whose save finished just before the recording stopped", index)
        return 0
    counter = current / FRAME_COUNT_FILE
    frames = counter.stat().st_size if counter.exists() else 0
    shutil.rmtree(current)
    if frames:
        logger.warning(
            "dropped %d unsaved frames of the episode that was being recorded when the recording "
            "into %s stopped", frames, staging.parent,
        )
    return frames


def recover_recording(root: Path) -> int:
    """Finalise an interrupted recording: keep its saved episodes and drop the partial one.

    Returns:
        The number of episodes in the finalised dataset.

    Raises:
        DatasetError: Another process still records into `root`, or no episode was saved
            (the staging folder is then removed).
    """
    staging = root / STAGING_DIR
    lock = lock_staging(staging)
    try:
        saved = json.loads((staging / SETTINGS_FILE).read_text())
        spec = Spec.from_dict(saved["spec"])
        settings = {k: v for k, v in saved.items() if k != "spec"}
        dropped = drop_partial_episode(staging)
        for partial in FINAL_FOLDERS:
            shutil.rmtree(root / partial, ignore_errors=True)
        episodes = load_staged_episodes(staging)
        if not episodes:
            shutil.rmtree(staging)
            raise DatasetError(
                f"the recording into {root} stopped before any episode was saved, so there is no "
                f"dataset to recover ({dropped} unsaved frames were dropped); record again"
            )
        finalise.build_dataset(root, spec, settings, episodes, staging)
    except BaseException:
        lock.close()
        raise
    shutil.rmtree(staging)
    lock.close()
    logger.warning(
        "finalised the interrupted recording in %s: %d saved episodes kept, %d unsaved frames "
        "dropped", root, len(episodes), dropped,
    )
    return len(episodes)
