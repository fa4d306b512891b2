"""An append-only log of everything the executor ran, for import as a robota dataset later.

The edge computer has no pyarrow or video encoder (`robota[edge]` is numpy, onnxruntime,
roslibpy and cryptography), so it writes a simple log that survives a crash mid-episode, and
the dataset layer converts it on a workstation. One folder per episode:

```
episode_000000/
  meta.json      format, spec, control rate, bundle, start time
  frames.jsonl   one JSON object per tick, flushed every tick
  <camera>.rgb   raw uint8 images (height, width, 3), appended in tick order
```

Each line of `frames.jsonl` contains `tick`, `time_s` (seconds since the episode started),
`observation`, `proposed` (the blended policy action or `null`), `command` (what was sent),
`held` and `reasons` (the safety interventions). The observation holds the vector features as
lists, the task string, and per camera the index of its image in `<camera>.rgb`. It is `null`
before the first complete observation.
`read_edge_episode` loads an episode back as arrays; the executed `command` is the `action` a
dataset should learn from.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from robota.edge.executor import SensorFrame
from robota.edge.safety import SafeCommand
from robota.errors import RobotaError
from robota.spec import ACTION, OBS_IMAGES, TASK, Spec

logger = logging.getLogger(__name__)

LOG_FORMAT = "robota-edge-log"
LOG_VERSION = 1
META_FILE = "meta.json"
FRAMES_FILE = "frames.jsonl"
EPISODE_PATTERN = "episode_{index:06d}"


class EdgeLogWriter:
    """Write executed ticks into episode folders; pass it as the executor's `recorder`.

    Args:
        root: Log folder; episodes are numbered after the ones already in it.
        spec: Feature spec of the bundle.
        bundle: Bundle path or name stored in each episode's metadata.
    """

    def __init__(self, root: Path, spec: Spec, *, bundle: str | None = None):
        self.root = Path(root)
        self.spec = spec
        self.bundle = bundle
        self.root.mkdir(parents=True, exist_ok=True)
        self.episode_dir: Path | None = None
        self._frames = None
        self._images: dict[str, Any] = {}
        self._image_counts: dict[str, int] = {}
        self._started_s = 0.0
        self._tick = 0

    def start_episode(self) -> Path:
        """Close the current episode, if any, and open the next one; return its folder."""
        self.close()
        index = len(list(self.root.glob("episode_*")))
        self.episode_dir = self.root / EPISODE_PATTERN.format(index=index)
        self.episode_dir.mkdir()
        meta = {
            "format": LOG_FORMAT,
            "version": LOG_VERSION,
            "spec": self.spec.to_dict(),
            "fps": self.spec.fps,
            "bundle": self.bundle,
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (self.episode_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        self._frames = open(self.episode_dir / FRAMES_FILE, "a", encoding="utf-8")
        for camera in self.spec.camera_names:
            self._images[camera] = open(self.episode_dir / f"{camera}.rgb", "ab")
            self._image_counts[camera] = 0
        self._started_s = time.monotonic()
        self._tick = 0
        logger.info("recording episode to %s", self.episode_dir)
        return self.episode_dir

    def close(self) -> None:
        """Close the current episode's files; safe to call twice."""
        if self._frames is not None:
            self._frames.close()
        for stream in self._images.values():
            stream.close()
        self._frames = None
        self._images = {}

    def __enter__(self) -> EdgeLogWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __call__(self, frame: SensorFrame, proposed: np.ndarray | None, safe: SafeCommand) -> None:
        """Append one tick; opens the first episode on the first call."""
        if self._frames is None:
            self.start_episode()
        line = {
            "tick": self._tick,
            "time_s": round(time.monotonic() - self._started_s, 6),
            "observation": None if frame.observation is None else self._observation(frame.observation),
            "proposed": None if proposed is None else [float(v) for v in proposed],
            "command": [float(v) for v in safe.command],
            "held": bool(safe.held),
            "reasons": list(safe.reasons),
        }
        self._frames.write(json.dumps(line) + "\n")
        self._frames.flush()
        self._tick += 1

    def _observation(self, observation) -> dict[str, Any]:
        values: dict[str, Any] = {TASK: str(observation.get(TASK, ""))}
        for key in self.spec.vector_keys:
            values[key] = [float(v) for v in np.asarray(observation[key]).reshape(-1)]
        for camera in self.spec.camera_names:
            image = np.ascontiguousarray(observation[OBS_IMAGES + camera], dtype=np.uint8)
            self._images[camera].write(image.tobytes())
            self._images[camera].flush()
            values[OBS_IMAGES + camera] = self._image_counts[camera]
            self._image_counts[camera] += 1
        return values


def read_edge_episode(episode_dir: Path) -> dict[str, Any]:
    """Load one logged episode, keeping only the ticks with a complete observation.

    Returns:
        A dict with `spec`, `meta`, `timestamp_s` `(frames,)`, `tick` `(frames,)`, `held`
        `(frames,)`, `action` (the sent command, `(frames, action_dim)`), `proposed`
        `(frames, action_dim)` (NaN where none was ready), `task` (a list of strings), every
        vector feature as `(frames, dim)` float32 and every camera as uint8
        `(frames, height, width, 3)`.

    Raises:
        RobotaError: The folder is not an edge log episode or a file is truncated.
    """
    episode_dir = Path(episode_dir)
    meta = read_edge_meta(episode_dir)
    spec = Spec.from_dict(meta["spec"])
    lines = _read_lines(episode_dir / FRAMES_FILE)
    rows = [line for line in lines if line["observation"] is not None]

    episode: dict[str, Any] = {"spec": spec, "meta": meta}
    episode["timestamp_s"] = np.array([r["time_s"] for r in rows], dtype=np.float64)
    episode["tick"] = np.array([r["tick"] for r in rows], dtype=np.int64)
    episode["held"] = np.array([r["held"] for r in rows], dtype=bool)
    # Explicit widths, not -1, so an episode without a complete observation gives (0, dim).
    action_dim = spec.robot.action_dim
    episode[ACTION] = np.array([r["command"] for r in rows], dtype=np.float32).reshape(len(rows), action_dim)
    nan_action = [np.nan] * action_dim
    episode["proposed"] = np.array([r["proposed"] or nan_action for r in rows], dtype=np.float32).reshape(len(rows), action_dim)
    episode[TASK] = [r["observation"][TASK] for r in rows]
    for key in spec.vector_keys:
        width = int(np.prod(spec.features[key].shape))
        episode[key] = np.array([r["observation"][key] for r in rows], dtype=np.float32).reshape(len(rows), width)
    for camera in spec.camera_names:
        episode[OBS_IMAGES + camera] = _read_images(episode_dir, camera, spec, rows)
    return episode


def read_edge_meta(episode_dir: Path) -> dict[str, Any]:
    """Load and check an episode's `meta.json` without reading its frames.

    Raises:
        RobotaError: The file is missing or invalid, or its format or version is not this
            module's.
    """
    meta_path = Path(episode_dir) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RobotaError(f"{meta_path}: not a readable edge log episode ({error})") from None
    if not isinstance(meta, dict):
        raise RobotaError(f"{meta_path}: not a JSON object, so not an edge log episode")
    if meta.get("format") != LOG_FORMAT or meta.get("version") != LOG_VERSION:
        raise RobotaError(f"{meta_path}: format {meta.get('format')!r} v{meta.get('version')} is not {LOG_FORMAT} v{LOG_VERSION}")
    if not isinstance(meta.get("spec"), dict):
        raise RobotaError(f"{meta_path}: has no spec; the episode was not written by EdgeLogWriter")
    return meta


def iter_edge_episodes(root: Path) -> Iterator[dict[str, Any]]:
    """Yield every episode of a log folder in order, as `read_edge_episode` loads it."""
    for episode_dir in sorted(Path(root).glob("episode_*")):
        yield read_edge_episode(episode_dir)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    with open(path, encoding="utf-8") as stream:
        for number, text in enumerate(stream, start=1):
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                # A crash can cut the last line; anything earlier is damage.
                if stream.readline() == "":
                    logger.warning("%s: skipping the cut-off last line %d", path, number)
                    break
                raise RobotaError(f"{path}: line {number} is not valid JSON") from None
    return lines


def _read_images(episode_dir: Path, camera: str, spec: Spec, rows: list[dict[str, Any]]) -> np.ndarray:
    shape = spec.features[OBS_IMAGES + camera].shape
    path = episode_dir / f"{camera}.rgb"
    images = np.fromfile(path, dtype=np.uint8)
    count = images.size // int(np.prod(shape))
    images = images[: count * int(np.prod(shape))].reshape(count, *shape)  # (images, height, width, 3)
    indices = [r["observation"][OBS_IMAGES + camera] for r in rows]
    if indices and max(indices) >= count:
        raise RobotaError(f"{path}: has {count} images, but {FRAMES_FILE} refers to image {max(indices)}")
    return images[indices]
