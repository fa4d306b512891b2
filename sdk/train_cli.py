"""The `robota train`, `robota finetune` and `robota plot` subcommands.

`register(commands)` adds them to the `robota` CLI's subparsers, replacing earlier ones.
The module also runs alone, which is how torchrun starts it on every process:

    torchrun --nproc-per-node 2 -m robota.train_cli train --config train.toml steps=500
    torchrun --nproc-per-node 2 -m robota.train_cli finetune --from CKPT --dataset D --output OUT

Settings apply in this order: the TOML file of `--config`, the flags, then `KEY=VALUE`
overrides such as `policy.dim_model=64`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robota import console

logger = logging.getLogger("robota.cli")

# Flag destinations and the TrainConfig fields they set.
_FLAGS = {
    "output": "output",
    "policy": "policy",
    "steps": "steps",
    "batch_size": "batch_size",
    "seed": "seed",
    "device": "device",
    "checkpoint_every": "checkpoint_every",
    "eval_every": "eval_every",
    "eval_episodes": "eval_episodes",
    "lr": "lr",
    "mode": "finetune_mode",
    "lora_rank": "lora_rank",
    "lora_alpha": "lora_alpha",
}
# Settings that fine-tuning takes from the checkpoint.
_CHECKPOINT_KEYS = ("policy", "policy_overrides", "chunk_size", "init_from")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `train`, `finetune` and `plot` subcommands to `commands`, replacing existing ones."""
    for name in ("train", "finetune", "plot"):
        _remove_subcommand(commands, name)
    _add_train(commands)
    _add_finetune(commands)
    p = commands.add_parser("plot", help="render a training run's curves to a PNG")
    p.add_argument("run", type=Path, help="run folder that `robota train` wrote")
    p.add_argument("--output", type=Path, help="PNG to write (default: RUN/curves.png)")
    p.set_defaults(handler=_cmd_plot)


def _remove_subcommand(commands: argparse._SubParsersAction, name: str) -> None:
    # argparse has no public way to drop a subparser, so edit the name map and the help list.
    if name in commands.choices:
        del commands.choices[name]
        commands._choices_actions = [a for a in commands._choices_actions if a.dest != name]


class _IntermixedParser(argparse.ArgumentParser):
    """Parses KEY=VALUE overrides placed anywhere among the flags, not only before them."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        # parse_known_intermixed_args calls parse_known_args itself, so only the outer call
        # switches to intermixed parsing.
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _add_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a policy on a dataset or a weighted mix of datasets (alone, or under torchrun)",
        description="Train a policy. Settings come from --config, then the flags, then "
        "KEY=VALUE overrides (a TrainConfig field or policy.FIELD).",
    )
    p.__class__ = _IntermixedParser  # add_parser takes no per-subcommand parser class.
    p.add_argument("--policy", help="policy type (default: act)")
    _add_common_arguments(p, "steps=500 policy.dim_model=64")
    p.set_defaults(handler=_cmd_train)


def _add_finetune(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "finetune",
        help="fine-tune a checkpoint on new data, with LoRA adapters or all weights",
        description="Fine-tune a checkpoint. The policy type, its config, the chunk size and the "
        "normalisation statistics come from the checkpoint. Settings come from --config, then "
        "the flags, then KEY=VALUE overrides (TrainConfig fields).",
    )
    p.__class__ = _IntermixedParser
    p.add_argument("--from", dest="init_from", type=Path, required=True, metavar="CKPT", help="checkpoint folder to start from")
    p.add_argument("--mode", choices=("lora", "full"), help="lora: adapters on the transformer layers, pretrained weights frozen except the image encoders (default); full: every weight trains")
    p.add_argument("--lora-rank", type=int, help="rank of each LoRA adapter (default: 8)")
    p.add_argument("--lora-alpha", type=float, help="LoRA scaling numerator; updates are scaled by alpha / rank (default: 16)")
    p.add_argument("--freeze-encoders", action="store_true", help="keep the image encoders' weights fixed")
    _add_common_arguments(p, "steps=500 warmup_steps=20")
    p.set_defaults(handler=_cmd_finetune)


def _add_common_arguments(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"config overrides, e.g. {example}")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument(
        "--dataset",
        action="append",
        metavar="PATH[:WEIGHT]",
        help="dataset folder, optionally with a relative sampling weight; repeat it to train on "
        "a mix (unweighted entries weigh 1; with no weights, datasets weigh by their frames)",
    )
    p.add_argument("--output", type=Path, help="run folder to write; its top level is the final checkpoint")
    p.add_argument("--steps", type=int, help="optimiser steps (default: 3000)")
    p.add_argument("--batch-size", type=int, help="samples per step and process (default: 32)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the policy's optimizer_lr)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--device", help="torch device: cpu or cuda (default: cpu)")
    p.add_argument("--resume", action="store_true", help="continue from the latest training checkpoint in --output")
    p.add_argument("--checkpoint-every", type=int, help="steps between training checkpoints (0: final only)")
    p.add_argument("--eval-every", type=int, help="steps between rollouts in the twin (default: 0, off)")
    p.add_argument("--eval-episodes", type=int, help="episodes per rollout evaluation (default: 3)")


def build_train_config(args: argparse.Namespace) -> Any:
    """Build the TrainConfig of a parsed `train` or `finetune` command line."""
    from robota.train_config import config_from_dict

    return config_from_dict(_collect_values(args))


def build_finetune_config(args: argparse.Namespace) -> Any:
    """Build the TrainConfig of a parsed `finetune` command line from its checkpoint.

    Raises:
        SpecError: The config file or an override sets a setting that comes from the
            checkpoint, or `dataset` or `output` is missing.
    """
    from robota.errors import SpecError
    from robota.finetune import finetune_config
    from robota.train_config import config_from_dict

    values = _collect_values(args)
    fixed = sorted(key for key in values if key in _CHECKPOINT_KEYS)
    if fixed:
        raise SpecError(
            f"robota finetune takes {fixed} from the checkpoint {args.init_from}; remove them "
            "from the config file and the overrides"
        )
    if args.freeze_encoders:
        values["freeze_encoders"] = True
    values.setdefault("finetune_mode", "lora")
    for required in ("dataset", "output"):
        if required not in values:
            config_from_dict(values)  # Raises the missing-key error of `robota train`.
    dataset, output = values.pop("dataset"), values.pop("output")
    return finetune_config(args.init_from, dataset, output, **values)


def _collect_values(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the config file, the flags and the KEY=VALUE overrides into config-file values."""
    from robota.train_config import apply_overrides, read_config_file

    values: dict[str, Any] = read_config_file(args.config) if args.config is not None else {}
    if args.dataset:
        values["dataset"] = args.dataset[0] if len(args.dataset) == 1 else list(args.dataset)
    for destination, field in _FLAGS.items():
        value = getattr(args, destination, None)
        if value is None:
            continue
        if field == "policy" and isinstance(values.get("policy"), dict):
            values["policy"] = {**values["policy"], "type": value}
        else:
            values[field] = str(value) if isinstance(value, Path) else value
    if args.resume:
        values["resume"] = True
    return apply_overrides(values, args.overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    return _run(build_train_config(args))


def _cmd_finetune(args: argparse.Namespace) -> int:
    return _run(build_finetune_config(args))


def _run(config: Any) -> int:
    from robota.train import train
    from robota.train_dist import env_rank

    if env_rank() != 0:  # Only rank 0 logs and prints; the others report errors alone.
        logging.getLogger("robota").setLevel(logging.ERROR)
        train(config)
        return 0
    with console.progress("train", config.steps) as bar:
        last = [0]

        def report(step: int, metrics: dict) -> None:
            bar.advance(step - last[0], loss=float(metrics.get("loss", float("nan"))))
            last[0] = step

        output = train(config, progress=report)
    print(f"wrote checkpoint {output}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from robota.plot import plot_run

    print(f"wrote {plot_run(args.run, args.output)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `train`, `finetune` or `plot` as the `robota` CLI would, and return the exit status."""
    parser = argparse.ArgumentParser(prog="robota", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(commands)
    args = parser.parse_args(argv)
    return console.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
