"""Mixing datasets without torch: which feature specs mix, and the samplers that draw by weight.

`robota.datasets.torch_loader.ChunkMixture` builds on these. The samplers are plain iterables
with `__len__`, which is all that `torch.utils.data.DataLoader` needs of a sampler or a batch
sampler.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from robota.errors import DatasetError
from robota.spec import Spec, is_joint_indexed


def spec_difference(first: Spec, second: Spec) -> str | None:
    """Return the first entry in which two feature specs differ, or None if they are equal.

    The entry is `robot`, `fps`, or a feature key (one that only one spec has, or whose dtype,
    shape, names, unit or frame differ). Feature descriptions are not compared.
    """
    if first.robot != second.robot:
        return "robot"
    return _feature_difference(first, second, robot_indexed=False)


def embodiment_difference(first: Spec, second: Spec) -> str | None:
    """Return the first entry in which two specs differ beyond their robots, or None.

    The robot may differ, and so may the width and names of each feature indexed by its arm
    joints (the joint state, joint velocities and the action, see `robota.spec.is_joint_indexed`).
    Such a feature must still be joint-indexed in both specs, with the same dtype, unit, frame
    and gripper element. Everything else compares as in `spec_difference`.
    """
    return _feature_difference(first, second, robot_indexed=True)


def _feature_difference(first: Spec, second: Spec, *, robot_indexed: bool) -> str | None:
    if first.fps != second.fps:
        return "fps"
    for key in (*first.features, *second.features):
        if key not in first.features or key not in second.features:
            return key
        a, b = first.features[key], second.features[key]
        if robot_indexed and is_joint_indexed(a, first.robot):
            if not is_joint_indexed(b, second.robot):
                return key
            a_gripper = len(a.names) > first.robot.num_joints
            b_gripper = len(b.names) > second.robot.num_joints
            if (a.dtype, a.unit, a.frame, a_gripper) != (b.dtype, b.unit, b.frame, b_gripper):
                return key
        elif (a.dtype, a.shape, a.names, a.unit, a.frame) != (b.dtype, b.shape, b.names, b.unit, b.frame):
            return key
    return None


def mixture_probabilities(sizes: Sequence[int], weights: Sequence[float]) -> np.ndarray:
    """Check a mixture's dataset sizes and weights; return the weights as probabilities."""
    if len(sizes) != len(weights) or not sizes:
        raise DatasetError(f"need one weight per dataset, got {len(weights)} for {len(sizes)} datasets")
    if min(sizes) < 1:
        raise DatasetError(f"every dataset of a mixture needs samples, got sizes {list(sizes)}")
    probabilities = np.asarray(weights, dtype=np.float64)
    if not (np.all(np.isfinite(probabilities)) and np.all(probabilities > 0)):
        raise DatasetError(f"mixture weights must be positive and finite, got {list(weights)}")
    return probabilities / probabilities.sum()


def shuffled_cycles(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """Return `count` indices below `size`: whole random permutations one after another, cut."""
    cycles = -(-count // size)  # ceil: whole permutations needed
    return np.concatenate([rng.permutation(size) for _ in range(cycles)])[:count]


class MixtureSampler:
    """Indices into a concatenation of datasets that draw dataset d with probability `weights[d]`.

    Each draw picks a dataset by its weight, then the dataset's next sample in a random order, so
    a dataset repeats a sample only after it has handed out all of them. Epoch e on rank r draws
    from numpy's generator seeded with `(seed, e, r)`, so a resumed epoch repeats its draws
    exactly and the ranks draw independently of each other.

    Args:
        sizes: Samples of each dataset, in concatenation order.
        weights: Sampling weight of each dataset; normalised to probabilities here.
        seed: Seed of the draws.
        num_samples: Draws per epoch on this rank.
        rank: This process's rank.

    Raises:
        DatasetError: A dataset is empty, a weight is not positive, or the lengths differ.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float],
        *,
        seed: int,
        num_samples: int,
        rank: int = 0,
    ):
        self.probabilities = mixture_probabilities(sizes, weights)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.seed, self.num_samples, self.rank = int(seed), int(num_samples), int(rank)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the draws of `epoch` and skip the first `skip` of them."""
        self.epoch, self.skip = int(epoch), int(skip)

    def draw(self) -> np.ndarray:
        """Return all indices of the current epoch, skipped ones included, as int64 `(num_samples,)`."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        choices = rng.choice(len(self.sizes), size=self.num_samples, p=self.probabilities)
        indices = np.empty(self.num_samples, dtype=np.int64)
        for dataset, size in enumerate(self.sizes):
            positions = np.flatnonzero(choices == dataset)
            if positions.size == 0:
                continue
            indices[positions] = self.offsets[dataset] + shuffled_cycles(rng, size, positions.size)
        return indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw()[self.skip :].tolist())

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class MixtureBatchSampler:
    """Batches of a concatenation of datasets, each batch from one dataset drawn by its weight.

    Each batch picks dataset d with probability `weights[d]` and then takes `batch_size` of its
    samples in a random order, so every batch comes from one dataset (and one robot), and the
    weights hold in expectation over batches. A dataset repeats a sample only after it has
    handed out all of them. Epoch e on rank r draws from numpy's generator seeded with
    `(seed, e, r)`, so a resumed epoch repeats its batches and the ranks draw independently.

    Args:
        sizes: Samples of each dataset, in concatenation order.
        weights: Sampling weight of each dataset; normalised to probabilities here.
        batch_size: Samples per batch.
        seed: Seed of the draws.
        num_batches: Batches per epoch on this rank.
        rank: This process's rank.

    Raises:
        DatasetError: A dataset is empty, a weight is not positive, the lengths differ, or
            `batch_size` or `num_batches` is below 1.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float],
        *,
        batch_size: int,
        seed: int,
        num_batches: int,
        rank: int = 0,
    ):
        if batch_size < 1 or num_batches < 1:
            raise DatasetError(
                f"batch_size and num_batches must be at least 1, got {batch_size} and {num_batches}"
            )
        self.probabilities = mixture_probabilities(sizes, weights)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.batch_size, self.num_batches = int(batch_size), int(num_batches)
        self.seed, self.rank = int(seed), int(rank)
        self.epoch, self.skip = 0, 0
        self._drawn: tuple[int, np.ndarray, np.ndarray] | None = None

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the draws of `epoch` and skip its first `skip` batches."""
        self.epoch, self.skip = int(epoch), int(skip)

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the current epoch's batches, skipped ones included.

        Returns:
            int64 indices `(num_batches, batch_size)` and the dataset of each batch, int64
            `(num_batches,)`.
        """
        if self._drawn is not None and self._drawn[0] == self.epoch:
            return self._drawn[1], self._drawn[2]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        datasets = rng.choice(len(self.sizes), size=self.num_batches, p=self.probabilities)
        indices = np.empty((self.num_batches, self.batch_size), dtype=np.int64)
        for dataset, size in enumerate(self.sizes):
            rows = np.flatnonzero(datasets == dataset)
            if rows.size == 0:
                continue
            order = shuffled_cycles(rng, size, rows.size * self.batch_size)
            # (rows * batch_size,) -> (rows, batch_size)
            indices[rows] = self.offsets[dataset] + order.reshape(rows.size, self.batch_size)
        self._drawn = (self.epoch, indices, datasets)
        return indices, datasets

    def dataset_of_batch(self, batch: int) -> int:
        """Return the dataset that batch `batch` of the current epoch (counted from 0) comes from."""
        return int(self.draw()[1][batch])

    def __iter__(self) -> Iterator[list[int]]:
        indices, _ = self.draw()
        return iter(indices[self.skip :].tolist())

    def __len__(self) -> int:
        return max(0, self.num_batches - self.skip)
