"""Train a policy on a dataset and save a checkpoint.

`train(TrainConfig(dataset=..., output=...))` seeds everything, loads the dataset as chunks of
future actions, builds the policy from the registry with the dataset's statistics, runs AdamW with
a linear warmup and a cosine decay, and writes a checkpoint folder (see
`robota.policies.checkpoint`) with the dataset fingerprint and the resolved training config.

torch is imported inside the functions, so importing this module to build a config stays cheap.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robota.errors import RobotaError, SpecError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, dict[str, float]], None]


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run.

    Attributes:
        dataset: Dataset folder (LeRobot v3.0 layout).
        output: Checkpoint folder to write.
        policy: Registered policy name.
        steps: Optimiser steps.
        batch_size: Samples per step.
        lr: Peak AdamW learning rate; `None` takes the policy config's `optimizer_lr`.
        weight_decay: AdamW weight decay; `None` takes the policy config's
            `optimizer_weight_decay`.
        warmup_steps: Steps of linear learning-rate warmup before the cosine decay.
        min_lr_ratio: Final learning rate as a fraction of `lr`.
        grad_clip_norm: Maximum gradient norm; larger gradients are scaled down.
        seed: Seed of Python, numpy, torch and the data order.
        num_workers: DataLoader worker processes; 0 loads in the training process.
        device: Torch device, for example `cpu` or `cuda`.
        log_every: Steps between progress reports.
        chunk_size: Future actions per sample, passed to the dataset and the policy.
        policy_overrides: Fields of the policy config to change, for example `{"dim_model": 64}`.
    """

    dataset: Path
    output: Path
    policy: str = "act"
    steps: int = 3000
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip_norm: float = 10.0
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"
    log_every: int = 50
    chunk_size: int = 10
    policy_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dataset = Path(self.dataset)
        self.output = Path(self.output)
        self.policy_overrides = dict(self.policy_overrides)
        for field in ("steps", "batch_size", "log_every", "chunk_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"train config {field} must be a positive integer, got {value!r}")
        for field in ("warmup_steps", "num_workers", "seed"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0:
                raise SpecError(
                    f"train config {field} must be a non-negative integer, got {value!r}"
                )
        if self.lr is not None and not self.lr > 0:
            raise SpecError(f"train config lr must be positive, got {self.lr}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise SpecError(
                f"train config weight_decay must be non-negative, got {self.weight_decay}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise SpecError(f"train config min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not self.grad_clip_norm > 0:
            raise SpecError(
                f"train config grad_clip_norm must be positive, got {self.grad_clip_norm}"
            )
        if "chunk_size" in self.policy_overrides:
            raise SpecError(
                "set the chunk size with TrainConfig.chunk_size, not "
                "policy_overrides['chunk_size'], because the dataset needs it too"
            )
        from robota.policies.registry import make_config  # Imports torch; validates the overrides.

        make_config(self.policy, chunk_size=self.chunk_size, **self.policy_overrides)
        _check_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values."""
        data = dataclasses.asdict(self)
        data["dataset"] = str(self.dataset)
        data["output"] = str(self.output)
        return data


def _check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise SpecError(f"train config device {device!r} is invalid; use cpu or cuda") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"train config device {device!r} requested CUDA, which is not available")


def train(
    config: TrainConfig,
    *,
    progress: ProgressCallback | None = None,
    dataset_factory: Callable[[TrainConfig], Dataset] | None = None,
) -> Path:
    """Train a policy and save its checkpoint.

    Args:
        config: Settings of the run.
        progress: Called as `progress(step, metrics)` every `log_every` steps and after the last
            step, with `loss`, `l1`, `lr`, `grad_norm` and `step_s` (mean seconds per step).
        dataset_factory: Builds the dataset from the config instead of
            `robota.datasets.torch_loader.ChunkDataset`. Its samples must follow the same contract
            (raw policy inputs, `action` `(chunk, action_dim)`, `action_is_pad` `(chunk,)`), and
            it must have `spec` and `stats` attributes. A `fingerprint` attribute, if present, is
            stored as the dataset fingerprint.

    Returns:
        The checkpoint folder, `config.output`.

    Raises:
        CheckpointError: `config.output` is a file or a folder with other files; checked before
            the first step, so no training run is lost to it.
    """
    import torch

    from robota.policies.checkpoint import check_save_target, save_checkpoint

    check_save_target(config.output)
    _seed_everything(config.seed)
    dataset = (dataset_factory or _build_chunk_dataset)(config)
    policy = _build_policy(config, dataset).to(torch.device(config.device))
    resolved = _resolve(config, policy)
    optimizer = torch.optim.AdamW(
        policy.parameters(), lr=resolved.lr, weight_decay=resolved.weight_decay
    )
    schedule = _make_schedule(optimizer, resolved)
    batches = _endless_batches(dataset, resolved)

    logger.info(
        "training %s (%d parameters) for %d steps on %s",
        resolved.policy,
        sum(p.numel() for p in policy.parameters()),
        resolved.steps,
        resolved.device,
    )
    _run_steps(policy, optimizer, schedule, batches, resolved, progress)

    extra = {
        "dataset_fingerprint": _dataset_fingerprint(dataset, resolved.dataset),
        "train_config": resolved.to_dict(),
    }
    return save_checkpoint(resolved.output, policy.cpu().eval(), extra=extra)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build_chunk_dataset(config: TrainConfig) -> Dataset:
    from robota.datasets.torch_loader import ChunkDataset

    return ChunkDataset(config.dataset, chunk_size=config.chunk_size)


def _build_policy(config: TrainConfig, dataset: Dataset) -> torch.nn.Module:
    from robota.policies.registry import make_policy

    for attribute in ("spec", "stats"):
        if getattr(dataset, attribute, None) is None:
            raise SpecError(
                f"training dataset {type(dataset).__name__} at {config.dataset} has no "
                f"{attribute}; train on a dataset written by robota, which records both"
            )
    return make_policy(
        config.policy,
        dataset.spec,
        dataset.stats,
        chunk_size=config.chunk_size,
        **config.policy_overrides,
    )


def _resolve(config: TrainConfig, policy: torch.nn.Module) -> TrainConfig:
    """Fill the settings left to the policy, so the saved config states every value used."""
    return dataclasses.replace(
        config,
        lr=config.lr if config.lr is not None else policy.config.optimizer_lr,
        weight_decay=config.weight_decay
        if config.weight_decay is not None
        else policy.config.optimizer_weight_decay,
    )


def _make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak learning rate, then a cosine decay to `min_lr_ratio` of it."""
    import torch

    warmup = min(config.warmup_steps, config.steps // 2)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.steps - warmup)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _endless_batches(dataset: Dataset, config: TrainConfig) -> Iterator[dict[str, torch.Tensor]]:
    """Yield shuffled batches on the training device, epoch after epoch, in a seeded order."""
    import torch
    from torch.utils.data import DataLoader

    if len(dataset) == 0:
        raise RobotaError(
            f"training dataset {config.dataset} has no samples; record or convert episodes first"
        )
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= config.batch_size,
        num_workers=config.num_workers,
        generator=generator,
        worker_init_fn=_seed_worker,
        persistent_workers=config.num_workers > 0,
    )
    device = torch.device(config.device)
    while True:
        for batch in loader:
            yield {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def _seed_worker(worker_id: int) -> None:
    import torch

    seed = torch.initial_seed() % 2**32  # DataLoader seeds each worker's torch from the generator.
    random.seed(seed)
    np.random.seed(seed)


def _run_steps(
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
    batches: Iterator[dict[str, torch.Tensor]],
    config: TrainConfig,
    progress: ProgressCallback | None,
) -> None:
    """Run `config.steps` optimiser steps, reporting every `log_every` steps and at the end."""
    import torch

    policy.train()
    started = time.perf_counter()
    for step in range(1, config.steps + 1):
        losses = policy(next(batches))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip_norm)
        if not torch.isfinite(losses["loss"]):
            raise RobotaError(
                f"training loss became {losses['loss'].item()} at step {step}; "
                "lower the learning rate "
                f"(now {schedule.get_last_lr()[0]:.2e}) or check the dataset statistics for zeros"
            )
        optimizer.step()
        schedule.step()

        if step % config.log_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - started
            metrics = {key: float(value.detach()) for key, value in losses.items()}
            metrics.update(
                lr=schedule.get_last_lr()[0], grad_norm=float(grad_norm), step_s=elapsed / step
            )
            logger.info(
                "step %d/%d loss %.4f lr %.2e", step, config.steps, metrics["loss"], metrics["lr"]
            )
            if progress is not None:
                progress(step, metrics)


def _dataset_fingerprint(dataset: Any, root: Path) -> str | None:
    """Return the dataset's content hash, or None with a warning where none can be computed.

    A `fingerprint` string attribute of the dataset wins (`ChunkDataset` has one); otherwise the
    dataset folder is hashed with `robota.datasets.fingerprint`.
    """
    own = getattr(dataset, "fingerprint", None)
    if isinstance(own, str):
        return own
    try:
        from robota.datasets import fingerprint
    except ImportError:
        logger.warning(
            "robota.datasets.fingerprint is not available, so the checkpoint records no "
            "dataset fingerprint"
        )
        return None
    if not root.is_dir():
        logger.warning(
            "dataset folder %s not found, so the checkpoint records no dataset fingerprint", root
        )
        return None
    return fingerprint(root)
