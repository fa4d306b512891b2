"""Paths, constants and small file helpers of the LeRobot v3.0 dataset layout.

A dataset folder contains:

    meta/info.json                                  format version, fps, counts, features
    meta/stats.json                                 per-feature statistics over every frame
    meta/tasks.parquet                              one row per task string
    meta/episodes/chunk-000/file-000.parquet        one row per episode
    data/chunk-XXX/file-YYY.parquet                 one row per frame, many episodes per file
    videos/<video_key>/chunk-XXX/file-YYY.mp4       many episodes per file, found by timestamp
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"
V21_VERSION = "v2.1"
SUPPORTED_VERSIONS = (CODEBASE_VERSION, V21_VERSION)

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"

# LeRobot's defaults: a new file starts past these sizes, and a chunk folder contains at most this
# many files. Some LeRobot releases use 500 MB for video files.
DEFAULT_CHUNKS_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_MB = 100
DEFAULT_VIDEO_FILE_SIZE_MB = 200

# Columns every frame row carries besides the features.
FRAME_INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")

# Episode-row columns that LeRobot defines; user metadata may not reuse these names or prefixes.
EPISODE_COLUMNS = (
    "episode_index",
    "tasks",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
    "meta/episodes/chunk_index",
    "meta/episodes/file_index",
)
RESERVED_PREFIXES = ("stats/", "videos/", "data/", "meta/")

# LeRobot finds a video frame within this many seconds of its expected timestamp.
TIMESTAMP_TOLERANCE_S = 1e-4

STAT_NAMES = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def chunk_and_file(file_number: int, chunks_size: int) -> tuple[int, int]:
    """Map the n-th file of a kind to its (chunk_index, file_index)."""
    return file_number // chunks_size, file_number % chunks_size


def fsync_file(path: Path) -> None:
    """Flush a written file to disk so a crash after this call keeps it whole."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename, so readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=4) + "\n").encode())


def temporary_path(path: Path) -> Path:
    """Return a hidden sibling name for writing `path` before renaming it into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_parquet(path: Path, table: pa.Table, *, row_group_size: int | None = None) -> None:
    """Write a parquet file through a temporary file and a rename, flushed to disk.

    A crash while writing leaves a hidden temporary file, never a parquet file without its footer.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        pq.write_table(table, temporary, row_group_size=row_group_size)
        fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def tasks_table(tasks: list[str]) -> pa.Table:
    """Build meta/tasks.parquet: a `task_index` column and the task string as the pandas index.

    LeRobot reads this file with `pandas.read_parquet` and expects the task strings as the index,
    so the schema carries the pandas metadata that marks the `task` column as the index.
    """
    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "task": pa.array(tasks, pa.string()),
        }
    )
    pandas_metadata = {
        "index_columns": ["task"],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
             "metadata": {"encoding": "UTF-8"}}
        ],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_metadata).encode()})


def read_task_strings(path: Path) -> list[str]:
    """Read meta/tasks.parquet as a list of task strings ordered by task_index.

    The task string is the pandas index, stored as a column named by the pandas metadata
    (`task` in robota's files, `__index_level_0__` in files that pandas wrote without a name).
    """
    table = pq.read_table(path)
    column = None
    metadata = table.schema.metadata or {}
    if b"pandas" in metadata:
        index_columns = json.loads(metadata[b"pandas"]).get("index_columns", [])
        column = next((c for c in index_columns if isinstance(c, str)), None)
    if column is None:
        column = "task" if "task" in table.column_names else None
    if column is None or "task_index" not in table.column_names:
        raise ValueError(f"expected columns 'task_index' and the task string, got {table.column_names}")
    pairs = sorted(zip(table["task_index"].to_pylist(), table[column].to_pylist()))
    return [task for _, task in pairs]


def column_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Convert a parquet column to numpy: scalars to (rows,), lists to (rows, length)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        rows = len(column)
        values = column.flatten()
        while pa.types.is_fixed_size_list(values.type) or pa.types.is_list(values.type):
            values = values.flatten()
        flat = values.to_numpy(zero_copy_only=False)
        return flat.reshape(rows, -1) if rows else flat.reshape(0, 0)
    return column.to_numpy(zero_copy_only=False)
