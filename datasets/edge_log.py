"""Import the edge log that `robota-edge run --record` wrote into a robota dataset.

The edge computer logs every executed tick in episode folders (see `robota.edge.recorder`).
This module converts them into a LeRobot v3.0 dataset, so a policy can be trained on what ran
on the robot.
The log is read with `robota.edge.recorder`, whose imports are numpy, `robota.spec`,
`robota.errors` and other `robota.edge` modules that are numpy-only, so this module pulls in no
torch and no ONNX Runtime.

Feature mapping, one dataset episode per log episode:

| edge log | dataset feature |
|---|---|
| `meta.json` `spec` | the dataset's spec, unchanged, so a policy trained on it fits the bundle |
| `observation` vector features and `task` | the same keys |
| `<camera>.rgb` | `observation.images.<camera>` (encoded as video) |
| `command`, the action sent after the safety filter | `action` |
| ticks before the first complete observation | dropped |

`proposed` (the policy's action before the filter) and `held` are not dataset features, because
they would change the spec. Each episode's metadata stores the source folder, the bundle, the
start time and how many of its frames the safety filter held.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from robota.datasets.writer import DatasetWriter
from robota.edge.recorder import read_edge_episode, read_edge_meta
from robota.errors import DatasetError
from robota.spec import ACTION, OBS_IMAGES, TASK, Spec

logger = logging.getLogger(__name__)

# Max relative difference between a log's median tick interval and 1/fps before the import
# warns. A larger one means the log ran at another rate (`robota-edge run --rate`), but the
# dataset's timestamps always assume the spec's fps.
RATE_TOLERANCE = 0.2


def import_edge_log(log_dir: str | Path, output: str | Path) -> Path:
    """Convert the episodes of an edge log folder into a new robota dataset.

    Episodes are read one at a time, so the log may be larger than memory. Every episode's
    spec is checked before anything is written. An episode that fails to read stops the
    import, and the dataset then keeps the episodes imported before it.

    Args:
        log_dir: Folder that `robota-edge run --record` wrote, with `episode_NNNNNN` folders.
        output: New dataset folder to write.

    Returns:
        The output folder.

    Raises:
        DatasetError: The folder has no episodes, episodes were logged with different specs,
            the spec has a feature the log does not store, no episode has a complete
            observation, or the output folder exists.
        RobotaError: An episode folder is not a readable edge log.
    """
    log_dir, output = Path(log_dir), Path(output)
    episode_dirs = sorted(p for p in log_dir.glob("episode_*") if p.is_dir())
    if not episode_dirs:
        raise DatasetError(
            f"{log_dir}: no episode_* folders found; pass the folder given to "
            "`robota-edge run --record`"
        )
    spec = _common_spec(episode_dirs)

    imported = 0
    with DatasetWriter(output, spec, robot_type=spec.robot.name) as writer:
        for folder in episode_dirs:
            episode = read_edge_episode(folder)
            if not len(episode[ACTION]):
                logger.warning("%s: skipping an episode without a complete observation", folder)
                continue
            _check_timing(folder, episode, spec.fps)
            for index in range(len(episode[ACTION])):
                writer.add_frame(_frame(spec, episode, index))
            writer.save_episode(_episode_metadata(folder, episode))
            imported += 1
        if not imported:
            # Raised inside the block, so the writer removes the empty output folder.
            raise DatasetError(
                f"{log_dir}: no episode has a complete observation, so there is nothing to import"
            )
    logger.info("imported %d edge log episodes of %s into %s", imported, log_dir, output)
    return output


def _common_spec(episode_dirs: list[Path]) -> Spec:
    """Return the spec all episodes share, after checking that the log stores its features."""
    specs = [Spec.from_dict(read_edge_meta(folder)["spec"]) for folder in episode_dirs]
    spec = specs[0]
    for folder, other in zip(episode_dirs, specs):
        if other.fingerprint() != spec.fingerprint():
            raise DatasetError(
                f"{folder}: logged with another spec than {episode_dirs[0]}; import the "
                "episodes of each bundle into their own dataset"
            )
    stored = {*spec.vector_keys, *spec.image_keys, TASK, ACTION}
    missing = [key for key in spec.features if key not in stored]
    if missing:
        raise DatasetError(
            f"{episode_dirs[0]}: the spec has features {missing} that the edge log does not "
            f"store (it stores float32 observations, images, {TASK!r} and {ACTION!r})"
        )
    return spec


def _frame(spec: Spec, episode: dict[str, Any], index: int) -> dict[str, Any]:
    frame: dict[str, Any] = {TASK: episode[TASK][index], ACTION: episode[ACTION][index]}
    for key in spec.vector_keys:
        frame[key] = episode[key][index]
    for camera in spec.camera_names:
        frame[OBS_IMAGES + camera] = episode[OBS_IMAGES + camera][index]
    return frame


def _check_timing(folder: Path, episode: dict[str, Any], fps: int) -> None:
    """Warn when ticks are missing or the log ran at another rate than the spec's fps."""
    gaps = int(np.count_nonzero(np.diff(episode["tick"]) != 1))
    if gaps:
        logger.warning(
            "%s: ticks are not consecutive at %d places; the dataset's frames follow each other "
            "at 1/%d s regardless", folder, gaps, fps,
        )
    intervals_s = np.diff(episode["timestamp_s"])
    if len(intervals_s) and abs(np.median(intervals_s) * fps - 1) > RATE_TOLERANCE:
        logger.warning(
            "%s: ticks are %.3f s apart (median), but the spec's fps %d means %.3f s; the "
            "dataset's timestamps assume %d Hz", folder, np.median(intervals_s), fps, 1 / fps, fps,
        )


def _episode_metadata(folder: Path, episode: dict[str, Any]) -> dict[str, Any]:
    meta = episode["meta"]
    return {
        "source_log_episode": str(folder),
        "bundle": str(meta.get("bundle") or ""),
        "started_utc": str(meta.get("started_utc") or ""),
        "held_frames": int(np.count_nonzero(episode["held"])),
    }
