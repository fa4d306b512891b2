"""Process-group setup for data-parallel training under torchrun, and the learning-rate scaling.

One process trains alone unless the environment names a world of several processes, as torchrun
does (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`). Then each process joins
the default process group (NCCL on GPUs, gloo on the CPU) and trains on its own shard of every
epoch. Only rank 0 logs and writes files.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
from typing import Any

import torch
import torch.distributed as dist

from robota.errors import RobotaError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """The rank, world size and device of this training process.

    Attributes:
        rank: Global rank, 0 when training alone.
        world_size: Number of training processes.
        local_rank: Rank on this machine; picks the GPU.
        device: Device this process trains on.
        owns_group: Whether `setup` started the process group, so `teardown` ends it.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1


def env_world_size() -> int:
    """Return the number of training processes that the launcher announced (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """Return this process's rank as the launcher announced it (0 without one)."""
    return int(os.environ.get("RANK", "0"))


def setup(device: str, timeout_s: float) -> DistributedContext:
    """Join the process group if the launcher started several processes, and pick the device.

    Raises:
        RobotaError: The process group cannot be started, for example because the rendezvous
            address cannot be reached before the timeout.
    """
    parsed = torch.device(device)
    if env_world_size() <= 1 and not dist.is_initialized():
        return DistributedContext(0, 1, 0, parsed, owns_group=False)

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if parsed.type == "cuda":
        parsed = torch.device("cuda", local_rank)
        torch.cuda.set_device(parsed)
    owns_group = not dist.is_initialized()
    if owns_group:
        backend = "nccl" if parsed.type == "cuda" else "gloo"
        try:
            dist.init_process_group(
                backend, timeout=datetime.timedelta(seconds=timeout_s), device_id=_device_id(parsed)
            )
        except (RuntimeError, ValueError) as error:
            raise RobotaError(
                f"starting the {backend} process group failed ({error}); launch with torchrun "
                "and check MASTER_ADDR and MASTER_PORT"
            ) from None
    return DistributedContext(
        dist.get_rank(), dist.get_world_size(), local_rank, parsed, owns_group=owns_group
    )


def _device_id(device: torch.device) -> torch.device | None:
    return device if device.type == "cuda" else None


def teardown(context: DistributedContext) -> None:
    """End the process group if `setup` started it."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    """Wait for every process, up to the process group's timeout."""
    if context.distributed:
        dist.barrier()


def mean_across(context: DistributedContext, values: dict[str, float]) -> dict[str, float]:
    """Average float values over all processes (returns them unchanged for one process)."""
    if not context.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[key] for key in keys], dtype=torch.float64)
    tensor = tensor.to(context.device) if context.device.type == "cuda" else tensor
    dist.all_reduce(tensor)
    tensor /= context.world_size
    return {key: float(value) for key, value in zip(keys, tensor.tolist())}


def sum_across(context: DistributedContext, values: list[float]) -> list[float]:
    """Add float values over all processes, element by element."""
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    tensor = tensor.to(context.device) if context.device.type == "cuda" else tensor
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_to_main(context: DistributedContext, value: Any) -> list[Any]:
    """Return every process's `value` in rank order (on every rank; one element alone)."""
    if not context.distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def lr_scale(rule: str, effective_batch: int, batch_size: int) -> float:
    """Return the factor applied to the peak learning rate for a larger effective batch.

    `linear` multiplies by `effective_batch / batch_size` (Goyal et al., 2017,
    https://arxiv.org/abs/1706.02677), `sqrt` by its square root, and `none` by 1.
    """
    ratio = effective_batch / batch_size
    if rule == "linear":
        return ratio
    if rule == "sqrt":
        return math.sqrt(ratio)
    return 1.0
