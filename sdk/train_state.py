"""The run folder of a training job, and its training-state checkpoints for resuming.

A run folder (`TrainConfig.output`) contains:

    config.json, model.safetensors, stats.json    the final checkpoint (robota.policies.checkpoint)
    train_config.toml                             the resolved config of the run
    metrics.csv, tensorboard/                     training curves
    curves.png                                    the curves drawn by `robota plot`
    checkpoints/step-000500/                      a training-state checkpoint:
        config.json, model.safetensors, stats.json    a loadable checkpoint of the weights to use
                                                      (the moving average where one is kept)
        training_state.pt                             model, optimiser, scheduler, average, loss
                                                      scaler, every process's RNG states and the
                                                      data position
        trainer_state.json                            step, epoch, validation loss
        train_config.toml                             the resolved config

Each step folder is written under a hidden temporary name and renamed, so a crash leaves either
the whole folder or none of it. After each save the newest `keep_last` folders and the one with
the lowest validation loss are kept and the others deleted.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robota.errors import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
CONFIG_TOML = "train_config.toml"
PLOT_FILE = "curves.png"
STATE_FILE = "training_state.pt"
TRAINER_STATE_FILE = "trainer_state.json"
POLICY_FILES = ("config.json", "model.safetensors", "stats.json")
RUN_ENTRIES = frozenset(
    {*POLICY_FILES, CHECKPOINTS_DIR, METRICS_FILE, TENSORBOARD_DIR, CONFIG_TOML, PLOT_FILE}
)
STATE_FORMAT = 1
_STEP_FOLDER = re.compile(r"^step-(\d{6,})$")


def check_run_folder(output: Path, *, resume: bool) -> None:
    """Raise CheckpointError unless training may write its run folder at `output`.

    The folder may be missing, empty, or an earlier run or checkpoint. An earlier run with
    training-state checkpoints needs `resume`, so a new run never mixes with an old one.
    """
    if output.exists() and not output.is_dir():
        raise CheckpointError(f"cannot train into {output}: it is a file; choose a folder path")
    if not output.is_dir():
        return
    others = sorted(p.name for p in output.iterdir() if p.name not in RUN_ENTRIES)
    others = [name for name in others if not name.startswith(".")]
    if others:
        raise CheckpointError(
            f"cannot train into {output}: the folder contains other files {others}; choose an "
            "empty or new folder"
        )
    if not resume and list_step_folders(output):
        raise CheckpointError(
            f"{output} already contains training checkpoints in {CHECKPOINTS_DIR}/; pass "
            "--resume (TrainConfig.resume=True) to continue that run, or choose a new folder"
        )


def list_step_folders(output: Path) -> list[tuple[int, Path]]:
    """Return `(step, folder)` of every complete training-state checkpoint, oldest first."""
    root = output / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        match = _STEP_FOLDER.match(folder.name)
        if match and (folder / STATE_FILE).is_file() and (folder / TRAINER_STATE_FILE).is_file():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def best_checkpoint(output: str | Path) -> Path | None:
    """Return the training-state checkpoint with the lowest validation loss, or None."""
    scored = [
        (loss, step, folder)
        for step, folder in list_step_folders(Path(output))
        if (loss := _val_loss(folder)) is not None
    ]
    return min(scored)[2] if scored else None


def latest_checkpoint(output: str | Path) -> Path | None:
    """Return the newest complete training-state checkpoint, or None."""
    folders = list_step_folders(Path(output))
    return folders[-1][1] if folders else None


def _val_loss(folder: Path) -> float | None:
    try:
        value = json.loads((folder / TRAINER_STATE_FILE).read_text(encoding="utf-8")).get("val_loss")
    except (OSError, json.JSONDecodeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def capture_rng() -> dict[str, Any]:
    """Return the Python, numpy, torch and CUDA random states of this process."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Set the random states captured by `capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(
    output: Path,
    step: int,
    *,
    policy: torch.nn.Module,
    state: Mapping[str, Any],
    extra: Mapping[str, Any],
    config_toml: str,
    val_loss: float | None,
    keep_last: int,
) -> Path:
    """Write `checkpoints/step-XXXXXX` atomically and delete the checkpoints no longer kept.

    Args:
        output: Run folder.
        step: Optimiser steps done.
        policy: Module whose weights the step's loadable checkpoint holds.
        state: Everything `load_training_state` returns, saved with `torch.save`.
        extra: Entries for the loadable checkpoint's `config.json`.
        config_toml: The resolved config as TOML.
        val_loss: Validation loss at this step, or None without a validation split.
        keep_last: Newest checkpoints to keep besides the best one.

    Returns:
        The step folder.
    """
    from robota.policies.checkpoint import save_checkpoint

    root = output / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"step-{step:06d}"
    staging = root / f".step-{step:06d}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        save_checkpoint(staging, policy, extra=extra)
        torch.save(dict(state), staging / STATE_FILE)
        trainer_state = {"step": step, "epoch": state.get("epoch"), "val_loss": val_loss}
        (staging / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
        (staging / CONFIG_TOML).write_text(config_toml, encoding="utf-8")
        _fsync_folder(staging)
        if target.exists():  # A resumed run that reached the same step again.
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _prune(output, keep_last)
    logger.info("saved training checkpoint %s", target)
    return target


def _fsync_folder(folder: Path) -> None:
    """Flush the folder's files to disk, so the rename never exposes unwritten data."""
    for path in folder.iterdir():
        with path.open("rb") as file:
            os.fsync(file.fileno())


def _prune(output: Path, keep_last: int) -> None:
    folders = list_step_folders(output)
    keep = {folder for _, folder in folders[-keep_last:]}
    best = best_checkpoint(output)
    if best is not None:
        keep.add(best)
    for _, folder in folders:
        if folder not in keep:
            shutil.rmtree(folder)
            logger.debug("deleted training checkpoint %s", folder)


def load_training_state(folder: Path) -> dict[str, Any]:
    """Read a step folder's `training_state.pt`.

    Raises:
        CheckpointError: The file cannot be read or was written by another format version.
    """
    path = folder / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"{path} cannot be read ({error}); delete the folder to resume from an older one"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{path} is not a training state of format {STATE_FORMAT}; delete the folder to "
            "resume from an older one"
        )
    return state


def save_final_checkpoint(output: Path, policy: torch.nn.Module, extra: Mapping[str, Any]) -> Path:
    """Write the final checkpoint files at the top of the run folder.

    The files are written to a temporary folder and moved in one by one, `config.json` last.
    A crash between two moves leaves a `config.json` whose sha256 entries do not match, which
    `load_checkpoint` reports; resuming the run writes the final checkpoint again.
    """
    from robota.policies.checkpoint import save_checkpoint

    output.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.final")
    try:
        save_checkpoint(staging, policy, extra=extra)
        _fsync_folder(staging)
        for name in ("model.safetensors", "stats.json", "config.json"):
            os.replace(staging / name, output / name)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("saved checkpoint %s", output)
    return output


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary sibling and a rename."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
