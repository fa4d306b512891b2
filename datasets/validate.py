"""Check a dataset folder and list every problem with the episode, frame and file it concerns.

`validate(root)` reads a LeRobot v3.0 or v2.1 dataset without writing to it and reports:

- timestamps that go backwards or step by other than 1 / fps (beyond a tolerance),
- NaN or infinite values in numeric columns,
- columns missing from the data files or with another shape than info.json declares, and
  videos whose frame size is not the declared image shape,
- missing data and video files, and videos without a frame for some of an episode's timestamps
  (for example a video shorter than the episode's `to_timestamp`),
- statistics that do not cover a feature, lack a statistic or have the wrong shape,
- files that cannot be read at all.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from robota.datasets.layout import (
    FRAME_INDEX_COLUMNS,
    INFO_PATH,
    STATS_PATH,
    TIMESTAMP_TOLERANCE_S,
    V21_VERSION,
    column_to_numpy,
)
from robota.datasets.reader import DatasetReader, open_dataset
from robota.datasets.staging import SETTINGS_FILE, STAGING_DIR
from robota.errors import DatasetError

# The statistics every feature needs for training normalisation; quantiles are optional because
# v2.1 datasets have none.
REQUIRED_STATS = ("min", "max", "mean", "std", "count")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem found in a dataset.

    Attributes:
        kind: `timestamp`, `non-finite`, `shape`, `missing-file`, `missing-frames`, `stats` or
            `unreadable`.
        message: What is wrong, with the values seen.
        file: The file concerned, relative to the dataset folder.
        episode: The episode concerned, if one.
        frame: The first frame (frame_index) concerned, if one.
        key: The feature or column concerned, if one.
    """

    kind: str
    message: str
    file: str
    episode: int | None = None
    frame: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.episode is not None:
            where.append(f"episode {self.episode}")
        if self.frame is not None:
            where.append(f"frame {self.frame}")
        if self.key is not None:
            where.append(self.key)
        return f"{', '.join(where)}: {self.kind}: {self.message}"


def validate(root: str | Path, *, tolerance_s: float = TIMESTAMP_TOLERANCE_S) -> list[Problem]:
    """Check a dataset folder and return its problems; an empty list means none were found.

    Args:
        root: Dataset folder (LeRobot v3.0 or v2.1). It is only read.
        tolerance_s: Largest allowed deviation of a timestamp step from 1 / fps, and of a video
            frame time from the time a frame row requests. LeRobot uses 1e-4 s.
    """
    root = Path(root)
    if (root / STAGING_DIR / SETTINGS_FILE).exists() and not (root / INFO_PATH).exists():
        return [Problem(
            "unreadable",
            "the folder holds an interrupted recording; open it with open_dataset (which "
            "finalises the saved episodes) or resume it with DatasetWriter(..., resume=True)",
            STAGING_DIR,
        )]
    try:
        reader = open_dataset(root)
    except DatasetError as error:
        return [Problem("unreadable", str(error), INFO_PATH)]

    problems = _check_columns(reader) + _check_video_sizes(reader)
    for index in range(reader.num_episodes):
        problems += _check_episode(reader, index, tolerance_s)
    problems += _check_stats(reader)
    return problems


def _check_columns(reader: DatasetReader) -> list[Problem]:
    """Check that every data file has each numeric feature as a column of the declared shape."""
    problems = []
    files = dict.fromkeys(reader.data_file(i) for i in range(reader.num_episodes))
    for relative in files:
        path = reader.root / relative
        if not path.exists():
            continue  # reported per episode
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as error:
            problems.append(Problem("unreadable", f"not a readable parquet file ({error})", relative))
            continue
        for key, feature in reader.features.items():
            if feature["dtype"] in ("video", "string"):
                continue
            if key not in schema.names:
                problems.append(Problem(
                    "shape", f"column is missing, but info.json declares {feature['dtype']} "
                    f"{feature['shape']}", relative, key=key,
                ))
                continue
            problems += _check_width(key, feature, schema.field(key).type, relative)
    return problems


def _check_width(key: str, feature: dict[str, Any], arrow_type: pa.DataType, relative: str) -> list[Problem]:
    if feature["dtype"] == "image":
        return []
    size = int(np.prod(feature["shape"]))
    if pa.types.is_fixed_size_list(arrow_type):
        width = arrow_type.list_size
    elif pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return []  # variable lists are checked row by row
    else:
        width = 1
    if width != size:
        return [Problem(
            "shape", f"rows hold {width} values, but info.json declares shape {feature['shape']}",
            relative, key=key,
        )]
    return []


def _check_episode(reader: DatasetReader, index: int, tolerance_s: float) -> list[Problem]:
    relative = reader.data_file(index)
    if not (reader.root / relative).exists():
        return [Problem("missing-file", "data file is missing", relative, episode=index)]
    try:
        rows = reader.episode_rows(index)
    except DatasetError as error:
        return [Problem("unreadable", str(error), relative, episode=index)]
    frames = column_to_numpy(rows["frame_index"])
    problems = _check_timestamps(reader, rows, frames, index, relative, tolerance_s)
    problems += _check_values(reader, rows, frames, index, relative)
    for key in reader.video_keys:
        problems += _check_video(reader, rows, frames, index, key, tolerance_s)
    return problems


def _check_timestamps(
    reader: DatasetReader, rows: pa.Table, frames: np.ndarray, index: int, relative: str,
    tolerance_s: float,
) -> list[Problem]:
    timestamps = column_to_numpy(rows["timestamp"]).astype(np.float64)
    steps = np.diff(timestamps)
    problems = []
    backwards = np.flatnonzero(steps <= 0)
    if len(backwards):
        first = backwards[0] + 1
        problems.append(Problem(
            "timestamp", f"timestamp {timestamps[first]:.6f} s does not increase after "
            f"{timestamps[first - 1]:.6f} s ({len(backwards)} such frames in the episode)",
            relative, episode=index, frame=int(frames[first]), key="timestamp",
        ))
    period = 1.0 / reader.fps
    off_rate = np.flatnonzero((steps > 0) & (np.abs(steps - period) > tolerance_s))
    if len(off_rate):
        first = off_rate[0] + 1
        problems.append(Problem(
            "timestamp", f"step of {steps[first - 1]:.6f} s to {timestamps[first]:.6f} s breaks "
            f"{reader.fps} fps (expected {period:.6f} s ± {tolerance_s} s; {len(off_rate)} such "
            "frames in the episode)", relative, episode=index, frame=int(frames[first]),
            key="timestamp",
        ))
    return problems


def _check_values(
    reader: DatasetReader, rows: pa.Table, frames: np.ndarray, index: int, relative: str
) -> list[Problem]:
    """Report non-finite values and rows of variable-length lists with the wrong length."""
    problems = []
    for key, feature in reader.features.items():
        if key not in rows.column_names or feature["dtype"] not in ("float32", "float64", "int64", "bool"):
            continue
        column = rows[key]
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            lengths = column_to_numpy(pc.list_value_length(column))
            wrong = np.flatnonzero(lengths != int(np.prod(feature["shape"])))
            if len(wrong):
                problems.append(Problem(
                    "shape", f"row holds {lengths[wrong[0]]} values, but info.json declares shape "
                    f"{feature['shape']} ({len(wrong)} such rows)", relative, episode=index,
                    frame=int(frames[wrong[0]]), key=key,
                ))
                continue
        values = column_to_numpy(column)
        if values.dtype.kind != "f":
            continue
        bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
        if len(bad):
            problems.append(Problem(
                "non-finite", f"NaN or infinite value {values[bad[0]].tolist()} ({len(bad)} "
                "such frames in the episode)", relative, episode=index, frame=int(frames[bad[0]]),
                key=key,
            ))
    return problems


def _check_video(
    reader: DatasetReader, rows: pa.Table, frames: np.ndarray, index: int, key: str,
    tolerance_s: float,
) -> list[Problem]:
    relative, from_s = reader.video_file(index, key)
    path = reader.root / relative
    if not path.exists():
        return [Problem("missing-file", "video file is missing", relative, episode=index, key=key)]
    try:
        frame_times, _ = _read_stream(path)
    except (av.FFmpegError, IndexError) as error:
        return [Problem("unreadable", f"not a readable video ({error})", relative, episode=index, key=key)]
    wanted = from_s + column_to_numpy(rows["timestamp"]).astype(np.float64)
    if len(frame_times):
        after = np.searchsorted(frame_times, wanted).clip(0, len(frame_times) - 1)
        before = (after - 1).clip(0)
        gaps = np.minimum(np.abs(frame_times[before] - wanted), np.abs(frame_times[after] - wanted))
    else:
        gaps = np.full(len(wanted), np.inf)
    missing = np.flatnonzero(gaps > tolerance_s)
    if not len(missing):
        return []
    end_s = float(frame_times[-1]) if len(frame_times) else 0.0
    return [Problem(
        "missing-frames", f"no video frame within {tolerance_s} s of {wanted[missing[0]]:.6f} s "
        f"({len(missing)} of {len(wanted)} frames missing; the last frame of the video is at "
        f"{end_s:.6f} s)", relative, episode=index, frame=int(frames[missing[0]]), key=key,
    )]


_STREAMS: dict[tuple[str, int, int], tuple[np.ndarray, tuple[int, int]]] = {}


def _read_stream(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Return a video's sorted frame times in seconds, from its packets, and its (height, width).

    Only the container is read (no decoding). Results are kept per (path, size, mtime) so a file
    shared by many episodes is read once.
    """
    status = path.stat()
    cache_key = (str(path), status.st_size, status.st_mtime_ns)
    result = _STREAMS.get(cache_key)
    if result is None:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            points = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
            times = np.sort(np.asarray(points, dtype=np.float64) * float(stream.time_base))
            result = (times, (stream.codec_context.height, stream.codec_context.width))
        if len(_STREAMS) > 64:
            _STREAMS.clear()
        _STREAMS[cache_key] = result
    return result


def _check_video_sizes(reader: DatasetReader) -> list[Problem]:
    """Check that each video's frame size is the image shape that info.json declares."""
    problems = []
    for key in reader.video_keys:
        height, width, _ = reader.image_shape(key)
        files = dict.fromkeys(reader.video_file(i, key)[0] for i in range(reader.num_episodes))
        for relative in files:
            try:
                _, size = _read_stream(reader.root / relative)
            except (OSError, av.FFmpegError, IndexError):
                continue  # reported per episode
            if size != (height, width):
                problems.append(Problem(
                    "shape", f"video frames are {size[0]}x{size[1]} (height x width), but info.json "
                    f"declares {height}x{width}", relative, key=key,
                ))
    return problems


def _check_stats(reader: DatasetReader) -> list[Problem]:
    """Check that the statistics cover every numeric and image feature with the right shapes."""
    relative = STATS_PATH
    if not (reader.root / STATS_PATH).exists():
        if reader.info["codebase_version"] != V21_VERSION or not reader.stats:
            return [Problem("stats", "statistics file is missing; write one with `robota dataset "
                            "stats DIR --output FILE` and place it there", STATS_PATH)]
        relative = "meta/episodes_stats.jsonl"
    problems = []
    for key, feature in reader.features.items():
        if feature["dtype"] == "string" or key in FRAME_INDEX_COLUMNS:
            continue
        stats = reader.stats.get(key)
        if stats is None:
            problems.append(Problem("stats", "feature has no statistics", relative, key=key))
            continue
        absent = [name for name in REQUIRED_STATS if name not in stats]
        if absent:
            problems.append(Problem("stats", f"statistics lack {absent}", relative, key=key))
        expected = 3 if key in reader.image_keys else int(np.prod(feature["shape"]))
        widths = defaultdict(list)
        for name in ("min", "max", "mean", "std"):
            if name in stats:
                widths[int(np.asarray(stats[name]).size)].append(name)
        for width, names in widths.items():
            if width != expected:
                problems.append(Problem(
                    "stats", f"{names} have {width} values, expected {expected}", relative, key=key
                ))
    return problems
