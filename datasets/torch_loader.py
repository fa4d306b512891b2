"""ChunkDataset: the torch training view of a dataset, with a cache of decoded frames.

This is the only module of `robota.datasets` that imports torch. Camera frames are decoded once
per dataset into uint8 `.npy` files, one per episode and camera, and read back memory-mapped, so
training never decodes video per sample. The cache lives outside the dataset folder (which may
be read-only), keyed by the dataset's content fingerprint:

    <cache_dir>/<fingerprint>/<image key>/episode_000000.npy     uint8 (frames, height, width, 3)

`cache_dir` defaults to `$ROBOTA_CACHE_DIR/frames`, or `~/.cache/robota/frames` when the
variable is unset. The fingerprint itself is recorded in `<cache_dir>/fingerprints/` and reused
while no dataset file changed (see `robota.datasets.summary.cached_fingerprint`), so
constructing a ChunkDataset again does not read the whole dataset.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from robota.datasets.reader import DatasetReader, open_dataset
from robota.datasets.layout import column_to_numpy
from robota.datasets.summary import cached_fingerprint
from robota.errors import DatasetError
from robota.spec import ACTION, TASK_TOKENS, encode_instruction

logger = logging.getLogger(__name__)

ACTION_IS_PAD = "action_is_pad"
OBSERVATION_IS_PAD = "observation_is_pad"


def default_cache_dir() -> Path:
    """Return the parent folder of frame caches: `$ROBOTA_CACHE_DIR/frames` or `~/.cache/robota/frames`."""
    base = os.environ.get("ROBOTA_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "robota") / "frames"


class ChunkDataset(Dataset):
    """Every frame of the selected episodes, with the chunk of actions that starts there.

    Item i is a dict of tensors:

    | key | dtype | shape |
    |---|---|---|
    | each image key | uint8 | (height, width, 3) |
    | each vector observation key | float32 | (dim,) |
    | `task_tokens` | int64 | (64,), from `robota.spec.encode_instruction` |
    | `action` | float32 | (chunk_size, action_dim), actions t .. t + chunk_size - 1 |
    | `action_is_pad` | bool | (chunk_size,), True past the episode's last frame |

    Past the episode's end the chunk repeats the last action and marks it as padding.

    With `n_obs_steps` > 1 each item also carries the observation history, oldest first:

    | key | dtype | shape |
    |---|---|---|
    | each image key | uint8 | (n_obs_steps, height, width, 3): frames t − n_obs_steps + 1 .. t |
    | each vector observation key | float32 | (n_obs_steps, dim) |
    | `observation_is_pad` | bool | (n_obs_steps,), True before the episode's first frame |

    Before the episode's start the history repeats the first frame and marks it as padding.
    With `n_obs_steps` = 1 the items are exactly as in the first table.

    Attributes:
        spec: The dataset's feature spec, or None for a dataset that robota did not write.
        stats: The dataset's statistics, {feature: {stat: array}}.
        fingerprint: The dataset's content hash, `robota.datasets.fingerprint(root)`.
        cache_path: Folder of this dataset's decoded frames.

    Args:
        root_or_reader: Dataset folder or an open `DatasetReader`.
        chunk_size: Actions per item.
        cache_dir: Folder for decoded-frame caches; see the module docstring for the default.
            It must lie outside the dataset folder.
        episodes: Episode indices to use; all when None.
        n_obs_steps: Observation frames per item, the current one included.

    Raises:
        DatasetError: Invalid chunk size, history length or episode index, the cache folder
            is inside the dataset, or the dataset has no `action` feature.
    """

    def __init__(
        self,
        root_or_reader: str | Path | DatasetReader,
        chunk_size: int,
        *,
        cache_dir: str | Path | None = None,
        episodes: Sequence[int] | None = None,
        n_obs_steps: int = 1,
    ):
        reader = root_or_reader if isinstance(root_or_reader, DatasetReader) else open_dataset(root_or_reader)
        if chunk_size < 1:
            raise DatasetError(f"chunk_size must be at least 1, got {chunk_size}")
        if n_obs_steps < 1:
            raise DatasetError(f"n_obs_steps must be at least 1 (the current frame), got {n_obs_steps}")
        if ACTION not in reader.features:
            raise DatasetError(f"{reader.root} has no {ACTION!r} feature; features: {list(reader.features)}")
        self.chunk_size = int(chunk_size)
        self.n_obs_steps = int(n_obs_steps)
        self.spec = reader.spec
        self.stats = reader.stats
        self.image_keys = reader.image_keys
        self.vector_keys = reader.vector_keys
        self.episodes = list(range(reader.num_episodes)) if episodes is None else [int(e) for e in episodes]
        for index in self.episodes:
            if not 0 <= index < reader.num_episodes:
                raise DatasetError(
                    f"episode {index} does not exist in {reader.root}; it has episodes "
                    f"0..{reader.num_episodes - 1}"
                )

        self._load_rows(reader)
        self.root = reader.root
        cache_base = _resolve_cache(reader.root, cache_dir)
        self.fingerprint = cached_fingerprint(reader.root, cache_base)
        self.cache_path = cache_base / self.fingerprint
        self._build_cache(reader)
        self._memmaps: dict[tuple[int, str], np.ndarray] = {}

    def _load_rows(self, reader: DatasetReader) -> None:
        """Load the numeric columns of the selected episodes into arrays over all their frames."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (*self.vector_keys, ACTION, "task_index")}
        lengths = []
        for index in self.episodes:
            rows = reader.episode_rows(index)
            lengths.append(rows.num_rows)
            for key in parts:
                values = column_to_numpy(rows[key])
                parts[key].append(values.reshape(rows.num_rows, -1) if key != "task_index" else values)
        self._columns = {k: np.concatenate(v) for k, v in parts.items()}  # (frames, dim)
        for key in (*self.vector_keys, ACTION):
            self._columns[key] = self._columns[key].astype(np.float32)
        self._task_tokens = np.stack([encode_instruction(task) for task in reader.tasks])  # (tasks, 64)
        self._lengths = np.asarray(lengths, dtype=np.int64)
        self._ends = np.cumsum(self._lengths)  # exclusive end of each episode in the flat arrays
        self._starts = self._ends - self._lengths

    def _build_cache(self, reader: DatasetReader) -> None:
        """Decode each selected episode's camera frames once into the cache, atomically per file."""
        for position, index in enumerate(self.episodes):
            for key in self.image_keys:
                path = self._cache_file(position, key)
                expected = (int(self._lengths[position]), *reader.image_shape(key))
                if _cached_shape(path) == expected:
                    continue
                frames = reader.decode_images(index, key)  # (frames, height, width, 3)
                if frames.shape != expected:
                    raise DatasetError(
                        f"episode {index} {key!r} decoded to shape {frames.shape}, but the "
                        f"dataset declares {expected}; its info.json does not match the video"
                    )
                _save_npy_atomic(path, frames)
                logger.debug("cached %d frames of %s episode %d in %s", len(frames), key, index, path)

    def _cache_file(self, position: int, key: str) -> Path:
        return self.cache_path / key / f"episode_{self.episodes[position]:06d}.npy"

    def _frames(self, position: int, key: str) -> np.ndarray:
        handle = self._memmaps.get((position, key))
        if handle is None:
            handle = np.load(self._cache_file(position, key), mmap_mode="r")
            self._memmaps[(position, key)] = handle
        return handle

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} is out of range for {len(self)} frames")
        position = int(np.searchsorted(self._ends, i, side="right"))
        start, end = int(self._starts[position]), int(self._ends[position])
        item: dict[str, torch.Tensor] = {}
        if self.n_obs_steps == 1:
            for key in self.image_keys:
                item[key] = torch.from_numpy(np.array(self._frames(position, key)[i - start]))
            for key in self.vector_keys:
                item[key] = torch.from_numpy(self._columns[key][i])
        else:
            history = np.arange(i - self.n_obs_steps + 1, i + 1)
            clamped = np.maximum(history, start)
            for key in self.image_keys:
                frames = self._frames(position, key)[clamped - start]  # (n_obs, height, width, 3)
                item[key] = torch.from_numpy(np.ascontiguousarray(frames))
            for key in self.vector_keys:
                item[key] = torch.from_numpy(self._columns[key][clamped])  # (n_obs, dim)
            item[OBSERVATION_IS_PAD] = torch.from_numpy(history < start)
        item[TASK_TOKENS] = torch.from_numpy(self._task_tokens[self._columns["task_index"][i]])

        steps = np.arange(i, i + self.chunk_size)
        item[ACTION] = torch.from_numpy(self._columns[ACTION][np.minimum(steps, end - 1)])  # (chunk, action_dim)
        item[ACTION_IS_PAD] = torch.from_numpy(steps >= end)
        return item

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps would be pickled as their whole content; workers reopen them lazily.
        state = dict(self.__dict__)
        state["_memmaps"] = {}
        return state


def _resolve_cache(root: Path, cache_dir: str | Path | None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = base.expanduser().resolve()
    if base.is_relative_to(root.resolve()):
        raise DatasetError(
            f"cache folder {base} is inside the dataset folder {root}; choose a cache_dir "
            "outside it, because the dataset folder may be read-only or shared"
        )
    return base


def _cached_shape(path: Path) -> tuple[int, ...] | None:
    """Return the shape of a cached frame file, or None if it is missing or unreadable."""
    try:
        return tuple(np.load(path, mmap_mode="r").shape)
    except (OSError, ValueError):
        return None


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write an .npy file through a temporary file and a rename, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, array)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
