"""TrainConfig, the settings of one training run, and its TOML form with dotted overrides.

A config file is TOML. Top-level keys are `TrainConfig` fields, and the `[policy]` table names
the policy (`type`) and changes fields of its config:

    dataset = "runs/dataset"
    output = "runs/train"
    steps = 500

    [policy]
    type = "act"
    dim_model = 64

`load_config(path, overrides)` reads such a file and applies `KEY=VALUE` overrides, where a key is
a field name or `policy.FIELD` and the value is read as a TOML value (a bare word is a string).
`config_to_toml(config)` writes the same form back, so a saved config reloads unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robota.errors import SpecError, UnknownNameError, check_choice

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 has no tomllib; tomli is the same parser.
    import tomli as tomllib

MIXED_PRECISION_MODES = ("auto", "no", "bf16", "fp16")
LR_SCALING_RULES = ("linear", "sqrt", "none")
DATASET_WEIGHTINGS = ("frames", "equal")
FINETUNE_MODES = ("lora", "full")


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """One dataset of a training run and its sampling weight.

    Attributes:
        path: Dataset folder.
        weight: Relative sampling weight, or None where the entry gave none.
    """

    path: Path
    weight: float | None = None

    def to_entry(self) -> str:
        """Return the `PATH` or `PATH:WEIGHT` form that `parse_dataset_entry` reads."""
        return str(self.path) if self.weight is None else f"{self.path}:{self.weight!r}"


def parse_dataset_entry(entry: str | Path | Mapping[str, Any]) -> DatasetSource:
    """Read a dataset entry: a path, `PATH:WEIGHT`, or a table with `path` and `weight`.

    The text after the last colon is the weight, unless the whole entry names an existing
    folder (a folder name may contain a colon) or the text contains a path separator.

    Raises:
        SpecError: The weight is not a number, is not positive and finite, or the path is empty.
    """
    if isinstance(entry, Path):
        return DatasetSource(entry)
    if isinstance(entry, Mapping):
        unknown = sorted(set(entry) - {"path", "weight"})
        if unknown or "path" not in entry:
            raise SpecError(
                f"dataset entry {dict(entry)!r} is invalid; a table needs 'path' and may have "
                f"'weight', got keys {sorted(entry)}"
            )
        weight = entry.get("weight")
        return DatasetSource(Path(entry["path"]), None if weight is None else _check_weight(entry, weight))
    if not isinstance(entry, str):
        raise SpecError(f"dataset entry {entry!r} must be a path string, got {type(entry).__name__}")
    path, separator, suffix = entry.rpartition(":")
    if not separator or Path(entry).exists() or "/" in suffix or "\\" in suffix:
        return DatasetSource(Path(entry))
    if not path:
        raise SpecError(f"dataset entry {entry!r} has no path before the ':'; write PATH:WEIGHT")
    try:
        weight = float(suffix)
    except ValueError:
        raise SpecError(
            f"dataset entry {entry!r} is malformed: {suffix!r} after the last ':' is not a "
            "number; write PATH or PATH:WEIGHT with a positive weight, for example runs/a:0.3"
        ) from None
    return DatasetSource(Path(path), _check_weight(entry, weight))


def _check_weight(entry: Any, weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise SpecError(f"dataset entry {entry!r} has weight {weight!r}; use a positive number")
    if not (math.isfinite(weight) and weight > 0):
        raise SpecError(
            f"dataset entry {entry!r} has weight {weight}; weights must be positive and finite"
        )
    return float(weight)


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run.

    Attributes:
        dataset: Dataset folder (LeRobot v3.0 layout), or several as a list of `PATH` or
            `PATH:WEIGHT` entries to train on their mix (see `dataset_sources`). Datasets of
            one robot must share one feature spec, and their statistics are pooled. Datasets
            of several robots (for the `flow` policy) may differ in the robot's joints.
        output: Run folder to write: the final checkpoint at its top level, training-state
            checkpoints under `checkpoints/`, `metrics.csv`, TensorBoard events under
            `tensorboard/` and the resolved config as `train_config.toml`.
        policy: Registered policy name.
        steps: Optimiser steps.
        batch_size: Samples per forward pass in each process (one micro-batch).
        lr: Peak AdamW learning rate before scaling; `None` takes the policy config's
            `optimizer_lr`.
        weight_decay: AdamW weight decay; `None` takes the policy config's
            `optimizer_weight_decay`.
        warmup_steps: Steps of linear learning-rate warmup before the cosine decay.
        min_lr_ratio: Final learning rate as a fraction of the peak.
        grad_clip_norm: Maximum gradient norm; larger gradients are scaled down.
        seed: Seed of Python, numpy, torch and the data order.
        num_workers: DataLoader worker processes per training process; 0 loads in the
            training process.
        device: Torch device, for example `cpu` or `cuda`. Under torchrun, `cuda` means each
            process's own GPU (`cuda:LOCAL_RANK`).
        log_every: Steps between progress reports and metrics rows.
        chunk_size: Future actions per sample, passed to the dataset and the policy.
        policy_overrides: Fields of the policy config to change, for example `{"dim_model": 64}`.
        grad_accum_steps: Micro-batches whose gradients are summed before each optimiser step.
        mixed_precision: `auto` (bf16 autocast on a GPU that supports it, else fp16 with loss
            scaling; off on the CPU), `no`, `bf16` or `fp16`. `bf16` and `fp16` need a GPU.
        ema_decay: Decay of the exponential moving average of the weights, for example 0.999;
            `None` keeps no average. With an average, checkpoints hold the averaged weights.
        lr_scaling: How the peak learning rate grows with the effective batch size relative to
            `batch_size`: `linear` (times the ratio), `sqrt` (times its square root) or `none`.
        checkpoint_every: Steps between training-state checkpoints in `checkpoints/`, plus one
            after the last step; 0 writes only the final checkpoint.
        keep_last: Training-state checkpoints kept besides the best one.
        val_fraction: Share of the episodes (the last ones) held out for a validation loss,
            computed at every training-state checkpoint; 0 holds out nothing.
        eval_every: Steps between rollouts of the current weights in the twin; 0 is off.
        eval_episodes: Episodes per rollout evaluation.
        eval_task: Twin task of the rollout evaluation.
        tensorboard: Whether to write TensorBoard event files (needs the tensorboard package).
        resume: Continue from the latest training-state checkpoint in `output`, if any.
        dist_timeout_s: Timeout of collective operations between processes, in seconds.
        num_threads: Torch intra-op threads per process; 0 keeps torch's default (one per
            core). On a CPU shared with other processes, one thread is much faster than two
            (see benchmarks/train_throughput.py).
        dataset_weighting: Sampling weight of mixed datasets whose entries give none: `frames`
            (proportional to their samples, as if the datasets were one) or `equal`. Where some
            entries give a weight, the others weigh 1.
        init_from: Checkpoint to fine-tune; None trains from scratch. The policy type, its
            config and `chunk_size` must then equal the checkpoint's (`robota.finetune.
            finetune_config` fills them in), and the checkpoint's normalisation statistics are kept.
        finetune_mode: With `init_from`: `lora` (low-rank adapters on the transformer layers'
            attention and MLP linears, every pretrained weight frozen except the image
            encoders') or `full` (every weight trains).
        lora_rank: Rank of each LoRA adapter.
        lora_alpha: LoRA scaling numerator; an adapter adds `lora_alpha / lora_rank * B @ A`.
        freeze_encoders: With `init_from`, keep the image encoders' weights fixed.
    """

    dataset: Path | list[str]
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
    grad_accum_steps: int = 1
    mixed_precision: str = "auto"
    ema_decay: float | None = None
    lr_scaling: str = "linear"
    checkpoint_every: int = 1000
    keep_last: int = 2
    val_fraction: float = 0.0
    eval_every: int = 0
    eval_episodes: int = 3
    eval_task: str = "pick-place"
    tensorboard: bool = True
    resume: bool = False
    dist_timeout_s: float = 1800.0
    num_threads: int = 0
    dataset_weighting: str = "frames"
    init_from: Path | None = None
    finetune_mode: str = "lora"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    freeze_encoders: bool = False

    def __post_init__(self) -> None:
        self.dataset = _normalise_datasets(self.dataset)
        self.output = Path(self.output)
        if self.init_from is not None:
            self.init_from = Path(self.init_from)
        self.policy_overrides = dict(self.policy_overrides)
        _check_types(self)
        for field in ("steps", "batch_size", "log_every", "chunk_size", "grad_accum_steps"):
            _check_int(self, field, minimum=1)
        for field in (
            "warmup_steps",
            "num_workers",
            "seed",
            "checkpoint_every",
            "eval_every",
            "num_threads",
        ):
            _check_int(self, field, minimum=0)
        _check_int(self, "keep_last", minimum=1)
        _check_int(self, "eval_episodes", minimum=1)
        _check_int(self, "lora_rank", minimum=1)
        self._check_floats()
        check_choice("mixed_precision mode", self.mixed_precision, MIXED_PRECISION_MODES)
        check_choice("learning-rate scaling rule", self.lr_scaling, LR_SCALING_RULES)
        check_choice("dataset weighting", self.dataset_weighting, DATASET_WEIGHTINGS)
        check_choice("fine-tuning mode", self.finetune_mode, FINETUNE_MODES)
        if "chunk_size" in self.policy_overrides:
            raise SpecError(
                "set the chunk size with TrainConfig.chunk_size, not "
                "policy_overrides['chunk_size'], because the dataset needs it too"
            )
        from robota.policies.registry import make_config  # Imports torch; validates the overrides.

        make_config(self.policy, chunk_size=self.chunk_size, **self.policy_overrides)
        _check_device(self.device, self.mixed_precision)
        if self.init_from is not None:
            from robota.finetune import check_policy_matches_checkpoint

            check_policy_matches_checkpoint(self)

    @property
    def dataset_sources(self) -> list[DatasetSource]:
        """The datasets of the run with their weights as written (None where unset)."""
        if isinstance(self.dataset, Path):
            return [DatasetSource(self.dataset)]
        return [parse_dataset_entry(entry) for entry in self.dataset]

    def _check_floats(self) -> None:
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
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise SpecError(
                f"train config ema_decay must be in (0, 1), for example 0.999, got {self.ema_decay}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise SpecError(f"train config val_fraction must be in [0, 1), got {self.val_fraction}")
        if not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise SpecError(f"train config lora_alpha must be positive, got {self.lora_alpha}")
        if not (math.isfinite(self.dist_timeout_s) and self.dist_timeout_s > 0):
            raise SpecError(
                f"train config dist_timeout_s must be a positive number of seconds, "
                f"got {self.dist_timeout_s}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values."""
        data = dataclasses.asdict(self)
        data["dataset"] = str(self.dataset) if isinstance(self.dataset, Path) else list(self.dataset)
        data["output"] = str(self.output)
        data["init_from"] = None if self.init_from is None else str(self.init_from)
        return data


def _normalise_datasets(value: Any) -> Path | list[str]:
    """Return one dataset as a Path, or several as `PATH` / `PATH:WEIGHT` strings.

    Raises:
        SpecError: An entry is malformed, a dataset is listed twice, or the list is empty.
    """
    entries = list(value) if isinstance(value, (list, tuple)) else [value]
    if not entries:
        raise SpecError("train config dataset is an empty list; name at least one dataset folder")
    sources = [parse_dataset_entry(entry) for entry in entries]
    seen: set[Path] = set()
    for source in sources:
        if source.path in seen:
            raise SpecError(
                f"train config dataset lists {source.path} twice; list each dataset once and "
                "give it a larger weight instead"
            )
        seen.add(source.path)
    if len(sources) == 1:  # A weight has no effect on a single dataset.
        return sources[0].path
    return [source.to_entry() for source in sources]


def _check_int(config: TrainConfig, field: str, *, minimum: int) -> None:
    value = getattr(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        if minimum == 0:
            kind = "a non-negative integer"
        raise SpecError(f"train config {field} must be {kind}, got {value!r}")


def _check_types(config: TrainConfig) -> None:
    """Raise SpecError for a value whose type does not fit its field, such as `steps = "5"`."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        allowed = _allowed_types(hints[field.name])
        if allowed and not _fits(value, allowed):
            names = " or ".join(sorted(t.__name__ for t in allowed))
            raise SpecError(
                f"train config {field.name} must be {names}, got {type(value).__name__} {value!r}"
            )


def _allowed_types(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint)
    candidates = args if args and typing.get_origin(hint) is not dict else (hint,)
    allowed = []
    for candidate in candidates:
        origin = typing.get_origin(candidate) or candidate
        if isinstance(origin, type):
            allowed.append(origin)
    return tuple(allowed)


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def _check_device(device: str, mixed_precision: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise SpecError(f"train config device {device!r} is invalid; use cpu or cuda") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"train config device {device!r} requested CUDA, which is not available")
    if parsed.type != "cuda" and mixed_precision in ("bf16", "fp16"):
        raise SpecError(
            f"train config mixed_precision {mixed_precision!r} needs a CUDA device, got "
            f"device {device!r}; set mixed_precision = 'no' or 'auto' on the CPU"
        )


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Build a TrainConfig from a TOML file and `KEY=VALUE` overrides, in that order.

    Args:
        path: TOML config file, or None to start from the overrides alone.
        overrides: Strings such as `steps=500` or `policy.dim_model=64`. The value is parsed as
            TOML (`5`, `1e-3`, `true`, `[8, 16]`, `"text"`); anything else is taken as a string.

    Raises:
        SpecError: The file is missing or not valid TOML, an override lacks `=`, or the
            resulting config is invalid.
        UnknownNameError: A key is not a TrainConfig field (with the nearest valid name).
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = read_config_file(Path(path))
    return config_from_dict(apply_overrides(values, overrides))


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of config-file `values` with `KEY=VALUE` strings applied."""
    result = {key: dict(value) if isinstance(value, Mapping) else value for key, value in values.items()}
    for override in overrides:
        key, separator, text = override.partition("=")
        key = key.strip()
        if not separator or not key:
            raise SpecError(
                f"override {override!r} is not KEY=VALUE; write for example steps=500 or "
                "policy.dim_model=64"
            )
        value = parse_value(text.strip())
        section, dot, name = key.partition(".")
        if not dot:
            result[key] = value
            continue
        if section != "policy":
            raise SpecError(
                f"override key {key!r} is invalid: only policy.FIELD keys may contain a dot"
            )
        table = result.get("policy")
        table = dict(table) if isinstance(table, Mapping) else {"type": table or "act"}
        table[name] = value
        result["policy"] = table
    return result


def parse_value(text: str) -> Any:
    """Read one override value as TOML, or return it unchanged as a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Build a TrainConfig from config-file values (the `[policy]` table form).

    Raises:
        UnknownNameError: A key is not a TrainConfig field.
        SpecError: A required key is missing or a value is invalid.
    """
    values = dict(values)
    policy = values.pop("policy", None)
    if isinstance(policy, Mapping):
        overrides = dict(policy)
        values["policy"] = overrides.pop("type", "act")
        values["policy_overrides"] = overrides
    elif policy is not None:
        values["policy"] = policy
    fields = [field.name for field in dataclasses.fields(TrainConfig)]
    for key in values:
        if key not in fields:
            raise UnknownNameError("train config key", key, [*fields, "policy.FIELD"])
    for required in ("dataset", "output"):
        if required not in values:
            raise SpecError(
                f"train config has no {required!r}; set it in the config file, as "
                f"{required}=PATH or with --{required}"
            )
    return TrainConfig(**values)


def config_to_toml(config: TrainConfig) -> str:
    """Write the config as TOML in the form `load_config` reads; unset (None) values are left out."""
    data = config.to_dict()
    overrides = data.pop("policy_overrides")
    policy = data.pop("policy")
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items() if value is not None]
    lines += ["", "[policy]", f"type = {_toml_value(policy)}"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in sorted(overrides.items())]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            return repr(value)
        if math.isnan(value):
            return "nan"
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file into a dict.

    Raises:
        SpecError: The file is missing or not valid TOML.
    """
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise SpecError(f"train config file {path} not found; pass an existing TOML file") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"train config file {path} is not valid TOML: {error}") from None
