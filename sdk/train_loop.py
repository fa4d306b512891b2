"""The pieces of the training loop: resumable data order, mixed precision, schedule, average.

Data order: each epoch is a permutation drawn by `DistributedSampler` from `seed + epoch`
(`set_epoch`), split across processes. A mix of datasets (`ChunkMixture`) instead draws each
sample's dataset by weight, from a generator seeded by seed, epoch and rank (`MixtureSampler`).
A mix of several robots draws one dataset per batch (`MixtureBatchSampler`), so every batch
holds one robot, and the batch gets a `robot` entry: int64 `(batch,)`, the index of its robot in
the policy's `robot_names`. A `BatchStream` counts the batches it handed out in the epoch, so a
resumed run skips exactly those and gets the same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from robota.datasets.torch_loader import ChunkMixture, MixtureSampler
from robota.errors import RobotaError, SpecError
from robota.policies.flow_robots import ROBOT
from robota.spec import ACTION
from robota.train_dist import DistributedContext


class ResumableSampler(Sampler[int]):
    """A `DistributedSampler` whose epoch can start after a number of samples.

    Args:
        dataset: Samples to draw from.
        context: This process's rank and the number of processes.
        seed: Seed of the permutations; epoch e uses `seed + e`.
        drop_last: Drop the tail that does not split evenly across processes.
    """

    def __init__(self, dataset: Dataset, context: DistributedContext, seed: int, drop_last: bool):
        self.inner = DistributedSampler(
            dataset,
            num_replicas=context.world_size,
            rank=context.rank,
            shuffle=True,
            seed=seed,
            drop_last=drop_last,
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the permutation of `epoch` and skip its first `skip` samples of this rank."""
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


class BatchStream:
    """Endless shuffled batches on the training device, resumable at any batch.

    Args:
        dataset: Training samples; a `ChunkMixture` of several robots is drawn one robot per
            batch.
        context: This process's rank, the number of processes and the device.
        config: The run's TrainConfig.
        robot_names: The policy's robots (`FlowMatchingPolicy.robot_names`); needed for a mix
            of several robots, whose batches carry their robot's index in this sequence.

    Attributes:
        epoch: Epoch of the next batch.
        batches_done: Batches of `epoch` already handed out.

    Raises:
        RobotaError: The dataset has no samples, or fewer than the processes.
        SpecError: A robot of the mix is not one of `robot_names`.
    """

    def __init__(
        self,
        dataset: Dataset,
        context: DistributedContext,
        config: Any,
        robot_names: Sequence[str] | None = None,
    ):
        if len(dataset) == 0:
            raise RobotaError(
                f"training dataset {config.dataset} has no samples; record or convert episodes first"
            )
        per_rank = len(dataset) // context.world_size
        if per_rank == 0:
            raise RobotaError(
                f"training dataset {config.dataset} has {len(dataset)} samples, fewer than the "
                f"{context.world_size} processes; use fewer processes or more episodes"
            )
        self.generator = torch.Generator()
        self.seed = config.seed
        loading = dict(
            num_workers=config.num_workers,
            generator=self.generator,
            worker_init_fn=_seed_worker,
            persistent_workers=config.num_workers > 0,
            pin_memory=context.device.type == "cuda",
        )
        # Index in `robot_names` of each part's robot, for a mix of several robots only.
        self.part_robot_ids = part_robot_ids(dataset, robot_names)
        if self.part_robot_ids is None:
            self.sampler = _make_sampler(dataset, context, config.seed, per_rank)
            self.skip_per_batch = config.batch_size  # The sampler skips samples.
            self.loader = DataLoader(
                dataset,
                batch_size=config.batch_size,
                sampler=self.sampler,
                drop_last=per_rank >= config.batch_size,
                **loading,
            )
        else:
            self.sampler = dataset.batch_sampler(
                batch_size=config.batch_size,
                seed=config.seed,
                num_batches=max(1, per_rank // config.batch_size),
                rank=context.rank,
            )
            self.skip_per_batch = 1  # The batch sampler skips batches.
            self.loader = DataLoader(dataset, batch_sampler=self.sampler, **loading)
        self.device = context.device
        self.epoch = 0
        self.batches_done = 0
        self._iterator: Iterator[dict[str, torch.Tensor]] | None = None

    def seek(self, epoch: int, batches_done: int) -> None:
        """Continue at batch `batches_done` of `epoch`."""
        self.epoch, self.batches_done = epoch, batches_done
        self._iterator = None

    def next(self) -> dict[str, torch.Tensor]:
        """Return the next batch, starting a new epoch where one ends."""
        for _ in range(2):
            if self._iterator is None:
                self.sampler.set_epoch(self.epoch, skip=self.batches_done * self.skip_per_batch)
                # The loader draws its workers' base seed from this generator.
                self.generator.manual_seed(self.seed + self.epoch)
                self._iterator = iter(self.loader)
            batch = next(self._iterator, None)
            if batch is not None:
                if self.part_robot_ids is not None:
                    # The loader keeps the sampler's order, so this is the batch's own dataset.
                    part = self.sampler.dataset_of_batch(self.batches_done)
                    rows = len(batch[ACTION])
                    batch[ROBOT] = torch.full((rows,), self.part_robot_ids[part], dtype=torch.int64)
                self.batches_done += 1
                return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            self._iterator = None
            self.epoch, self.batches_done = self.epoch + 1, 0
        raise RobotaError("the training data loader yielded no batch in a whole epoch")


def part_robot_ids(dataset: Dataset, robot_names: Sequence[str] | None) -> list[int] | None:
    """Return the index in `robot_names` of each part's robot, or None unless the mix has several.

    Raises:
        SpecError: A robot of the mix is not one of `robot_names`.
    """
    if not isinstance(dataset, ChunkMixture) or len(dataset.robot_names) < 2:
        return None
    names = list(robot_names or ())
    missing = [robot for robot in dataset.robot_names if robot not in names]
    if missing:
        raise SpecError(
            f"the training mix has robots {list(dataset.robot_names)}, but the policy drives "
            f"{names}; train a flow policy on the mix, or fine-tune a checkpoint that has "
            f"robots {missing}"
        )
    return [names.index(robot) for robot in dataset.part_robots]


def _make_sampler(
    dataset: Dataset, context: DistributedContext, seed: int, per_rank: int
) -> ResumableSampler | MixtureSampler:
    """Draw a mixture's datasets by weight, and shuffle any other dataset once per epoch."""
    if isinstance(dataset, ChunkMixture):
        return dataset.sampler(seed=seed, num_samples=per_rank, rank=context.rank)
    return ResumableSampler(dataset, context, seed, drop_last=True)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # DataLoader seeds each worker's torch from the generator.
    random.seed(seed)
    np.random.seed(seed)


def validation_loss(
    policy: torch.nn.Module,
    dataset: Dataset,
    context: DistributedContext,
    batch_size: int,
    autocast: contextlib.AbstractContextManager | Any,
) -> float:
    """Return the mean loss over the validation samples, each rank taking every n-th sample.

    A `ChunkMixture` of several robots is batched one dataset at a time, each batch with its
    `robot` entry.
    """
    was_training = policy.training
    policy.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in _validation_batches(policy, dataset, context, batch_size):
            batch = {k: v.to(context.device) for k, v in batch.items()}
            with autocast():
                loss = policy(batch)["loss"]
            size = len(next(iter(batch.values())))
            total += float(loss) * size
            count += size
    policy.train(was_training)
    from robota.train_dist import sum_across

    total, count = sum_across(context, [total, float(count)])
    return total / max(count, 1.0)


def _validation_batches(
    policy: torch.nn.Module, dataset: Dataset, context: DistributedContext, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    robot_ids = part_robot_ids(dataset, getattr(policy, "robot_names", None))
    parts = [dataset] if robot_ids is None else dataset.datasets
    for position, part in enumerate(parts):
        shard = Subset(part, range(context.rank, len(part), context.world_size))
        loader = DataLoader(shard, batch_size=batch_size, generator=torch.Generator().manual_seed(0))
        for batch in loader:
            if robot_ids is not None:
                rows = len(batch[ACTION])
                batch[ROBOT] = torch.full((rows,), robot_ids[position], dtype=torch.int64)
            yield batch


class Precision:
    """Autocast and loss scaling for one device and `mixed_precision` mode.

    Attributes:
        dtype: The autocast dtype, or None for full precision.
        scaler: The fp16 gradient scaler, or None.
    """

    def __init__(self, mode: str, device: torch.device):
        # NOTE: the CUDA paths (autocast, GradScaler) run only in the gpu-marked tests, which
        # skip on machines without a GPU.
        self.device_type = device.type
        self.dtype: torch.dtype | None = None
        if device.type == "cuda" and mode != "no":
            if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
                self.dtype = torch.bfloat16
            else:
                self.dtype = torch.float16
        enabled = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=True) if enabled else None

    @property
    def name(self) -> str:
        """`bf16`, `fp16` or `fp32`."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    def autocast(self) -> contextlib.AbstractContextManager:
        """Return the autocast context of one forward pass (a no-op in full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def make_schedule(
    optimizer: torch.optim.Optimizer, config: Any
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak learning rate, then a cosine decay to `min_lr_ratio` of it."""
    warmup = min(config.warmup_steps, config.steps // 2)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.steps - warmup)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_average(policy: torch.nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """Return an exponential moving average of the policy's weights and buffers, or None."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(policy, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
