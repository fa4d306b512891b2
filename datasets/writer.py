"""DatasetWriter: record episodes frame by frame into a LeRobot v3.0 dataset folder.

Episodes are staged in `<root>/.recording/` while recording (see `robota.datasets.staging`):
each saved episode is a folder with its frame rows (parquet), one mp4 per camera and an
`episode.json` written last, and the folder is moved into place in one rename. A crash therefore
loses at most the episode being recorded. The next `open_dataset` or `DatasetWriter` on the
folder finalises the saved episodes, and `DatasetWriter(..., resume=True)` continues recording
after them instead. `close()` builds the final layout from the staged episodes, writes
`meta/info.json` last and removes the staging folder, so a folder without `meta/info.json` is
never mistaken for a finished dataset.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from robota.datasets import finalise
from robota.datasets.layout import (
    DEFAULT_CHUNKS_SIZE,
    DEFAULT_DATA_FILE_SIZE_MB,
    DEFAULT_VIDEO_FILE_SIZE_MB,
    EPISODE_COLUMNS,
    RESERVED_PREFIXES,
    write_json_atomic,
    write_parquet,
)
from robota.datasets.staging import (
    CURRENT_DIR,
    EPISODE_RECORD_FILE,
    FINAL_FOLDERS,
    FRAME_COUNT_FILE,
    SETTINGS_FILE,
    STAGING_DIR,
    drop_partial_episode,
    load_staged_episodes,
    lock_staging,
    recover_recording,
)
from robota.datasets.stats import histogram_stats, image_histogram, to_json, vector_stats
from robota.datasets.video import EpisodeVideoEncoder, default_video_options
from robota.errors import DatasetError
from robota.spec import TASK, Spec

logger = logging.getLogger(__name__)

_METADATA_TYPES = (bool, int, float, str)


class DatasetWriter:
    """Record episodes into a new LeRobot v3.0 dataset folder.

    Use it as a context manager. Leaving the block normally finalises the dataset. Leaving it with
    an exception discards the unsaved episode and still finalises the saved ones, or removes the
    folder if none was saved.

    Example:
        >>> with DatasetWriter("demos/pick", spec, robot_type="ur5e") as writer:
        ...     for observation, action in rollout:
        ...         writer.add_frame({**observation, "action": action})
        ...     writer.save_episode({"seed": 3})

    Args:
        root: Dataset folder to create. It must not exist or must be empty, unless `resume`.
        spec: Feature spec; every frame carries each of its keys.
        robot_type: Robot name stored in info.json, for example `ur5e`.
        video_codec: FFmpeg encoder for camera streams; `libx264` writes H.264 yuv420p.
        video_options: Encoder options that replace robota's defaults for the codec. The
            defaults are `crf` 18, `preset` veryfast and no B-frames for libx264, and `crf` 30
            and `preset` 8 for libsvtav1. A keyframe every second is added unless the options
            set `g`.
        chunks_size: Files per chunk folder.
        data_files_size_in_mb: A new data file starts once a file passes this size.
        video_files_size_in_mb: A new video file starts once a file passes this size.
        resume: Continue a recording into `root` that was interrupted before `close()`. The
            spec must match, and the codec, options and file sizes of the first run are kept.
            The episode that was being recorded when it stopped is dropped with a warning.
            Without `resume`, such a folder is finalised into a dataset of its saved episodes
            and then rejected as not empty.

    Raises:
        DatasetError: `root` contains files this writer did not create, another process
            records into it, or `resume` finds nothing to resume.
    """

    def __init__(
        self,
        root: str | Path,
        spec: Spec,
        *,
        robot_type: str,
        video_codec: str = "libx264",
        video_options: Mapping[str, str] | None = None,
        chunks_size: int = DEFAULT_CHUNKS_SIZE,
        data_files_size_in_mb: int = DEFAULT_DATA_FILE_SIZE_MB,
        video_files_size_in_mb: int = DEFAULT_VIDEO_FILE_SIZE_MB,
        resume: bool = False,
    ):
        self.root = Path(root)
        self.spec = spec
        self.settings = {
            "robot_type": robot_type,
            "video_codec": video_codec,
            "video_options": (
                dict(video_options) if video_options is not None else default_video_options(video_codec)
            ),
            "chunks_size": int(chunks_size),
            "data_files_size_in_mb": int(data_files_size_in_mb),
            "video_files_size_in_mb": int(video_files_size_in_mb),
        }
        self._staging = self.root / STAGING_DIR
        self._created_root = False
        self._closed = False
        self._lock: IO[bytes] | None = None
        self._frame_counter: IO[bytes] | None = None
        self._episodes: list[dict[str, Any]] = []
        self._tasks: dict[str, int] = {}
        self._metadata_types: dict[str, type] = {}
        _check_spec(spec)
        if resume:
            self._resume()
        else:
            self._create()
        self._reset_episode()

    # ----------------------------------------------------------------------------- setup

    def _create(self) -> None:
        if (self._staging / SETTINGS_FILE).exists() and not (self.root / "meta/info.json").exists():
            kept = recover_recording(self.root)
            raise DatasetError(
                f"dataset folder {self.root} held an interrupted recording; its {kept} saved "
                "episodes are now finalised there as a dataset. Choose a new folder for a new "
                "recording, or pass resume=True next time to continue an interrupted one"
            )
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise DatasetError(
                f"dataset folder {self.root} already exists and is not empty. Choose a new "
                "folder, because robota never writes into a folder it did not create"
            )
        self._created_root = not self.root.exists()
        self._staging.joinpath("episodes").mkdir(parents=True)
        self._lock = lock_staging(self._staging)
        write_json_atomic(
            self._staging / SETTINGS_FILE, {"spec": self.spec.to_dict(), **self.settings}
        )

    def _resume(self) -> None:
        settings_path = self._staging / SETTINGS_FILE
        if not settings_path.exists():
            raise DatasetError(
                f"nothing to resume in {self.root}: {settings_path} is missing. "
                "Start a new recording with resume=False"
            )
        saved = json.loads(settings_path.read_text())
        if Spec.from_dict(saved["spec"]).fingerprint() != self.spec.fingerprint():
            raise DatasetError(
                f"cannot resume {self.root}: it was recorded with another spec. "
                "Pass the spec stored in its .recording/writer.json"
            )
        self.settings = {k: saved[k] for k in self.settings}
        self._lock = lock_staging(self._staging)
        drop_partial_episode(self._staging)
        for stale in FINAL_FOLDERS:
            shutil.rmtree(self.root / stale, ignore_errors=True)
        for record in load_staged_episodes(self._staging):
            self._register(record)
        logger.info("resuming %s after %d saved episodes", self.root, len(self._episodes))

    def _register(self, record: dict[str, Any]) -> None:
        for task in record["tasks"]:
            self._tasks.setdefault(task, len(self._tasks))
        for key, value in record["metadata"].items():
            if value is not None:
                self._metadata_types.setdefault(key, type(value))
        self._episodes.append(record)

    def _reset_episode(self) -> None:
        self._columns: dict[str, list[np.ndarray]] = {k: [] for k in self._vector_keys}
        self._frame_tasks: list[str] = []
        self._histograms = {k: np.zeros((3, 256), dtype=np.int64) for k in self.spec.image_keys}
        self._encoders: dict[str, EpisodeVideoEncoder] = {}
        if self._frame_counter is not None:
            self._frame_counter.close()
            self._frame_counter = None

    @property
    def _vector_keys(self) -> list[str]:
        """Features stored as parquet columns: everything but images and the task string."""
        return [k for k, f in self.spec.features.items() if not f.is_image and f.dtype != "string"]

    @property
    def num_episodes(self) -> int:
        """Episodes saved so far."""
        return len(self._episodes)

    @property
    def episode_frames(self) -> int:
        """Frames added to the episode being recorded."""
        return len(self._frame_tasks)

    # ----------------------------------------------------------------------------- recording

    def add_frame(self, frame: Mapping[str, Any]) -> None:
        """Append one frame to the current episode.

        Args:
            frame: A value for every spec feature key: uint8 (height, width, 3) images, numeric
                arrays of the spec's shapes, `action`, and `task` as a string.

        Raises:
            DatasetError: A key is missing or unknown, or a value has the wrong dtype or shape.
        """
        self._check_open()
        values = self._validate_frame(frame)
        current = self._staging / CURRENT_DIR
        if self._frame_counter is None:
            current.mkdir(exist_ok=True)
            # Unbuffered: each byte reaches the kernel at once, so it survives a SIGKILL.
            self._frame_counter = open(current / FRAME_COUNT_FILE, "ab", buffering=0)
        for key in self.spec.image_keys:
            if key not in self._encoders:
                self._encoders[key] = EpisodeVideoEncoder(
                    current / f"{key}.mp4",
                    self.spec.fps,
                    self.settings["video_codec"],
                    self.settings["video_options"],
                )
            self._encoders[key].add(values[key])
            self._histograms[key] += image_histogram(values[key])
        for key in self._vector_keys:
            self._columns[key].append(values[key])
        self._frame_tasks.append(values[TASK])
        self._frame_counter.write(b".")

    def _validate_frame(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        missing = [k for k in self.spec.features if k not in frame]
        unknown = [k for k in frame if k not in self.spec.features]
        if missing or unknown:
            raise DatasetError(
                f"frame keys do not match the spec: missing {missing}, unknown {unknown}. "
                f"A frame needs exactly these keys: {list(self.spec.features)}"
            )
        values: dict[str, Any] = {}
        for key, feature in self.spec.features.items():
            value = frame[key]
            if feature.dtype == "string":
                if not isinstance(value, str) or not value:
                    raise DatasetError(f"frame {key!r} must be a non-empty str, got {value!r}")
                values[key] = value
                continue
            array = np.asarray(value)
            if feature.is_image and array.dtype != np.uint8:
                raise DatasetError(
                    f"frame {key!r} has dtype {array.dtype}, expected uint8 RGB; "
                    "convert with (image * 255).round().astype(np.uint8) if it is in [0, 1]"
                )
            try:
                array = array.astype(np.dtype(feature.dtype), copy=False)
            except (TypeError, ValueError):
                raise DatasetError(
                    f"frame {key!r} has value {value!r}, which is not convertible to {feature.dtype}"
                ) from None
            if array.shape != feature.shape:
                raise DatasetError(f"frame {key!r} has shape {array.shape}, expected {feature.shape}")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise DatasetError(f"frame {key!r} contains NaN or infinite values: {array}")
            values[key] = array
        return values

    def save_episode(self, metadata: Mapping[str, Any] | None = None) -> int:
        """Save the current episode and start a new one.

        Args:
            metadata: Extra values kept in this episode's row of meta/episodes, for example
                `{"seed": 3, "success": True}`. Values are bool, int, float, str, None or lists of
                those; a key keeps one type across episodes.

        Returns:
            The saved episode's index.

        Raises:
            DatasetError: The episode has no frames, or the metadata is invalid.
        """
        self._check_open()
        if not self._frame_tasks:
            raise DatasetError("save_episode() called on an empty episode; add frames with add_frame()")
        clean_metadata = self._validate_metadata(metadata or {})
        for encoder in self._encoders.values():
            encoder.close()

        episode_index = len(self._episodes)
        from_index = sum(e["length"] for e in self._episodes)
        record = self._write_episode_rows(episode_index, from_index)
        record["metadata"] = clean_metadata
        current = self._staging / CURRENT_DIR
        self._frame_counter.close()
        self._frame_counter = None
        write_json_atomic(current / EPISODE_RECORD_FILE, record)
        current.rename(self._staging / "episodes" / f"episode_{episode_index:06d}")

        self._register(record)
        logger.debug("saved episode %d with %d frames", episode_index, record["length"])
        self._reset_episode()
        return episode_index

    def _write_episode_rows(self, episode_index: int, from_index: int) -> dict[str, Any]:
        """Write the episode's frame rows and return its record without metadata."""
        length = len(self._frame_tasks)
        episode_tasks = list(dict.fromkeys(self._frame_tasks))
        known = dict(self._tasks)
        for task in episode_tasks:
            known.setdefault(task, len(known))

        columns: dict[str, np.ndarray] = {}
        for key, values in self._columns.items():
            stacked = np.stack(values)  # (frames, *shape)
            # LeRobot stores shape-(1,) features as scalar columns, so (frames, 1) -> (frames,).
            columns[key] = stacked[:, 0] if stacked.shape[1:] == (1,) else stacked
        frame_index = np.arange(length, dtype=np.int64)
        columns["timestamp"] = (frame_index / self.spec.fps).astype(np.float32)
        columns["frame_index"] = frame_index
        columns["episode_index"] = np.full(length, episode_index, dtype=np.int64)
        columns["index"] = frame_index + from_index
        columns["task_index"] = np.array([known[t] for t in self._frame_tasks], dtype=np.int64)
        write_parquet(self._staging / CURRENT_DIR / "data.parquet", rows_table(columns))

        stats = {key: vector_stats(values) for key, values in columns.items()}
        for key, histogram in self._histograms.items():
            stats[key] = histogram_stats(histogram, length)
        return {
            "episode_index": episode_index,
            "length": length,
            "tasks": episode_tasks,
            "stats": to_json(stats),
            "image_histograms": {k: h.tolist() for k, h in self._histograms.items()},
        }

    def _validate_metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        reserved = set(EPISODE_COLUMNS)
        clean: dict[str, Any] = {}
        for key, value in metadata.items():
            if not isinstance(key, str) or key in reserved or key.startswith(RESERVED_PREFIXES):
                raise DatasetError(
                    f"episode metadata key {key!r} is reserved by the LeRobot episode table; "
                    f"rename it (reserved: {sorted(reserved)} and prefixes {RESERVED_PREFIXES})"
                )
            value = _plain(value, key)
            kind = type(value[0] if isinstance(value, list) and value else value)
            expected = self._metadata_types.get(key)
            if value is not None and expected is not None and not _same_kind(expected, kind):
                raise DatasetError(
                    f"episode metadata {key!r} is {kind.__name__} here but {expected.__name__} in "
                    "earlier episodes; keep one type per key"
                )
            clean[key] = value
        return clean

    def discard_episode(self) -> None:
        """Drop the frames of the current episode; the next frame starts a new one."""
        self._check_open()
        for encoder in self._encoders.values():
            encoder.abort()
        if self._frame_counter is not None:
            self._frame_counter.close()
            self._frame_counter = None
        shutil.rmtree(self._staging / CURRENT_DIR, ignore_errors=True)
        logger.debug("discarded %d frames", len(self._frame_tasks))
        self._reset_episode()

    # ----------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Finalise the dataset: write data, videos and metadata, then remove the staging folder.

        Frames added after the last `save_episode()` are discarded with a warning.

        Raises:
            DatasetError: No episode was saved (the folder is removed), or finalising failed
                (the staged episodes are kept, so `resume=True` can retry).
        """
        if self._closed:
            return
        if self._frame_tasks:
            logger.warning("discarding %d frames not saved with save_episode()", len(self._frame_tasks))
        self.discard_episode()
        self._closed = True
        if not self._episodes:
            self._remove_root()
            raise DatasetError(f"no episode was saved, so no dataset was written to {self.root}")
        try:
            finalise.build_dataset(self.root, self.spec, self.settings, self._episodes, self._staging)
        except BaseException:
            for partial in FINAL_FOLDERS:
                shutil.rmtree(self.root / partial, ignore_errors=True)
            self._release_lock()
            raise
        shutil.rmtree(self._staging)
        self._release_lock()
        logger.info("wrote %d episodes to %s", len(self._episodes), self.root)

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _remove_root(self) -> None:
        self._release_lock()
        shutil.rmtree(self._staging, ignore_errors=True)
        if self._created_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _check_open(self) -> None:
        if self._closed:
            raise DatasetError(f"the writer for {self.root} is closed")

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            self.close()
            return
        if self._closed:
            return
        logger.warning("recording into %s stopped by %s; finalising saved episodes", self.root, exc_type.__name__)
        if self._episodes:
            self.close()
        else:
            self.discard_episode()
            self._closed = True
            self._remove_root()


def _check_spec(spec: Spec) -> None:
    """Reject features that the parquet rows or the yuv420p video streams cannot store."""
    for key in spec.image_keys:
        feature = spec.features[key]
        height, width, channels = (*feature.shape, 0, 0, 0)[:3]
        if feature.dtype != "uint8" or len(feature.shape) != 3 or channels != 3:
            raise DatasetError(
                f"image feature {key!r} is {feature.dtype} {feature.shape}; the writer stores "
                "uint8 RGB images of shape (height, width, 3)"
            )
        if height % 2 or width % 2:
            raise DatasetError(
                f"image feature {key!r} is {height}x{width}; H.264 and AV1 in yuv420p need an "
                "even height and width, so crop or pad the camera image by one pixel"
            )
    for key, feature in spec.features.items():
        if not feature.is_image and feature.dtype != "string" and len(feature.shape) != 1:
            raise DatasetError(
                f"feature {key!r} has shape {feature.shape}; the writer stores one-dimensional "
                "numeric features, so flatten it and list the element names"
            )


def rows_table(columns: Mapping[str, np.ndarray]) -> pa.Table:
    """Build a frame-row table: (frames,) arrays become scalar columns, (frames, n) fixed lists."""
    arrays = {}
    for key, values in columns.items():
        if values.ndim == 1:
            arrays[key] = pa.array(values)
        else:
            flat = pa.array(values.reshape(len(values), -1).ravel())
            arrays[key] = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:])))
    return pa.table(arrays)


def _plain(value: Any, key: str) -> Any:
    """Convert numpy scalars and arrays to Python values, rejecting what parquet cannot hold."""
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, _METADATA_TYPES):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, _METADATA_TYPES) for v in value):
        return list(value)
    raise DatasetError(
        f"episode metadata {key!r} has a value of type {type(value).__name__}; "
        "use bool, int, float, str, None or a list of those"
    )


def _same_kind(expected: type, seen: type) -> bool:
    numbers = {int, float}
    return expected is seen or (expected in numbers and seen in numbers)
