"""Checkpoint folders: `config.json`, `model.safetensors` and `stats.json`.

`config.json` contains the policy type and config, the feature spec, the sha256 of both other
files, the robota version and any extra entries of the caller (the training run stores the dataset
fingerprint and its resolved config). A policy of several robots (a flow policy trained on a mix
of robots) adds `embodiments`: each other robot's spec and statistics, keyed by robot name, next
to the primary robot's `spec` and `stats.json`. A checkpoint loads with this package alone,
without the training code, and every problem is reported as one `CheckpointError` line naming
the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
from torch import nn

import robota
from robota.errors import CheckpointError, RobotaError, SpecError, UnknownNameError
from robota.policies.registry import POLICIES, make_config
from robota.spec import Spec

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
STATS_FILE = "stats.json"
CHECKPOINT_FILES = (CONFIG_FILE, MODEL_FILE, STATS_FILE)
FORMAT_VERSION = 1
_RESERVED_KEYS = frozenset(
    {
        "format_version",
        "policy_type",
        "policy_config",
        "spec",
        "stats_sha256",
        "model_sha256",
        "robota_version",
    }
)
# Written only for a policy of several robots: robot name to {"spec": ..., "stats": ...}.
EMBODIMENTS_KEY = "embodiments"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _to_json(value: Any) -> Any:
    """Convert numpy arrays and scalars, tuples and paths in `value` to JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def check_save_target(directory: str | Path) -> None:
    """Raise CheckpointError unless `save_checkpoint` may write to `directory`.

    It may write to a missing folder, an empty one or an earlier checkpoint, but not to a file or
    a folder that contains other files. Training calls this before its first step.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(
            f"cannot save a checkpoint to {directory}: it is a file; choose a folder path"
        )
    if directory.is_dir():
        others = sorted(p.name for p in directory.iterdir() if p.name not in CHECKPOINT_FILES)
        if others:
            raise CheckpointError(
                f"cannot save a checkpoint to {directory}: the folder contains other files "
                f"{others}; choose an empty or new folder"
            )


def save_checkpoint(
    directory: str | Path, policy: nn.Module, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write a policy's checkpoint folder, replacing an earlier checkpoint there.

    The files are written to a temporary sibling folder that is then renamed, so `directory`
    never contains a half-written checkpoint.

    Args:
        directory: Folder to write; created if missing. An existing folder may hold only
            checkpoint files, which are replaced.
        policy: A registered policy with `config`, `spec` and `stats`.
        extra: More JSON entries for `config.json`, for example `dataset_fingerprint` and
            `train_config`; they must not reuse the keys this function writes.

    Returns:
        The checkpoint folder.

    Raises:
        CheckpointError: The target is a file or contains other files, or `extra` reuses a key.
    """
    directory = Path(directory)
    extra = dict(extra or {})
    clashes = sorted((_RESERVED_KEYS | {EMBODIMENTS_KEY}) & set(extra))
    if clashes:
        raise CheckpointError(
            f"extra checkpoint entries {clashes} clash with the keys of {CONFIG_FILE}; rename them"
        )
    check_save_target(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)

    # A hidden sibling on the same file system, so the rename is atomic. mkdir honours the umask,
    # unlike tempfile.mkdtemp's 0700, so the checkpoint is as readable as any other new folder.
    staging = _sibling(directory, "tmp")
    staging.mkdir()
    try:
        _write_files(staging, policy, extra)
        _replace_folder(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("saved checkpoint %s", directory)
    return directory


def _write_files(folder: Path, policy: nn.Module, extra: Mapping[str, Any]) -> None:
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in policy.state_dict().items()
    }
    safetensors.torch.save_file(state, str(folder / MODEL_FILE), metadata={"format": "pt"})
    stats_text = json.dumps(_to_json(policy.stats), indent=2, sort_keys=True)
    (folder / STATS_FILE).write_text(stats_text, encoding="utf-8")

    config = {
        "format_version": FORMAT_VERSION,
        "policy_type": policy.name,
        "policy_config": _to_json(policy.config.to_dict()),
        "spec": policy.spec.to_dict(),
        "model_sha256": _file_sha256(folder / MODEL_FILE),
        "stats_sha256": _file_sha256(folder / STATS_FILE),
        "robota_version": robota.__version__,
        **_to_json(extra),
    }
    others = getattr(policy, "embodiments", None)
    if others:
        config[EMBODIMENTS_KEY] = {
            name: {"spec": part.spec.to_dict(), "stats": _to_json(part.stats)}
            for name, part in others.items()
        }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")


def _replace_folder(staging: Path, directory: Path) -> None:
    """Rename `staging` to `directory`, moving an earlier checkpoint aside first."""
    if not directory.exists():
        os.replace(staging, directory)
        return
    old = _sibling(directory, "old")
    os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old)


def _sibling(directory: Path, suffix: str) -> Path:
    return directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.{suffix}")


def checkpoint_sha256(directory: str | Path) -> str:
    """Return the sha256 of the checkpoint's `model.safetensors` as hex digits.

    Raises:
        CheckpointError: The file is missing.
    """
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found; point to a folder written by save_checkpoint")
    return _file_sha256(path)


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """Read and check the checkpoint's `config.json` without loading the model.

    Raises:
        CheckpointError: The folder or a checkpoint file is missing, or `config.json` is invalid.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"checkpoint folder {directory} not found; pass the folder that train() wrote"
        )
    for name in CHECKPOINT_FILES:
        if not (directory / name).is_file():
            raise CheckpointError(
                f"{directory / name} not found; the checkpoint is incomplete, save or copy it again"
            )
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error}); save the checkpoint again"
        ) from None
    missing = (
        sorted(_RESERVED_KEYS - set(config)) if isinstance(config, dict) else sorted(_RESERVED_KEYS)
    )
    if missing:
        raise CheckpointError(
            f"{path} lacks {missing}; it was not written by save_checkpoint, save it again"
        )
    return config


def checkpoint_robots(directory: str | Path) -> list[str]:
    """Return the names of the robots a checkpoint drives, the primary robot first.

    Raises:
        CheckpointError: As `read_checkpoint_config`.
    """
    config = read_checkpoint_config(directory)
    return [config["spec"]["robot"]["name"], *config.get(EMBODIMENTS_KEY, {})]


def load_checkpoint(directory: str | Path, robot: str | None = None) -> nn.Module:
    """Load a policy from a checkpoint folder, in eval mode on the CPU.

    Args:
        directory: Checkpoint folder.
        robot: For a checkpoint of several robots, the robot to make primary: the policy's
            `spec`, `predict_action_chunk` and export are then that robot's, with the same
            weights. None keeps the saved primary robot.

    Raises:
        CheckpointError: The folder or a file is missing. Or `model.safetensors` is truncated,
            corrupted or does not fit the policy. Or `stats.json` does not match the sha256 in
            `config.json`, or lacks a feature the policy uses. The message names the file.
        UnknownNameError: `robot` is not one of the checkpoint's robots.
    """
    directory = Path(directory)
    config = read_checkpoint_config(directory)
    stats = _read_stats(directory, config["stats_sha256"])
    saved_robot = config["spec"]["robot"]["name"]
    policy = _build_policy(directory, config, stats, robot or saved_robot)
    _load_weights(directory / MODEL_FILE, policy, config["model_sha256"], saved_robot)
    return policy.eval()


def _read_stats(directory: Path, expected_sha256: str) -> dict[str, Any]:
    path = directory / STATS_FILE
    actual = _file_sha256(path)
    if actual != expected_sha256:
        raise CheckpointError(
            f"{path} has sha256 {actual[:12]}… but {CONFIG_FILE} expects {expected_sha256[:12]}…; "
            "the statistics were changed or belong to another checkpoint; restore the saved "
            "stats.json"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error}); restore the saved stats.json"
        ) from None


def _build_policy(
    directory: Path, config: Mapping[str, Any], stats: Mapping[str, Any], robot: str
) -> nn.Module:
    """Build the checkpoint's policy with `robot` as its primary robot, before loading weights."""
    path = directory / CONFIG_FILE
    try:
        spec = Spec.from_dict(config["spec"])
        policy_config = make_config(config["policy_type"], **config["policy_config"])
        robots = {spec.robot.name: (spec, stats)}
        for name, entry in config.get(EMBODIMENTS_KEY, {}).items():
            robots[name] = (Spec.from_dict(entry["spec"]), entry["stats"])
    except (RobotaError, TypeError, KeyError) as error:
        raise CheckpointError(f"{path} describes an invalid policy: {error}") from None
    if robot not in robots:
        raise UnknownNameError(f"robot of checkpoint {directory}", robot, robots)
    primary_spec, primary_stats = robots.pop(robot)
    others = {"embodiments": robots} if robots else {}
    try:
        return POLICIES[config["policy_type"]](policy_config, primary_spec, primary_stats, **others)
    except SpecError as error:
        source = f"{directory / STATS_FILE}" + (f" or {EMBODIMENTS_KEY} in {path}" if others else "")
        raise CheckpointError(f"{source} does not fit the policy: {error}") from None


def _load_weights(path: Path, policy: nn.Module, expected_sha256: str, saved_robot: str) -> None:
    actual = _file_sha256(path)
    if actual != expected_sha256:
        raise CheckpointError(
            f"{path} is corrupted or truncated (sha256 {actual[:12]}… does not match "
            f"{expected_sha256[:12]}… in {CONFIG_FILE}); copy or save the checkpoint again"
        )
    try:
        state = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path} cannot be read ({error}); copy or save the checkpoint again"
        ) from None
    if saved_robot != policy.spec.robot.name:
        from robota.policies.flow_robots import move_primary

        state = move_primary(state, saved_robot, policy.spec.robot.name)
    try:
        missing, unexpected = policy.load_state_dict(state, strict=False)
    except RuntimeError as error:  # A tensor whose shape differs from the policy's.
        raise CheckpointError(f"{path} does not fit the policy in {CONFIG_FILE}: {error}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the policy in {CONFIG_FILE} (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); save the checkpoint again with this robota version"
        )
