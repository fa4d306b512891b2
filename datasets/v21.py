"""LeRobot v2.1 datasets: read them like v3.0 ones, and convert them to v3.0.

A v2.1 dataset keeps one parquet file and one mp4 per camera for each episode, and its metadata
in JSON Lines files:

    meta/info.json                 codebase_version "v2.1", data_path and video_path templates
    meta/episodes.jsonl            {"episode_index", "tasks", "length"} per line
    meta/tasks.jsonl               {"task_index", "task"} per line
    meta/episodes_stats.jsonl      {"episode_index", "stats": {feature: {min, max, mean, std, count}}}
    meta/stats.json                statistics over every frame (optional)
    data/chunk-000/episode_000000.parquet
    videos/chunk-000/<video key>/episode_000000.mp4     timestamps start at 0 in every file

Episode i lies in chunk i // chunks_size. Conversion copies the video packets into v3.0's
many-episodes-per-file layout without re-encoding, shifting each episode's timestamps.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from robota.datasets import finalise
from robota.datasets.layout import (
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_DATA_FILE_SIZE_MB,
    DEFAULT_VIDEO_FILE_SIZE_MB,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    V21_VERSION,
    VIDEO_PATH,
    tasks_table,
    write_json_atomic,
    write_parquet,
)
from robota.datasets.reader import DatasetReader, open_dataset
from robota.datasets.stats import FeatureStats, from_json, merge_moments, to_json, vector_stats
from robota.errors import DatasetError

logger = logging.getLogger(__name__)

EPISODES_JSONL = "meta/episodes.jsonl"
TASKS_JSONL = "meta/tasks.jsonl"
EPISODES_STATS_JSONL = "meta/episodes_stats.jsonl"
# info.json entries that v2.1 has and v3.0 does not.
_V21_ONLY_INFO = ("total_chunks", "total_videos")


class V21DatasetReader(DatasetReader):
    """Read a LeRobot v2.1 dataset through the `DatasetReader` interface.

    `open_dataset` returns this class for a v2.1 folder. Episode metadata carries the v3.0
    columns that a v2.1 dataset implies: `dataset_from_index` and `dataset_to_index`, and for
    each camera a `from_timestamp` of 0 and a `to_timestamp` of length / fps. When the dataset
    has no meta/stats.json, `stats` merges the per-episode statistics (without quantiles).
    """

    expected_version = V21_VERSION

    def _read_jsonl(self, relative: str) -> list[dict[str, Any]]:
        def load(path: Path) -> list[dict[str, Any]]:
            records = []
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except ValueError as error:
                    raise ValueError(f"line {number} is not JSON ({error})") from None
            return records

        return self._read(relative, load)

    def _read_tasks(self) -> list[str]:
        records = sorted(self._read_jsonl(TASKS_JSONL), key=lambda r: r["task_index"])
        if [r["task_index"] for r in records] != list(range(len(records))):
            raise DatasetError(
                f"task indices in {self.root / TASKS_JSONL} are not 0..{len(records) - 1}; "
                "the dataset's task table is damaged"
            )
        return [r["task"] for r in records]

    def _read_episode_table(self) -> list[dict[str, Any]]:
        rows = sorted(self._read_jsonl(EPISODES_JSONL), key=lambda r: r["episode_index"])
        if [r["episode_index"] for r in rows] != list(range(len(rows))):
            raise DatasetError(
                f"episode indices in {self.root / EPISODES_JSONL} are not 0..{len(rows) - 1}; "
                "the dataset's episode table is damaged"
            )
        from_index = 0
        for row in rows:
            row["dataset_from_index"] = from_index
            row["dataset_to_index"] = from_index + int(row["length"])
            from_index += int(row["length"])
            for key in self.video_keys:
                row[f"videos/{key}/from_timestamp"] = 0.0
                row[f"videos/{key}/to_timestamp"] = int(row["length"]) / self.fps
        return rows

    def _load_stats(self) -> dict[str, FeatureStats]:
        if (self.root / STATS_PATH).exists():
            return super()._load_stats()
        if not (self.root / EPISODES_STATS_JSONL).exists():
            return {}
        per_episode = self.episode_stats()
        keys = dict.fromkeys(k for stats in per_episode for k in stats)
        return {
            key: merge_moments([stats[key] for stats in per_episode if key in stats]) for key in keys
        }

    def episode_stats(self) -> list[dict[str, FeatureStats]]:
        """Return each episode's statistics from meta/episodes_stats.jsonl, in episode order."""
        records = sorted(self._read_jsonl(EPISODES_STATS_JSONL), key=lambda r: r["episode_index"])
        return [from_json(record["stats"]) for record in records]

    def _chunk(self, index: int) -> int:
        return index // int(self.info.get("chunks_size", 1000))

    def data_file(self, index: int) -> str:
        self._check_episode(index)
        return self.info["data_path"].format(episode_chunk=self._chunk(index), episode_index=index)

    def video_file(self, index: int, key: str) -> tuple[str, float]:
        self._check_episode(index)
        relative = self.info["video_path"].format(
            episode_chunk=self._chunk(index), video_key=key, episode_index=index
        )
        return relative, 0.0


def convert_v21_to_v30(
    source: str | Path,
    destination: str | Path,
    *,
    data_files_size_in_mb: int = DEFAULT_DATA_FILE_SIZE_MB,
    video_files_size_in_mb: int = DEFAULT_VIDEO_FILE_SIZE_MB,
) -> Path:
    """Convert a LeRobot v2.1 dataset into a new v3.0 dataset folder.

    Frame rows are copied unchanged, joined into data files of up to `data_files_size_in_mb`.
    Video packets are copied without re-encoding into files of up to `video_files_size_in_mb`;
    an episode whose codec parameters differ from the previous one's starts a new file. Numeric
    statistics are recomputed over every frame, quantiles included. Image statistics come from
    the source's stats.json, or are merged from its per-episode statistics. meta/info.json is
    written last.

    Args:
        source: The v2.1 dataset folder; it is only read.
        destination: The v3.0 folder to write; it must not exist or must be empty.
        data_files_size_in_mb: A new data file starts once a file passes this size.
        video_files_size_in_mb: A new video file starts once a file passes this size.

    Returns:
        The destination folder.

    Raises:
        DatasetError: The source is not a readable v2.1 dataset, or the destination is not empty.
    """
    destination = Path(destination)
    reader = open_dataset(source)
    if not isinstance(reader, V21DatasetReader):
        raise DatasetError(
            f"{reader.root} is a LeRobot {reader.info['codebase_version']} dataset, not v2.1, so "
            "there is nothing to convert; open it directly with open_dataset"
        )
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise DatasetError(
            f"conversion target {destination} already exists and is not empty; choose a new folder"
        )
    created = not destination.exists()
    destination.mkdir(parents=True, exist_ok=True)
    settings = {
        "chunks_size": int(reader.info.get("chunks_size", 1000)),
        "data_files_size_in_mb": int(data_files_size_in_mb),
        "video_files_size_in_mb": int(video_files_size_in_mb),
    }
    try:
        _write_v30(reader, destination, settings)
    except BaseException:
        if created:
            shutil.rmtree(destination, ignore_errors=True)
        else:
            for child in destination.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    logger.info("converted %s (v2.1) into %s (v3.0)", reader.root, destination)
    return destination


def _write_v30(reader: V21DatasetReader, root: Path, settings: dict[str, int]) -> None:
    """Write the v3.0 layout of every episode of `reader` under `root`."""
    episodes = range(reader.num_episodes)
    rows = [
        {"episode_index": i, "tasks": list(reader.episode_metadata(i)["tasks"]), "length": reader.episode_lengths[i]}
        for i in episodes
    ]

    sources = [reader.root / reader.data_file(i) for i in episodes]
    for path in sources:
        if not path.exists():
            raise DatasetError(f"data file {path} of the v2.1 dataset {reader.root} is missing")
    columns = finalise.write_data_files(root, sources, rows, settings)
    video_infos = {}
    for key in reader.video_keys:
        videos = [reader.root / reader.video_file(i, key)[0] for i in episodes]
        missing = [path for path in videos if not path.exists()]
        if missing:
            raise DatasetError(
                f"video file {missing[0]} of the v2.1 dataset {reader.root} is missing "
                f"({len(missing)} of {len(videos)} files of {key!r}); copy them again from the source"
            )
        video_infos[key] = finalise.write_video_files(root, key, reader.fps, videos, rows, settings)

    write_parquet(root / TASKS_PATH, tasks_table(list(reader.tasks)))
    episode_stats = _episode_stats(reader, rows, columns)
    finalise.write_episode_table(root, rows, episode_stats, [{} for _ in episodes])
    stats = {name: vector_stats(values) for name, values in columns.items() if _is_numeric(values)}
    for key in reader.image_keys:
        if key in reader.stats:
            stats[key] = reader.stats[key]
    write_json_atomic(root / STATS_PATH, to_json(stats))
    write_json_atomic(root / INFO_PATH, _v30_info(reader, video_infos, settings))


def _is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "biuf"


def _episode_stats(
    reader: V21DatasetReader, rows: list[dict[str, Any]], columns: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    """Recompute each episode's numeric statistics and keep its image statistics from the source."""
    image_stats = reader.episode_stats() if reader.image_keys and _has_episode_stats(reader) else []
    result = []
    for position, row in enumerate(rows):
        window = slice(row["dataset_from_index"], row["dataset_to_index"])
        stats = {
            name: vector_stats(values[window]) for name, values in columns.items() if _is_numeric(values)
        }
        if position < len(image_stats):
            stats.update({k: v for k, v in image_stats[position].items() if k in reader.image_keys})
        result.append(to_json(stats))
    return result


def _has_episode_stats(reader: V21DatasetReader) -> bool:
    return (reader.root / EPISODES_STATS_JSONL).exists()


def _v30_info(
    reader: V21DatasetReader, video_infos: dict[str, dict[str, Any]], settings: dict[str, int]
) -> dict[str, Any]:
    info = {k: v for k, v in reader.info.items() if k not in _V21_ONLY_INFO}
    features = json.loads(json.dumps(info["features"]))  # a deep copy
    for key, stream in video_infos.items():
        # The written stream's codec, size and rate win over what the source's info.json claims;
        # whether it is a depth map cannot be read from the stream.
        original = features[key].get("info") or {}
        features[key]["info"] = {**original, **stream}
        if "video.is_depth_map" in original:
            features[key]["info"]["video.is_depth_map"] = original["video.is_depth_map"]
    info.update({
        "codebase_version": CODEBASE_VERSION,
        **settings,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video_infos else None,
        "features": features,
    })
    return info
