"""Train a policy on a dataset and save a checkpoint, alone or data-parallel under torchrun.

`train(TrainConfig(dataset=..., output=...))` seeds everything, loads the dataset as chunks of
future actions and builds the policy from the registry with the dataset's statistics. It runs
AdamW with a linear warmup and a cosine decay and writes a run folder (see `robota.train_state`):
the final checkpoint at its top, training-state checkpoints to resume from, metrics and the
resolved config.

Under `torchrun --nproc-per-node N`, each process trains a `DistributedDataParallel` copy on its
shard of the data (gloo on the CPU, NCCL on GPUs), the peak learning rate is scaled with the
effective batch size (`TrainConfig.lr_scaling`), and only rank 0 logs and writes.

torch is imported inside the functions, so importing this module to build a config stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robota.errors import CheckpointError, RobotaError
from robota.train_config import TrainConfig, config_to_toml, load_config

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from robota.train_dist import DistributedContext

__all__ = ["TrainConfig", "load_config", "train"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, dict[str, float]], None]
DatasetFactory = Callable[[TrainConfig], "Dataset"]

# Settings a resumed run must share with the run that wrote the checkpoint, because the saved
# weights, optimiser state or data position would not fit otherwise.
_RESUME_FIXED = (
    "policy",
    "policy_overrides",
    "chunk_size",
    "batch_size",
    "grad_accum_steps",
    "seed",
    "init_from",
    "finetune_mode",
    "lora_rank",
    "freeze_encoders",
)


def train(
    config: TrainConfig,
    *,
    progress: ProgressCallback | None = None,
    dataset_factory: DatasetFactory | None = None,
) -> Path:
    """Train a policy and save its checkpoint.

    Args:
        config: Settings of the run.
        progress: Called on rank 0 as `progress(step, metrics)` every `log_every` steps and
            after the last step, with the loss terms (`loss`, `l1`), `lr`, `grad_norm`, and
            `step_s`, `data_s`, `update_s`, `samples_per_s` and `data_share` averaged over the
            steps since the previous call.
        dataset_factory: Builds the dataset from the config instead of
            `robota.datasets.torch_loader.ChunkDataset`. Its samples must follow the same contract
            (raw policy inputs, `action` `(chunk, action_dim)`, `action_is_pad` `(chunk,)`), and
            it must have `spec` and `stats` attributes. A `fingerprint` attribute, if present, is
            stored as the dataset fingerprint. With `val_fraction`, its last samples are held out.

    Returns:
        The run folder, `config.output`, whose top level is a loadable checkpoint.

    Raises:
        CheckpointError: `config.output` is a file or a folder with other files, or contains
            training checkpoints while `resume` is off. This is checked before the first step,
            so no training run is lost to it.
    """
    import torch

    from robota import train_dist

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    context = train_dist.setup(config.device, config.dist_timeout_s)
    try:
        run = _Run(config, context, dataset_factory)
        try:
            run.fit(progress)
            return run.finish()
        finally:
            run.close()
    finally:
        train_dist.teardown(context)


class _Run:
    """The state of one training process: model, optimiser, data stream and run folder."""

    def __init__(self, config: TrainConfig, context: DistributedContext, factory: DatasetFactory | None):
        import torch

        from robota.train_data import build_datasets, build_policy
        from robota.train_loop import BatchStream, Precision, make_average, make_schedule
        from robota.train_state import check_run_folder

        check_run_folder(config.output, resume=config.resume)
        self.context = context

        _seed_everything(config.seed)
        self.train_set, self.val_set = build_datasets(config, factory)
        self.policy = build_policy(config, self.train_set).to(context.device)
        if context.distributed:  # Same initial weights everywhere, different dropout masks.
            torch.manual_seed(config.seed + context.rank)

        self.config = _resolve(config, self.policy)
        self.effective_batch = config.batch_size * config.grad_accum_steps * context.world_size
        self.peak_lr = self.config.lr * _lr_scale(self.config, self.effective_batch)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad],
            lr=self.peak_lr,
            weight_decay=self.config.weight_decay,
        )
        self.schedule = make_schedule(self.optimizer, self.config)
        self.average = make_average(self.policy, self.config.ema_decay)
        self.precision = Precision(self.config.mixed_precision, context.device)
        robot_names = getattr(self.policy, "robot_names", None)
        self.stream = BatchStream(self.train_set, context, self.config, robot_names)

        self.start_step = self._resume() if self.config.resume else 0
        self.model = self._wrap(self.policy)
        self.metrics = self._open_metrics()
        self._log_setup()

    def _wrap(self, policy: torch.nn.Module) -> torch.nn.Module:
        if not self.context.distributed:
            return policy
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.context.device] if self.context.device.type == "cuda" else None
        return DistributedDataParallel(policy, device_ids=device_ids)

    def _open_metrics(self):
        if not self.context.is_main:
            return None
        from robota.train_metrics import MetricsWriter
        from robota.train_state import CONFIG_TOML, write_text_atomic

        self.config.output.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config.output / CONFIG_TOML, config_to_toml(self.config))
        return MetricsWriter(
            self.config.output, tensorboard=self.config.tensorboard, start_step=self.start_step
        )

    def _log_setup(self) -> None:
        if not self.context.is_main:
            return
        config = self.config
        from robota.policies.lora import count_parameters

        trainable, total = count_parameters(self.policy)
        logger.info(
            "training %s (%d parameters, %d trainable) for %d steps on %s with %d process(es), "
            "%s precision",
            config.policy,
            total,
            trainable,
            config.steps,
            self.context.device,
            self.context.world_size,
            self.precision.name,
        )
        logger.info(
            "effective batch size %d = %d per process x %d accumulation step(s) x %d process(es); "
            "peak learning rate %.3g = %.3g x %.3g (%s scaling rule)",
            self.effective_batch,
            config.batch_size,
            config.grad_accum_steps,
            self.context.world_size,
            self.peak_lr,
            config.lr,
            self.peak_lr / config.lr,
            config.lr_scaling,
        )

    def _resume(self) -> int:
        """Load the latest training-state checkpoint, if any, and return its step."""
        from robota.train_state import latest_checkpoint, load_training_state, restore_rng

        folder = latest_checkpoint(self.config.output)
        if folder is None:
            if self.context.is_main:
                logger.info("no training checkpoint in %s; starting at step 0", self.config.output)
            return 0
        state = load_training_state(folder)
        self._check_resumable(folder, state)
        self.policy.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        if self.average is not None and state["average"] is not None:
            self.average.load_state_dict(state["average"])
        if self.precision.scaler is not None and state["scaler"] is not None:
            self.precision.scaler.load_state_dict(state["scaler"])
        self.stream.seek(state["epoch"], state["batches_done"])
        restore_rng(state["rng"][self.context.rank])
        if self.context.is_main:
            logger.info("resumed from %s at step %d", folder, state["step"])
        return int(state["step"])

    def _check_resumable(self, folder: Path, state: dict[str, Any]) -> None:
        if state["world_size"] != self.context.world_size:
            raise CheckpointError(
                f"{folder} was written by {state['world_size']} process(es), but "
                f"{self.context.world_size} are running; resume with --nproc-per-node "
                f"{state['world_size']}"
            )
        # A JSON round trip makes tuples and lists, such as image_channels, compare equal.
        saved = json.loads(json.dumps(state["train_config"]))
        current = json.loads(json.dumps(self.config.to_dict()))
        changed = [key for key in _RESUME_FIXED if saved.get(key) != current.get(key)]
        if changed:
            raise CheckpointError(
                f"cannot resume from {folder}: {changed} differ from that run "
                f"({ {key: saved.get(key) for key in changed} }); use the saved "
                "train_config.toml or start a new run folder"
            )

    def fit(self, progress: ProgressCallback | None) -> None:
        """Run the remaining steps, reporting, checkpointing and evaluating on schedule."""
        config = self.config
        self.model.train()
        window: dict[str, float] = {}
        window_steps = 0
        for step in range(self.start_step + 1, config.steps + 1):
            for key, value in self._step(step).items():
                window[key] = window.get(key, 0.0) + value
            window_steps += 1
            last = step == config.steps
            if step % config.log_every == 0 or last:
                self._report(step, {k: v / window_steps for k, v in window.items()}, progress)
                window, window_steps = {}, 0
            if config.checkpoint_every and (step % config.checkpoint_every == 0 or last):
                self._save_state(step)
            if config.eval_every and step % config.eval_every == 0:
                self._evaluate_in_twin(step)

    def _step(self, step: int) -> dict[str, float]:
        """Run one optimiser step over `grad_accum_steps` micro-batches; return its metrics."""
        import torch

        started = time.perf_counter()
        batches = [self.stream.next() for _ in range(self.config.grad_accum_steps)]
        loaded = time.perf_counter()

        self.optimizer.zero_grad(set_to_none=True)
        terms = self._forward_backward(batches)
        scaler = self.precision.scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip_norm)
        )
        self._check_finite(step, terms["loss"], grad_norm)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.schedule.step()
        if self.average is not None:
            self.average.update_parameters(self.policy)
        if self.context.device.type == "cuda":
            torch.cuda.synchronize(self.context.device)
        finished = time.perf_counter()
        return {
            **terms,
            "grad_norm": grad_norm,
            "data_s": loaded - started,
            "update_s": finished - loaded,
        }

    def _forward_backward(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Sum the gradients of the micro-batches; return their mean loss terms."""
        count = len(batches)
        sums: dict[str, Any] = {}
        for index, batch in enumerate(batches):
            # Gradients are averaged across processes only after the last micro-batch.
            last = index == count - 1
            no_sync = getattr(self.model, "no_sync", None)
            sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
            with sync:
                with self.precision.autocast():
                    losses = self.model(batch)
                loss = losses["loss"] / count
                if self.precision.scaler is not None:
                    loss = self.precision.scaler.scale(loss)
                loss.backward()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() / count
        return {key: float(value) for key, value in sums.items()}

    def _check_finite(self, step: int, loss: float, grad_norm: float) -> None:
        # An fp16 loss scaler skips steps with infinite gradients on its own.
        if self.precision.scaler is not None and math.isfinite(loss):
            return
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return
        raise RobotaError(
            f"training loss became {loss} (gradient norm {grad_norm}) at step {step}; lower the "
            f"learning rate (now {self.schedule.get_last_lr()[0]:.2e}) or check the dataset "
            "statistics for zeros"
        )

    def _report(self, step: int, means: dict[str, float], progress: ProgressCallback | None) -> None:
        from robota.train_dist import mean_across

        averaged = mean_across(self.context, means)
        means = {key: averaged[key] for key in means}  # The step's order, loss terms first.
        step_s = means["data_s"] + means["update_s"]
        means.update(
            lr=self.schedule.get_last_lr()[0],
            step_s=step_s,
            samples_per_s=self.effective_batch / step_s if step_s > 0 else float("nan"),
            data_share=means["data_s"] / step_s if step_s > 0 else float("nan"),
        )
        if not self.context.is_main:
            return
        logger.info(
            "step %d/%d loss %.4f lr %.2e %.0f samples/s",
            step,
            self.config.steps,
            means["loss"],
            means["lr"],
            means["samples_per_s"],
        )
        self.metrics.write(step, {"epoch": self.stream.epoch, **means})
        if progress is not None:
            progress(step, means)

    def _deploy_policy(self) -> torch.nn.Module:
        """Return the weights to evaluate and ship: the moving average if one is kept."""
        return self.average.module if self.average is not None else self.policy

    def _saved_policy(self) -> torch.nn.Module:
        """Return the deployed weights with any LoRA adapters merged, as checkpoints hold them."""
        from robota.policies.lora import merged_copy

        return merged_copy(self._deploy_policy())

    def _save_state(self, step: int) -> None:
        """Compute the validation loss and write a training-state checkpoint (rank 0 writes)."""
        from robota.train_dist import gather_to_main
        from robota.train_loop import validation_loss
        from robota.train_state import capture_rng, save_training_checkpoint

        val_loss = None
        if self.val_set is not None:
            val_loss = validation_loss(
                self._deploy_policy(), self.val_set, self.context, self.config.batch_size,
                self.precision.autocast,
            )
        rng = gather_to_main(self.context, capture_rng())
        if not self.context.is_main:
            return
        if val_loss is not None:
            logger.info("step %d validation loss %.4f", step, val_loss)
            self.metrics.write(step, {"val_loss": val_loss})
        save_training_checkpoint(
            self.config.output,
            step,
            policy=self._saved_policy(),
            state=self._state_dict(step, rng),
            extra=self._checkpoint_extra(step),
            config_toml=config_to_toml(self.config),
            val_loss=val_loss,
            keep_last=self.config.keep_last,
        )

    def _state_dict(self, step: int, rng: list[dict[str, Any]]) -> dict[str, Any]:
        from robota.train_state import STATE_FORMAT

        scaler = self.precision.scaler
        return {
            "format": STATE_FORMAT,
            "step": step,
            "epoch": self.stream.epoch,
            "batches_done": self.stream.batches_done,
            "world_size": self.context.world_size,
            "train_config": self.config.to_dict(),
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "average": self.average.state_dict() if self.average is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng,
        }

    def _checkpoint_extra(self, step: int) -> dict[str, Any]:
        from robota.train_data import data_provenance

        extra = {
            **data_provenance(self.train_set, self.config),
            "train_config": self.config.to_dict(),
            "train_run": {
                "step": step,
                "world_size": self.context.world_size,
                "effective_batch_size": self.effective_batch,
                "peak_lr": self.peak_lr,
                "mixed_precision": self.precision.name,
                "ema": self.average is not None,
            },
        }
        if self.config.init_from is not None:
            from robota.finetune import finetune_provenance

            extra["finetune"] = finetune_provenance(self.config, self.policy)
        return extra

    def _evaluate_in_twin(self, step: int) -> None:
        """Roll the current weights out in the twin and record the success rate (rank 0)."""
        if not self.context.is_main:
            return
        from robota.evaluate import EvalConfig, evaluate
        from robota.policies.checkpoint import save_checkpoint
        from robota.train_state import capture_rng, restore_rng

        rng = capture_rng()  # The rollouts must not change the training's random streams.
        with tempfile.TemporaryDirectory(prefix="robota-eval-") as folder:
            checkpoint = save_checkpoint(Path(folder) / "checkpoint", self._saved_policy())
            report = evaluate(
                EvalConfig(policy=checkpoint, task=self.config.eval_task, episodes=self.config.eval_episodes)
            )
        restore_rng(rng)
        rate = float(report["success_rate"])
        logger.info("step %d twin success rate %.2f over %d episodes", step, rate, self.config.eval_episodes)
        self.metrics.write(step, {"eval_success_rate": rate})

    def finish(self) -> Path:
        """Write the final checkpoint (rank 0) and wait for every process."""
        from robota.train_dist import barrier
        from robota.train_state import save_final_checkpoint

        if self.context.is_main:
            extra = self._checkpoint_extra(self.config.steps)
            save_final_checkpoint(self.config.output, self._saved_policy(), extra)
        barrier(self.context)
        return self.config.output

    def close(self) -> None:
        """Close the metrics files."""
        if self.metrics is not None:
            self.metrics.close()


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_scale(config: TrainConfig, effective_batch: int) -> float:
    from robota.train_dist import lr_scale

    return lr_scale(config.lr_scaling, effective_batch, config.batch_size)


def _resolve(config: TrainConfig, policy: torch.nn.Module) -> TrainConfig:
    """Fill the settings left to the policy, so the saved config states every value used."""
    return dataclasses.replace(
        config,
        lr=config.lr if config.lr is not None else policy.config.optimizer_lr,
        weight_decay=config.weight_decay
        if config.weight_decay is not None
        else policy.config.optimizer_weight_decay,
    )
