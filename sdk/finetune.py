"""Fine-tuning: start a training run from a checkpoint, with LoRA adapters or all weights.

```python
from robota.finetune import finetune_config
from robota.train import train

config = finetune_config("runs/pretrained", dataset="runs/cell-b", output="runs/cell-b-lora", steps=500)
train(config)
```

`finetune_config` fills the policy type, its config and the chunk size in from the checkpoint,
because the pretrained weights fit no other. `train` then loads the checkpoint instead of
building a fresh policy (`build_finetune_policy`), checks that the dataset's feature spec equals
the checkpoint's, and prepares the mode:

- `lora`: every pretrained weight is frozen except the image encoders' (LoRA reaches linear
  layers, and the encoders are convolutions), and low-rank adapters are added to the attention
  and MLP linears of the transformer layers (`robota.policies.lora`);
- `full`: every weight trains;
- `freeze_encoders` with either mode keeps the image encoders fixed, so with `lora` only the
  adapters train.

The checkpoint's normalisation statistics are kept rather than recomputed from the new data. The
pretrained weights were fitted to inputs normalised by them, so new statistics would shift every
input of the frozen layers. A small fine-tuning dataset would also give noisy statistics. A warning
names any feature whose mean in the new data lies far outside the checkpoint's distribution.

Saved checkpoints hold the adapters merged into plain weights (`robota.policies.lora.merge_lora`),
so `load_checkpoint`, `robota eval` and `robota export` read them like any other checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robota.errors import CheckpointError, SpecError

if TYPE_CHECKING:
    from torch import nn

    from robota.train_config import TrainConfig

logger = logging.getLogger(__name__)

# A feature whose fine-tuning mean is further than this many checkpoint standard deviations from
# the checkpoint's mean is reported, because its normalised inputs leave the pretrained range.
DRIFT_WARNING_STDS = 3.0


def finetune_config(
    checkpoint: str | Path, dataset: Any, output: str | Path, **changes: Any
) -> TrainConfig:
    """Build the TrainConfig of a fine-tuning run from `checkpoint`.

    Args:
        checkpoint: Checkpoint folder to start from.
        dataset: Dataset folder, or a list of `PATH` / `PATH:WEIGHT` entries.
        output: Run folder to write.
        **changes: Other TrainConfig fields, such as `steps`, `finetune_mode` or `lora_rank`.

    Raises:
        CheckpointError: `checkpoint` is not a checkpoint folder.
        SpecError: `changes` set `policy`, `chunk_size` or `policy_overrides` to values other
            than the checkpoint's.
    """
    from robota.train_config import TrainConfig

    policy, chunk_size, overrides = _checkpoint_policy(Path(checkpoint))
    for key, value in (("policy", policy), ("chunk_size", chunk_size)):
        if key in changes and changes[key] != value:
            raise SpecError(
                f"fine-tuning keeps the checkpoint's {key} ({value!r}), got {changes[key]!r}; "
                f"leave {key} unset"
            )
    requested = dict(changes.pop("policy_overrides", None) or {})
    changes.update(policy=policy, chunk_size=chunk_size, policy_overrides={**overrides, **requested})
    return TrainConfig(dataset=dataset, output=output, init_from=Path(checkpoint), **changes)


def _checkpoint_policy(checkpoint: Path) -> tuple[str, int, dict[str, Any]]:
    """Return the policy type, chunk size and other config fields that a checkpoint records."""
    from robota.policies.checkpoint import read_checkpoint_config

    try:
        config = read_checkpoint_config(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(
            f"cannot fine-tune from {checkpoint}: it is not a robota checkpoint ({error})"
        ) from None
    fields = dict(config["policy_config"])
    chunk_size = fields.pop("chunk_size")
    return config["policy_type"], int(chunk_size), fields


def check_policy_matches_checkpoint(config: TrainConfig) -> None:
    """Raise unless the config's policy type, chunk size and policy config equal its checkpoint's.

    Raises:
        CheckpointError: `init_from` is not a checkpoint folder.
        SpecError: A setting differs; the message names it.
    """
    from robota.policies.registry import make_config

    policy, chunk_size, overrides = _checkpoint_policy(config.init_from)
    if config.policy != policy:
        raise SpecError(
            f"train config policy {config.policy!r} differs from {policy!r} of the checkpoint "
            f"{config.init_from}; build the config with robota.finetune.finetune_config"
        )
    saved = _as_json(make_config(policy, chunk_size=chunk_size, **overrides).to_dict())
    current = make_config(config.policy, chunk_size=config.chunk_size, **config.policy_overrides)
    current = _as_json(current.to_dict())
    changed = sorted(key for key in saved.keys() | current.keys() if saved.get(key) != current.get(key))
    if changed:
        raise SpecError(
            f"fine-tuning keeps the policy config of {config.init_from}, but {changed} differ "
            f"({ {key: (saved.get(key), current.get(key)) for key in changed} } as checkpoint, "
            "config); build the config with robota.finetune.finetune_config"
        )


def _as_json(values: Mapping[str, Any]) -> dict[str, Any]:
    # A JSON round trip makes tuples and lists, such as image_channels, compare equal.
    return json.loads(json.dumps(values))


def build_finetune_policy(config: TrainConfig, dataset: Any) -> nn.Module:
    """Load `config.init_from`, check the dataset against it and prepare the fine-tuning mode.

    A checkpoint of several robots loads with the dataset's primary robot as its primary one,
    and every robot of the dataset must be one of the checkpoint's.

    Args:
        config: A config with `init_from` set.
        dataset: The training samples, with `spec` and `stats` attributes (and `embodiments`
            for a mix of several robots).

    Returns:
        The policy with the checkpoint's weights and statistics, its parameters frozen or
        adapted as `finetune_mode` and `freeze_encoders` request.

    Raises:
        SpecError: A robot of the dataset is not one of the checkpoint's, or its feature spec
            differs from the checkpoint's (the message names the entry), or the LoRA rank does
            not fit a layer.
    """
    from robota.policies.checkpoint import checkpoint_robots, load_checkpoint

    robots = checkpoint_robots(config.init_from)
    primary = dataset.spec.robot.name
    policy = load_checkpoint(config.init_from, robot=primary if primary in robots else None)
    for robot, (spec, stats) in _dataset_robots(dataset).items():
        saved = _checkpoint_part(policy, robot)
        _check_dataset_fits(config, saved.spec, spec)
        warn_on_drift(saved.stats, stats)
    prepare_parameters(policy, config)
    return policy


def _dataset_robots(dataset: Any) -> dict[str, tuple[Any, Any]]:
    """Return the dataset's robots, name to `(spec, stats)`."""
    embodiments = getattr(dataset, "embodiments", None)
    return dict(embodiments) if embodiments else {dataset.spec.robot.name: (dataset.spec, dataset.stats)}


def _checkpoint_part(policy: nn.Module, robot: str) -> Any:
    """Return the part of the policy with robot `robot`'s spec and stats, or the primary robot's."""
    if robot in getattr(policy, "robot_names", ()):
        return policy.embodiment(robot)
    return policy


def _check_dataset_fits(config: TrainConfig, saved: Any, spec: Any) -> None:
    from robota.datasets.torch_loader import spec_difference

    difference = spec_difference(saved, spec)
    if difference is not None:
        raise SpecError(
            f"dataset {config.dataset} does not fit the checkpoint {config.init_from}: their "
            f"feature specs differ in {difference!r} (checkpoint robot {saved.robot.name}, "
            f"dataset robot {spec.robot.name}); fine-tune on data of the checkpoint's robots "
            "and cameras"
        )


def prepare_parameters(policy: nn.Module, config: TrainConfig) -> list[str]:
    """Freeze and adapt the policy's parameters for `config`'s mode; return the adapted layers."""
    from robota.policies.lora import apply_lora, count_parameters, freeze_image_encoders

    adapted: list[str] = []
    if config.finetune_mode == "lora":
        policy.requires_grad_(False)
        for module in _image_encoders(policy):
            module.requires_grad_(True)
    if config.freeze_encoders:
        freeze_image_encoders(policy)
    if config.finetune_mode == "lora":
        adapted = apply_lora(policy, config.lora_rank, config.lora_alpha)

    trainable, total = count_parameters(policy)
    logger.info(
        "fine-tuning %s from %s in %s mode%s%s: %d of %d parameters trainable (%.1f%%)",
        policy.name,
        config.init_from,
        config.finetune_mode,
        f" (rank {config.lora_rank}, alpha {config.lora_alpha:g}, {len(adapted)} layers adapted)"
        if adapted
        else "",
        ", image encoders frozen" if config.freeze_encoders else "",
        trainable,
        total,
        100.0 * trainable / total,
    )
    return adapted


def _image_encoders(policy: nn.Module) -> list[nn.Module]:
    from robota.policies.layers import ImageEncoder

    return [module for module in policy.modules() if isinstance(module, ImageEncoder)]


def warn_on_drift(checkpoint_stats: Mapping[str, Any], dataset_stats: Mapping[str, Any]) -> None:
    """Log a warning for each vector feature whose dataset mean is far from the checkpoint's."""
    for key, saved in checkpoint_stats.items():
        new = dataset_stats.get(key)
        if new is None or "mean" not in saved or "std" not in saved or "mean" not in new:
            continue
        saved_mean = np.asarray(saved["mean"], dtype=np.float64)
        if saved_mean.ndim != 1:  # Images: per-channel statistics of pixels.
            continue
        scale = np.maximum(np.asarray(saved["std"], dtype=np.float64), 1e-6)
        distance = np.abs(np.asarray(new["mean"], dtype=np.float64) - saved_mean) / scale
        if distance.size and float(distance.max()) > DRIFT_WARNING_STDS:
            logger.warning(
                "the fine-tuning data's mean of %s lies %.1f checkpoint standard deviations from "
                "the checkpoint's (element %d); the checkpoint's statistics are kept, so these "
                "inputs reach the policy outside the range it was trained on",
                key,
                float(distance.max()),
                int(distance.argmax()),
            )


def finetune_provenance(config: TrainConfig, policy: nn.Module) -> dict[str, Any]:
    """Return the `finetune` entry of a fine-tuned checkpoint's config.json."""
    from robota.policies.checkpoint import checkpoint_sha256
    from robota.policies.lora import count_parameters, lora_target_names

    trainable, total = count_parameters(policy)
    provenance: dict[str, Any] = {
        "from": str(config.init_from),
        "from_model_sha256": checkpoint_sha256(config.init_from),
        "mode": config.finetune_mode,
        "freeze_encoders": config.freeze_encoders,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "statistics": "checkpoint",
    }
    if config.finetune_mode == "lora":
        provenance.update(
            lora_rank=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_layers=lora_target_names(policy),
            lora_merged=True,
        )
    return provenance
