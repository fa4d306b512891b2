"""The `robota` command line: one subcommand per step of the main job.

Heavy modules (torch, mujoco) load inside each command, so `robota --help` stays fast.
Errors that robota raises on bad input print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from robota import __version__, console
from robota.dataset_cli import register as register_dataset_commands
from robota.demo import DemoConfig
from robota.import_cli import register as register_import_commands
from robota.keys_cli import register as register_keys_commands
from robota.evaluate import EVAL_SEED_START
from robota.federate_cli import register as register_federate_commands
from robota.sim_cli import register as register_sim_commands
from robota.suite_cli import register as register_suite_commands
from robota.train_cli import register as register_train_commands

logger = logging.getLogger("robota.cli")


def _cmd_record(args: argparse.Namespace) -> int:
    from robota.record import RecordConfig, record

    config = RecordConfig(
        output=args.output,
        task=args.task or ["pick-place"],
        episodes=args.episodes,
        seed=args.seed,
        image_size=args.image_size,
        keep_failures=args.keep_failures,
        robot=args.robot,
        domain_randomization=args.domain_randomization,
    )
    with console.progress("record", config.episodes * len(config.tasks)) as bar:
        result = record(config, progress=bar)
    low, high = result.expert_interval
    print(
        f"wrote {result.kept} episodes to {result.dataset}; expert succeeded on "
        f"{result.successes}/{result.attempts} seeds (95% CI [{low:.0%}, {high:.0%}])"
    )
    return 0


def _cmd_dataset_info(args: argparse.Namespace) -> int:
    from robota.datasets import format_summary, summarise

    summary = summarise(args.dataset)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from robota.evaluate import EvalConfig, evaluate

    config = EvalConfig(
        policy=args.policy,
        task=args.task,
        episodes=args.episodes,
        seed_start=args.seed_start,
        output=args.output,
        workers=args.workers,
        variant=args.variant,
        domain_randomization=args.domain_randomization,
        robot=args.robot,
    )
    with console.progress("eval", config.episodes) as bar:
        report = evaluate(config, progress=bar)
    low, high = report["success_interval_95"]
    print(
        f"success {report['success_rate']:.0%} ({report['successes']}/{report['episodes']}), "
        f"95% Wilson CI [{low:.0%}, {high:.0%}]; report: {config.output}"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from robota.export import export_bundle, parity_observations_from_dataset

    observations = None
    if args.dataset is not None:
        observations = parity_observations_from_dataset(args.dataset, args.parity_frames)
    output = args.output or Path(str(args.checkpoint).rstrip("/") + "-bundle")
    result = export_bundle(
        args.checkpoint,
        output,
        observations=observations,
        tolerance=args.tolerance,
        overwrite=args.overwrite,
        signing_key=args.sign,
        variants=args.variants,
        integration=args.integration,
        robot=args.robot,
    )
    print(
        f"wrote bundle {result.bundle}; parity max abs error {result.parity_max_abs_error:.2e} "
        f"over {result.frames_checked} frames"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from robota.demo import format_summary, run_demo

    config = DemoConfig(
        workdir=args.workdir,
        demonstrations=args.demonstrations,
        eval_episodes=args.eval_episodes,
        train_steps=args.train_steps,
        image_size=args.image_size,
        sites=args.sites,
    )
    summary = run_demo(config)
    _print_table("robota demo", format_summary(summary))
    return 0


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    if console.use_rich() and sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        table.add_column("measure")
        table.add_column("value")
        for name, value in rows:
            table.add_row(name, value)
        Console().print(table)
        return
    width = max(len(name) for name, _ in rows)
    print(title)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one subcommand per step."""
    parser = argparse.ArgumentParser(prog="robota", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"robota {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("record", help="record scripted-expert demonstrations in a twin")
    p.add_argument(
        "--task",
        action="append",
        help="twin task name (default: pick-place); repeat it for a multi-task dataset",
    )
    p.add_argument("--robot", default="ur5e", help="arm of the twin: ur5e or panda (default: ur5e)")
    p.add_argument(
        "--domain-randomization",
        action="store_true",
        help="draw the tasks' physics, appearance, sensor and timing randomisation per episode",
    )
    p.add_argument("--episodes", type=int, default=50, help="successful episodes to keep per task")
    p.add_argument("--output", type=Path, required=True, help="new dataset folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--image-size", type=int, default=96, help="camera image size in pixels")
    p.add_argument("--keep-failures", action="store_true", help="keep failed episodes too")
    p.set_defaults(handler=_cmd_record)

    p = commands.add_parser("dataset", help="inspect datasets")
    dataset_commands = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    q = dataset_commands.add_parser("info", help="summarise a dataset folder")
    q.add_argument("dataset", type=Path, help="dataset folder (LeRobot v3.0 layout)")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(handler=_cmd_dataset_info)
    register_dataset_commands(dataset_commands)
    register_import_commands(dataset_commands)

    register_train_commands(commands)

    p = commands.add_parser("eval", help="roll a checkpoint or bundle out in a twin")
    p.add_argument("--policy", type=Path, required=True, help="checkpoint or bundle folder")
    p.add_argument("--task", default="pick-place", help="twin task name (default: pick-place)")
    p.add_argument("--episodes", type=int, default=50, help="episodes, one unseen seed each")
    p.add_argument("--seed-start", type=int, default=EVAL_SEED_START, help="first evaluation seed")
    p.add_argument("--output", type=Path, default=Path("eval-report.json"), help="JSON report")
    p.add_argument("--workers", type=int, default=1, help="processes running episodes")
    p.add_argument(
        "--variant", choices=("fp16", "int8"), help="run a bundle's reduced-precision model"
    )
    p.add_argument(
        "--domain-randomization",
        action="store_true",
        help="draw the task's domain randomisation per episode; the report lists the draws",
    )
    p.add_argument(
        "--robot",
        help="robot to evaluate a checkpoint of several robots for, which is also the twin's "
        "arm (default: the checkpoint's primary robot)",
    )
    p.set_defaults(handler=_cmd_eval)

    p = commands.add_parser("export", help="export a checkpoint to an ONNX bundle")
    p.add_argument("checkpoint", type=Path, help="checkpoint folder")
    p.add_argument("--output", type=Path, help="bundle folder (default: CHECKPOINT-bundle)")
    p.add_argument("--dataset", type=Path, help="dataset whose frames the parity check uses")
    p.add_argument("--parity-frames", type=int, default=64, help="frames for the parity check")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs parity error allowed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    p.add_argument(
        "--variants",
        type=lambda text: tuple(v for v in text.split(",") if v),
        default=(),
        metavar="LIST",
        help="reduced-precision copies to add, comma-separated: fp16, int8",
    )
    p.add_argument(
        "--sign", type=Path, metavar="KEY", help="Ed25519 private key (PEM) to sign the manifest"
    )
    p.add_argument(
        "--integration",
        metavar="MODE",
        help="flow policies only: 'unrolled' repeats the action expert once per integration "
        "step in the graph, 'loop' runs it in one ONNX Loop node (default: unrolled)",
    )
    p.add_argument(
        "--robot",
        help="robot to export a checkpoint of several robots for (default: the checkpoint's "
        "primary robot)",
    )
    p.set_defaults(handler=_cmd_export)

    p = commands.add_parser("demo", help="run the main job end to end on the built-in twin")
    p.add_argument("--workdir", type=Path, default=DemoConfig.workdir, help="parent of the run folder")
    p.add_argument(
        "--demonstrations", type=int, default=DemoConfig.demonstrations, help="expert episodes"
    )
    p.add_argument(
        "--eval-episodes", type=int, default=DemoConfig.eval_episodes, help="seeds per evaluation"
    )
    p.add_argument(
        "--train-steps", type=int, default=DemoConfig.train_steps, help="optimiser steps"
    )
    p.add_argument(
        "--image-size", type=int, default=DemoConfig.image_size, help="camera size in pixels"
    )
    p.add_argument(
        "--sites",
        type=int,
        default=DemoConfig.sites,
        help="split the demonstrations across this many local Flower sites (default: 1)",
    )
    p.set_defaults(handler=_cmd_demo)

    register_sim_commands(commands)
    register_keys_commands(commands)
    register_suite_commands(commands)
    register_federate_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status."""
    args = build_parser().parse_args(argv)
    return console.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
