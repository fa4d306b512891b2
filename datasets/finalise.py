"""Build the final LeRobot v3.0 layout from the episodes a DatasetWriter staged.

Frame rows of all episodes go into data files of up to `data_files_size_in_mb` each, with one
parquet row group per episode. Camera streams go into video files of up to
`video_files_size_in_mb` each. The episode table, task table, statistics and info.json go into
meta/, and info.json is written last, so its presence marks a complete dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robota.datasets.layout import (
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES_PATH,
    FRAME_INDEX_COLUMNS,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    chunk_and_file,
    column_to_numpy,
    fsync_file,
    tasks_table,
    temporary_path,
    write_json_atomic,
    write_parquet,
)
from robota.datasets.stats import combine_histograms, histogram_stats, to_json, vector_stats
from robota.datasets.video import codec_parameters, concatenate_videos, video_info
from robota.spec import Spec

Record = dict[str, Any]


def build_dataset(
    root: Path, spec: Spec, settings: Mapping[str, Any], episodes: Sequence[Record], staging: Path
) -> None:
    """Write data, videos and meta/ under `root` from the staged `episodes`.

    Args:
        root: Dataset folder.
        spec: The spec every episode was recorded with.
        settings: The writer's settings (robot type, codec, file sizes, chunks size).
        episodes: Staged episode records, in episode order.
        staging: Folder holding `episodes/episode_XXXXXX/` of each record.
    """
    folders = [staging / "episodes" / f"episode_{e['episode_index']:06d}" for e in episodes]
    rows: list[Record] = [_episode_row(e) for e in episodes]

    data_columns = write_data_files(root, [f / "data.parquet" for f in folders], rows, settings)
    video_features: dict[str, Any] = {}
    for key in spec.image_keys:
        sources = [folder / f"{key}.mp4" for folder in folders]
        video_features[key] = write_video_files(root, key, spec.fps, sources, rows, settings)

    tasks = list(dict.fromkeys(t for e in episodes for t in e["tasks"]))
    write_parquet(root / TASKS_PATH, tasks_table(tasks))
    write_episode_table(root, rows, [e["stats"] for e in episodes], [e["metadata"] for e in episodes])
    stats = _global_stats(spec, episodes, data_columns)
    write_json_atomic(root / STATS_PATH, to_json(stats))
    info = _info(spec, settings, episodes, tasks, video_features)
    write_json_atomic(root / INFO_PATH, info)


def _episode_row(record: Record) -> Record:
    return {"episode_index": record["episode_index"], "tasks": record["tasks"], "length": record["length"]}


def _plan_files(sizes: Sequence[int], limit_mb: int, breaks: Sequence[bool] | None = None) -> list[int]:
    """Assign each episode a file number, starting a new file once one passes `limit_mb`.

    `breaks[i]` True also starts a new file at episode i.
    """
    numbers, current, used = [], 0, 0
    for position, size in enumerate(sizes):
        forced = breaks is not None and breaks[position]
        if used > 0 and (forced or used + size > limit_mb * 1024**2):
            current, used = current + 1, 0
        numbers.append(current)
        used += size
    return numbers


def write_data_files(
    root: Path, sources: Sequence[Path], rows: list[Record], settings: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Join per-episode frame-row files into data files, one row group per episode.

    Fills each episode row's data columns and returns every column joined over all frames. Each
    data file is written under a temporary name and renamed once its footer is written.
    """
    numbers = _plan_files([s.stat().st_size for s in sources], settings["data_files_size_in_mb"])
    columns: dict[str, list[np.ndarray]] = {}
    writer: pq.ParquetWriter | None = None
    path: Path | None = None
    from_index = 0
    for position, (source, number) in enumerate(zip(sources, numbers)):
        table = pq.read_table(source)
        chunk, file = chunk_and_file(number, settings["chunks_size"])
        if writer is None or number != numbers[position - 1]:
            if writer is not None:
                _close_data_file(writer, path)
            path = root / DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(temporary_path(path), _with_hf_metadata(table.schema))
        writer.write_table(table)  # one row group per episode
        rows[position].update({
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": from_index,
            "dataset_to_index": from_index + table.num_rows,
        })
        from_index += table.num_rows
        for name in table.column_names:
            columns.setdefault(name, []).append(column_to_numpy(table[name]))
    _close_data_file(writer, path)
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def _close_data_file(writer: pq.ParquetWriter, path: Path) -> None:
    writer.close()
    temporary = temporary_path(path)
    fsync_file(temporary)
    os.replace(temporary, path)


def _with_hf_metadata(schema: pa.Schema) -> pa.Schema:
    """Describe the columns in HuggingFace `datasets` terms, as LeRobot's own files do."""
    features: dict[str, Any] = {}
    for field in schema:
        if pa.types.is_fixed_size_list(field.type):
            value = {"dtype": _hf_dtype(field.type.value_type), "_type": "Value"}
            features[field.name] = {"feature": value, "length": field.type.list_size, "_type": "List"}
        elif pa.types.is_list(field.type):  # variable-length lists, as some v2.1 files store vectors
            value = {"dtype": _hf_dtype(field.type.value_type), "_type": "Value"}
            features[field.name] = {"feature": value, "_type": "List"}
        else:
            features[field.name] = {"dtype": _hf_dtype(field.type), "_type": "Value"}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return schema.with_metadata(metadata)


def _hf_dtype(arrow_type: pa.DataType) -> str:
    return {"float": "float32", "double": "float64"}.get(str(arrow_type), str(arrow_type))


def write_video_files(
    root: Path, key: str, fps: int, sources: Sequence[Path], rows: list[Record],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Concatenate one camera's episode videos into files; return the stream's info.

    Episodes whose codec parameters differ from the previous episode's start a new file, because
    one mp4 stream has one set of codec parameters and packets are copied without re-encoding.
    """
    extradata = [codec_parameters(source) for source in sources]
    breaks = [i > 0 and extradata[i] != extradata[i - 1] for i in range(len(sources))]
    numbers = _plan_files(
        [s.stat().st_size for s in sources], settings["video_files_size_in_mb"], breaks
    )
    outputs: list[Path] = []
    for number in sorted(set(numbers)):
        members = [i for i, n in enumerate(numbers) if n == number]
        chunk, file = chunk_and_file(number, settings["chunks_size"])
        output = root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
        lengths = [rows[i]["length"] for i in members]
        temporary = temporary_path(output)
        concatenate_videos([sources[i] for i in members], lengths, fps, temporary)
        fsync_file(temporary)
        os.replace(temporary, output)
        outputs.append(output)
        frames_before = 0
        for i, length in zip(members, lengths):
            rows[i].update({
                f"videos/{key}/chunk_index": chunk,
                f"videos/{key}/file_index": file,
                f"videos/{key}/from_timestamp": frames_before / fps,
                f"videos/{key}/to_timestamp": (frames_before + length) / fps,
            })
            frames_before += length
    return video_info(outputs[0])


def write_episode_table(
    root: Path, rows: list[Record], stats: Sequence[Mapping[str, Any]],
    metadata: Sequence[Mapping[str, Any]],
) -> None:
    """Write meta/episodes: LeRobot's columns, flattened per-episode stats, then user metadata."""
    metadata_keys = list(dict.fromkeys(k for m in metadata for k in m))
    for row, episode_stats, episode_metadata in zip(rows, stats, metadata):
        for key, feature_stats in episode_stats.items():
            for name, value in feature_stats.items():
                row[f"stats/{key}/{name}"] = value
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        for key in metadata_keys:
            row[key] = episode_metadata.get(key)
    table = pa.Table.from_pylist(rows)
    write_parquet(root / EPISODES_PATH.format(chunk_index=0, file_index=0), table)


def _global_stats(
    spec: Spec, episodes: Sequence[Record], columns: Mapping[str, np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """Compute stats over every frame: exact for columns, from summed histograms for images."""
    stats = {name: vector_stats(values) for name, values in columns.items()}
    total = sum(e["length"] for e in episodes)
    for key in spec.image_keys:
        histogram = combine_histograms(np.asarray(e["image_histograms"][key]) for e in episodes)
        stats[key] = histogram_stats(histogram, total)
    return stats


def _info(
    spec: Spec, settings: Mapping[str, Any], episodes: Sequence[Record], tasks: list[str],
    video_features: Mapping[str, Any],
) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for key, feature in spec.features.items():
        if feature.dtype == "string":
            continue  # the task string lives in meta/tasks.parquet, rows carry task_index
        if feature.is_image:
            features[key] = {
                "dtype": "video",
                "shape": list(feature.shape),
                "names": list(feature.names or ("height", "width", "channels")),
                "info": video_features[key],
            }
        else:
            names = list(feature.names) if feature.names is not None else None
            features[key] = {"dtype": feature.dtype, "shape": list(feature.shape), "names": names}
    for name in FRAME_INDEX_COLUMNS:
        dtype = "float32" if name == "timestamp" else "int64"
        features[name] = {"dtype": dtype, "shape": [1], "names": None}

    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": settings["robot_type"],
        "total_episodes": len(episodes),
        "total_frames": sum(e["length"] for e in episodes),
        "total_tasks": len(tasks),
        "chunks_size": settings["chunks_size"],
        "data_files_size_in_mb": settings["data_files_size_in_mb"],
        "video_files_size_in_mb": settings["video_files_size_in_mb"],
        "fps": spec.fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if spec.image_keys else None,
        "features": features,
        "robota": {
            "spec": spec.to_dict(),
            "episode_metadata_keys": list(dict.fromkeys(k for e in episodes for k in e["metadata"])),
            "video_codec": settings["video_codec"],
            "video_options": settings["video_options"],
        },
    }
