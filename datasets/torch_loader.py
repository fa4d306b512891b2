"""ChunkDataset: the torch training view of a dataset, with a cache of decoded frames.

`ChunkMixture` joins several ChunkDatasets, of one robot or of several, and pools their
statistics per robot. A `MixtureSampler` draws each sample's dataset by weight; a
`MixtureBatchSampler` draws one dataset per batch, so that each batch holds one robot.

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

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from robota.datasets.reader import DatasetReader, open_dataset
from robota.datasets.layout import column_to_numpy
from robota.datasets.mixing import (
    MixtureBatchSampler,
    MixtureSampler,
    embodiment_difference,
    spec_difference,
)
from robota.datasets.stats import pool_stats
from robota.datasets.summary import cached_fingerprint
from robota.errors import DatasetError, SpecError
from robota.spec import ACTION, TASK_TOKENS, Spec, encode_instruction

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


class ChunkMixture(ConcatDataset):
    """Several chunk datasets, concatenated and sampled by weight, of one robot or of several.

    Items are those of the parts, in concatenation order; `sampler` draws them by weight, and
    `batch_sampler` draws whole batches of one part by weight. Parts of one robot must have
    equal feature specs. Parts of different robots may differ only in the robot and in the
    features indexed by its joints (see `embodiment_difference`). Train such a mix with
    `batch_sampler`, because a batch can only stack one robot's action width. The first part's
    robot is the primary robot.

    Attributes:
        spec: The primary robot's feature spec (None where the parts record no spec).
        stats: The primary robot's statistics: those of its parts, pooled with
            `robota.datasets.stats.pool_stats` and weighted by each part's frame count, not by
            the sampling weights. Where the parts record no spec, all parts pooled.
        embodiments: Robot name to `(spec, stats)`, stats pooled over that robot's parts; the
            primary robot first, the others in the order they first appear. Empty where the
            parts record no spec.
        robot_names: The keys of `embodiments`, in order.
        part_robots: The robot name of each part, or None where the parts record no spec.
        weights: Normalised sampling probability of each part.
        names: A name per part for messages and provenance, such as its folder.
        fingerprint: sha256 over the parts' fingerprints and weights, so another mix of the same
            data has another fingerprint.

    Args:
        parts: Datasets with `spec` and `stats` attributes, such as `ChunkDataset`s.
        weights: Sampling weight of each part, normalised here; None weighs each part by its
            number of samples, which samples the concatenation uniformly.
        names: A name per part; the parts' `root` attributes when None.

    Raises:
        SpecError: Two parts of one robot have different feature specs, or two parts of
            different robots differ in more than the robot; the message names both parts, their
            robots and the first differing entry.
        DatasetError: A part is empty, or a weight is not positive.
    """

    def __init__(
        self,
        parts: Sequence[Dataset],
        weights: Sequence[float] | None = None,
        *,
        names: Sequence[str] | None = None,
    ):
        super().__init__(parts)
        self.names = [str(n) for n in names] if names is not None else [str(getattr(p, "root", i)) for i, p in enumerate(parts)]
        sizes = [len(part) for part in parts]
        for name, size in zip(self.names, sizes, strict=True):
            if size == 0:
                raise DatasetError(f"dataset {name} has no samples; record or convert episodes first")
        self.part_robots = self._check_specs(parts)
        raw = np.asarray(sizes if weights is None else weights, dtype=np.float64)
        if len(raw) != len(parts) or not (np.all(np.isfinite(raw)) and np.all(raw > 0)):
            raise DatasetError(
                f"mixture weights must be one positive number per dataset ({len(parts)}), got {list(raw)}"
            )
        self.weights = (raw / raw.sum()).tolist()
        self.embodiments = self._pool_by_robot(parts)
        self.robot_names = tuple(self.embodiments)
        if self.embodiments:
            self.spec, self.stats = self.embodiments[self.robot_names[0]]
        else:
            self.spec = None
            self.stats = pool_stats([(part.stats, _frame_count(part)) for part in parts])
        self.fingerprint = _mixture_fingerprint(parts, self.weights)

    def _check_specs(self, parts: Sequence[Dataset]) -> list[str | None]:
        """Check that the parts can be mixed; return each part's robot name."""
        first = parts[0].spec
        # Robot name -> (the name and spec of its first part).
        references: dict[str, tuple[str, Spec]] = {}
        for name, part in zip(self.names, parts, strict=True):
            spec = part.spec
            if first is None or spec is None:
                if first is not spec:
                    raise SpecError(
                        f"{self.names[0]} and {name} cannot be mixed: only one of them records a "
                        "feature spec; convert both with robota"
                    )
                continue
            robot = spec.robot.name
            if robot in references:
                reference_name, reference = references[robot]
                difference = spec_difference(reference, spec)
                advice = "mix only datasets whose feature specs are equal for each robot"
            else:
                reference_name, reference = self.names[0], first
                difference = embodiment_difference(first, spec)
                advice = (
                    "datasets of different robots may differ only in the robot and its "
                    "joint-indexed features (joint state, joint velocities, action), so record "
                    "them with the same cameras, image sizes, control rate and other features"
                )
                references[robot] = (name, spec)
            if difference is not None:
                raise SpecError(
                    f"{reference_name} (robot {reference.robot.name}) and {name} (robot "
                    f"{robot}) cannot be mixed: their feature specs differ in {difference!r}; "
                    f"{advice}"
                )
        return [part.spec.robot.name if part.spec is not None else None for part in parts]

    def _pool_by_robot(self, parts: Sequence[Dataset]) -> dict[str, tuple[Spec, dict[str, Any]]]:
        embodiments: dict[str, tuple[Spec, dict[str, Any]]] = {}
        for robot in dict.fromkeys(self.part_robots):
            if robot is None:
                continue
            members = [part for part, own in zip(parts, self.part_robots, strict=True) if own == robot]
            stats = pool_stats([(part.stats, _frame_count(part)) for part in members])
            embodiments[robot] = (members[0].spec, stats)
        return embodiments

    def sampler(self, *, seed: int, num_samples: int, rank: int = 0) -> MixtureSampler:
        """Return a sampler over this concatenation that draws the parts by `weights`."""
        sizes = [len(part) for part in self.datasets]
        return MixtureSampler(sizes, self.weights, seed=seed, num_samples=num_samples, rank=rank)

    def batch_sampler(
        self, *, batch_size: int, seed: int, num_batches: int, rank: int = 0
    ) -> MixtureBatchSampler:
        """Return a batch sampler whose batches each come from one part, drawn by `weights`."""
        sizes = [len(part) for part in self.datasets]
        return MixtureBatchSampler(
            sizes, self.weights, batch_size=batch_size, seed=seed, num_batches=num_batches, rank=rank
        )

    def provenance(self) -> list[dict[str, Any]]:
        """Return path, weight, fingerprint, robot and samples of each part, for checkpoints."""
        return [
            {
                "path": name,
                "weight": weight,
                "fingerprint": getattr(part, "fingerprint", None),
                "robot": robot,
                "samples": len(part),
            }
            for name, weight, part, robot in zip(
                self.names, self.weights, self.datasets, self.part_robots, strict=True
            )
        ]


def _frame_count(part: Dataset) -> int:
    """Return the frames a part's statistics were computed over, or its sample count."""
    count = part.stats.get(ACTION, {}).get("count")
    if count is None:
        return len(part)
    return int(np.asarray(count).reshape(-1)[0])


def _mixture_fingerprint(parts: Sequence[Dataset], weights: Sequence[float]) -> str:
    members = [[getattr(part, "fingerprint", None), round(weight, 12)] for part, weight in zip(parts, weights, strict=True)]
    return hashlib.sha256(json.dumps(members).encode()).hexdigest()
