"""DatasetReader: read a LeRobot v3.0 dataset folder, robota's own or anyone's.

Frame rows come from the data parquet files, camera frames from the mp4 files, found by time:
an episode's `from_timestamp` in its video file plus the frame's `timestamp`, within 1e-4 s as
LeRobot does. Datasets written by robota also carry the full feature spec in
`info["robota"]["spec"]`; for other datasets `spec` is None and the feature lists come from
`info["features"]`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from robota.datasets.layout import (
    CODEBASE_VERSION,
    EPISODES_DIR,
    FRAME_INDEX_COLUMNS,
    INFO_PATH,
    STATS_PATH,
    SUPPORTED_VERSIONS,
    TASKS_PATH,
    TIMESTAMP_TOLERANCE_S,
    V21_VERSION,
    column_to_numpy,
    read_task_strings,
)
from robota.datasets.stats import from_json
from robota.datasets.staging import SETTINGS_FILE, STAGING_DIR
from robota.datasets.video import decode_at_timestamps, decode_image_bytes
from robota.errors import DatasetError, SpecError
from robota.spec import ACTION, Spec

logger = logging.getLogger(__name__)

IMAGE_DTYPES = ("video", "image")
# Data files kept in memory; episodes are usually read in order, so two cover a file boundary.
_OPEN_DATA_FILES = 2


def open_dataset(root: str | Path) -> DatasetReader:
    """Open a LeRobot v3.0 or v2.1 dataset folder for reading.

    A folder that contains an interrupted robota recording (a `.recording/` staging folder and no
    meta/info.json) is finalised first: its saved episodes become the dataset, and the episode
    that was being recorded is dropped with a logged warning that gives its frame count.

    Raises:
        DatasetError: The folder or its meta/info.json is missing, its format version is not
            supported, or its files are unreadable.
    """
    root = Path(root)
    if not (root / INFO_PATH).exists() and (root / STAGING_DIR / SETTINGS_FILE).exists():
        from robota.datasets.staging import recover_recording

        recover_recording(root)
    info = _load_info(root)
    if info["codebase_version"] == V21_VERSION:
        from robota.datasets.v21 import V21DatasetReader

        return V21DatasetReader(root, info=info)
    return DatasetReader(root, info=info)


class DatasetReader:
    """Read-only access to the episodes, metadata and statistics of a LeRobot v3.0 dataset.

    Nothing is written to the folder, so it may be read-only. `open_dataset` also opens v2.1
    datasets, through the subclass `robota.datasets.v21.V21DatasetReader`.

    Args:
        root: Dataset folder holding `meta/info.json`.
        info: The parsed meta/info.json, if already read.
    """

    expected_version = CODEBASE_VERSION

    def __init__(self, root: str | Path, *, info: dict[str, Any] | None = None):
        self.root = Path(root)
        self.info = _load_info(self.root) if info is None else info
        if self.info["codebase_version"] != self.expected_version:
            raise DatasetError(
                f"{self.root / INFO_PATH} has codebase_version {self.info['codebase_version']!r} "
                f"but {type(self).__name__} reads {self.expected_version}; open the folder with "
                "robota.datasets.open_dataset, which picks the reader for its version"
            )
        self.spec = self._load_spec()
        self.tasks = self._read_tasks()
        self._episodes = self._read_episode_table()
        self.stats = self._load_stats()
        self._data_tables: dict[str, pa.Table] = {}

    def _read(self, relative: str, load: Any) -> Any:
        path = self.root / relative
        if not path.exists():
            raise DatasetError(
                f"{path} is missing; the dataset folder {self.root} is incomplete. Copy the file "
                "again from the dataset's source"
            )
        try:
            return load(path)
        except (OSError, ValueError, pa.ArrowException) as error:
            raise DatasetError(
                f"cannot read {path}: {error}. The file is damaged or truncated: copy it again "
                f"from the dataset's source, and run `robota dataset validate {self.root}` to "
                "find other damaged files"
            ) from None

    def _read_tasks(self) -> list[str]:
        return self._read(TASKS_PATH, read_task_strings)

    def _load_stats(self) -> dict[str, dict[str, np.ndarray]]:
        path = self.root / STATS_PATH
        if not path.exists():
            return {}
        return from_json(self._read(STATS_PATH, lambda p: json.loads(p.read_text())))

    def _load_spec(self) -> Spec | None:
        saved = self.info.get("robota", {}).get("spec")
        if saved is None:
            logger.info(
                "%s has no robota spec in info.json; feature keys and shapes come from "
                "info['features'] and DatasetReader.spec is None", self.root,
            )
            return None
        try:
            return Spec.from_dict(saved)
        except SpecError as error:
            raise DatasetError(f"{self.root / INFO_PATH}: invalid robota spec: {error}") from None

    def _read_episode_table(self) -> list[dict[str, Any]]:
        folder = self.root / EPISODES_DIR
        files = sorted(folder.glob("*/*.parquet"))
        if not files:
            raise DatasetError(f"no episode files under {folder}; the dataset folder is incomplete")
        tables = []
        for path in files:
            tables.append(self._read(str(path.relative_to(self.root)), _read_episode_rows))
        table = pa.concat_tables(tables, promote_options="default")
        rows = sorted(table.to_pylist(), key=lambda row: row["episode_index"])
        if [row["episode_index"] for row in rows] != list(range(len(rows))):
            raise DatasetError(f"episode indices under {folder} are not 0..{len(rows) - 1}")
        return rows

    # ----------------------------------------------------------------------------- properties

    @property
    def fps(self) -> int:
        """Frame rate in Hz."""
        return int(self.info["fps"])

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return sum(self.episode_lengths)

    @property
    def episode_lengths(self) -> list[int]:
        """Frames per episode, in episode order."""
        return [int(row["length"]) for row in self._episodes]

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        """Feature descriptions from info.json: dtype, shape and names."""
        return self.info["features"]

    @property
    def image_keys(self) -> list[str]:
        """Camera features, stored as video or as encoded images in the parquet rows."""
        return [k for k, f in self.features.items() if f["dtype"] in IMAGE_DTYPES]

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] == "video"]

    @property
    def vector_keys(self) -> list[str]:
        """Numeric observation features that are not images, in spec or info.json order."""
        if self.spec is not None:
            return self.spec.vector_keys
        return [
            k for k, f in self.features.items()
            if k.startswith("observation.") and f["dtype"] in ("float32", "float64")
        ]

    @property
    def action_dim(self) -> int:
        return int(np.prod(self.features[ACTION]["shape"]))

    def image_shape(self, key: str) -> tuple[int, int, int]:
        """Return the (height, width, channels) of an image feature, whichever order info.json uses."""
        feature = self.features[key]
        shape = [int(s) for s in feature["shape"]]
        names = feature.get("names")
        if isinstance(names, list) and len(names) == 3:
            order = {str(n).rstrip("s"): i for i, n in enumerate(names)}
            if {"height", "width", "channel"} <= order.keys():
                return (shape[order["height"]], shape[order["width"]], shape[order["channel"]])
        if shape[0] in (1, 3) and shape[-1] not in (1, 3):  # (channels, height, width)
            return (shape[1], shape[2], shape[0])
        return (shape[0], shape[1], shape[2])

    # ----------------------------------------------------------------------------- episodes

    def _check_episode(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_episodes:
            raise DatasetError(
                f"episode {index} does not exist in {self.root}; it has episodes 0..{self.num_episodes - 1}"
            )
        return self._episodes[index]

    def episode_metadata(self, index: int) -> dict[str, Any]:
        """Return the episode's row of meta/episodes without statistics.

        It contains LeRobot's columns (`length`, `tasks`, data and video locations) and any metadata
        passed to `DatasetWriter.save_episode`, such as a seed, under its own key.
        """
        return dict(self._check_episode(index))

    def data_file(self, index: int) -> str:
        """Return the path of the data file holding an episode's frame rows, relative to root."""
        row = self._check_episode(index)
        return self.info["data_path"].format(
            chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
        )

    def video_file(self, index: int, key: str) -> tuple[str, float]:
        """Locate an episode's frames of one camera.

        Returns:
            The video file's path relative to root, and the time in seconds at which the
            episode's first frame is shown in it.
        """
        row = self._check_episode(index)
        relative = self.info["video_path"].format(
            video_key=key,
            chunk_index=int(row[f"videos/{key}/chunk_index"]),
            file_index=int(row[f"videos/{key}/file_index"]),
        )
        return relative, float(row[f"videos/{key}/from_timestamp"])

    def episode_rows(self, index: int) -> pa.Table:
        """Return the episode's frame rows from its data file, ordered by frame_index."""
        row = self._check_episode(index)
        relative = self.data_file(index)
        table = self._data_tables.get(relative)
        if table is None:
            table = self._read(relative, pq.read_table)
            if len(self._data_tables) >= _OPEN_DATA_FILES:
                self._data_tables.pop(next(iter(self._data_tables)))  # the least recently read
            self._data_tables[relative] = table
        rows = table.filter(pc.equal(table["episode_index"], index)).sort_by("frame_index")
        if rows.num_rows != int(row["length"]):
            raise DatasetError(
                f"episode {index} has {rows.num_rows} frame rows in data file {relative} but its "
                f"length in the episode table is {row['length']}; the dataset is inconsistent. "
                f"Run `robota dataset validate {self.root}` to list the problems"
            )
        return rows

    def episode(self, index: int) -> dict[str, np.ndarray | list[str]]:
        """Load every feature of one episode.

        Returns:
            Arrays with the episode's frames first: images uint8 (frames, height, width, 3),
            numeric features (frames, *shape), the index columns (frames,), and `task` as a list
            of strings.
        """
        rows = self.episode_rows(index)
        episode: dict[str, Any] = {}
        for name in rows.column_names:
            if name in self.image_keys:
                continue  # decoded below
            values = column_to_numpy(rows[name])
            feature = self.features.get(name)
            if feature is not None and name not in FRAME_INDEX_COLUMNS:
                values = values.reshape(len(values), *feature["shape"])
            episode[name] = values
        for key in self.image_keys:
            episode[key] = self.decode_images(index, key, rows=rows)
        episode["task"] = [self.tasks[i] for i in episode["task_index"]]
        return episode

    def decode_images(
        self, index: int, key: str, frame_indices: list[int] | None = None, *, rows: pa.Table | None = None
    ) -> np.ndarray:
        """Decode camera frames of one episode.

        Args:
            index: Episode index.
            key: Image feature key, for example `observation.images.wrist`.
            frame_indices: Frames to decode, ascending; all frames when None.
            rows: The episode's frame rows, if already loaded.

        Returns:
            uint8 array of shape (frames, height, width, 3).
        """
        if key not in self.image_keys:
            raise DatasetError(f"{key!r} is not an image feature; image features: {self.image_keys}")
        rows = self.episode_rows(index) if rows is None else rows
        if frame_indices is not None:
            rows = rows.take(pa.array(frame_indices, pa.int64()))
        if self.features[key]["dtype"] == "image":
            return np.stack([decode_image_bytes(item["bytes"]) for item in rows[key].to_pylist()])
        relative, from_s = self.video_file(index, key)
        path = self.root / relative
        if not path.exists():
            raise DatasetError(
                f"video file {path} of episode {index} is missing. Copy the dataset's videos/ "
                f"folder again from its source, or run `robota dataset validate {self.root}` to "
                "list every missing file"
            )
        timestamps = from_s + column_to_numpy(rows["timestamp"]).astype(np.float64)
        return decode_at_timestamps(path, timestamps, TIMESTAMP_TOLERANCE_S)


def _read_episode_rows(path: Path) -> pa.Table:
    """Read an episode table file without its flattened per-episode statistics."""
    names = [n for n in pq.read_schema(path).names if not n.startswith("stats/")]
    return pq.read_table(path, columns=names)


def _load_info(root: Path) -> dict[str, Any]:
    """Read and check meta/info.json, raising an error that names the fix when it is unusable."""
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {root} not found. Check the path, or record a dataset into it "
            "with `robota record`"
        )
    path = root / INFO_PATH
    if not path.exists():
        raise DatasetError(f"{path} is missing; {root} is not a LeRobot dataset folder")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from None
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise DatasetError(
            f"{path} has codebase_version {version!r}; robota reads "
            f"{' and '.join(SUPPORTED_VERSIONS)}. Convert the dataset to v3.0 with LeRobot's "
            "conversion scripts (lerobot.datasets.v30.convert_dataset_v21_to_v30 takes v2.1), "
            "or check that the file is a LeRobot dataset's info.json"
        )
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise DatasetError(f"{path} has no {key!r} entry; the dataset metadata is incomplete")
    return info
