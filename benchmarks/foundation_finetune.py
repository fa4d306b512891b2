"""Pretrain the flow policy on several twin tasks, then fine-tune it on a held-out task.

Data. The scripted experts record UR5e demonstrations of every pretraining task
(`--pretrain TASK:EPISODES`, repeatable) and of the held-out task (`--heldout`) at each size of
`--demos`. Recording seeds start at 0 for every dataset, so the 10-demo dataset contains the
first 10 episodes of the 50-demo one. Evaluation seeds start at one million, which recording never
uses.

Runs, each on one torch thread:

- pretrain: the flow policy on the mix of the pretraining datasets, each with an equal share of
  every batch (`dataset_weighting = "equal"`), for `--pretrain-steps`;
- finetune-MODE-N: `robota finetune --from pretrain` on N held-out demos for
  `--finetune-steps`, once per mode of `--finetune-modes`: `full` at `--finetune-lr`, `lora`
  at `--lora-lr`. The first mode is the main one, which the data-efficiency ratio uses;
- scratch-N: a fresh flow policy of the same size on the same N demos, for the same steps;
- zero-shot: the pretrained checkpoint on the held-out task without any of its demos.

Figures: twin success of each checkpoint over `--eval-episodes` unseen seeds with a Wilson 95%
interval, wall time of every phase, and the data-efficiency ratio (`efficiency_ratio`). The ratio
at N demos is the demo count that training from scratch needs to reach the fine-tuned policy's
success at N, interpolated linearly between the measured demo counts, divided by N. The script writes the
figures as JSON and, with `--figures`, two PNGs: success against demos and the training losses.

    python benchmarks/foundation_finetune.py --workdir runs/foundation --output runs/foundation.json \
        --figures docs/figures
    python benchmarks/foundation_finetune.py --pretrain pick-place:2 --demos 1,2 --pretrain-steps 5 \
        --finetune-steps 5 --eval-episodes 2   # plumbing check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from robota.evaluate import EvalConfig, evaluate
from robota.finetune import finetune_config
from robota.record import RecordConfig, record
from robota.train import TrainConfig, train

# The pretraining mix leaves conveyor out. Sort is in it, so pick-place is too: holding out
# pick-place while sort (the same motion into a named bin) is pretrained would test a near copy.
DEFAULT_PRETRAIN = ("pick-place:40", "peg-in-hole:40", "machine-tending:40", "sort:60")
DEFAULT_HELDOUT = "conveyor"
# A flow policy small enough for a few thousand CPU steps; `--policy-overrides` changes it.
DEFAULT_POLICY = {
    "dim_model": 64,
    "n_heads": 4,
    "dim_feedforward": 128,
    "image_channels": [8, 16, 16, 32, 32],
}
TIMING_FILE = "benchmark_timing.json"
EVAL_FILE = "benchmark_eval.json"

logger = logging.getLogger(__name__)


# Data-efficiency ratio ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemosNeeded:
    """Demos that training from scratch needs to reach a success rate.

    Attributes:
        demos: The interpolated demo count, or the measured end it is bounded by.
        bound: `exact` (interpolated between two measured counts), `at_most` (the smallest
            measured count already reaches the target) or `more_than` (no measured count does).
    """

    demos: float
    bound: str


def scratch_demos_needed(demos: Sequence[int], success: Sequence[float], target: float) -> DemosNeeded:
    """Find where the from-scratch success curve first reaches `target`.

    The curve joins the measured points `(demos[i], success[i])` with straight lines.

    Args:
        demos: Demo counts of the from-scratch runs, ascending.
        success: Success rate of each from-scratch run, in [0, 1].
        target: Success rate to reach, in [0, 1].

    Raises:
        ValueError: The lists are empty, differ in length or the demo counts do not ascend.
    """
    if not demos or len(demos) != len(success):
        raise ValueError(f"need one success rate per demo count, got {list(demos)} and {list(success)}")
    if any(later <= earlier for earlier, later in zip(demos, demos[1:])):
        raise ValueError(f"demo counts must ascend, got {list(demos)}")

    if success[0] >= target:
        return DemosNeeded(float(demos[0]), "at_most")
    for index in range(1, len(demos)):
        if success[index] >= target:
            low_demos, high_demos = demos[index - 1], demos[index]
            low_success, high_success = success[index - 1], success[index]
            fraction = (target - low_success) / (high_success - low_success)
            return DemosNeeded(low_demos + fraction * (high_demos - low_demos), "exact")
    return DemosNeeded(float(demos[-1]), "more_than")


def efficiency_ratio(
    demos: Sequence[int], scratch_success: Sequence[float], finetuned_success: float, finetuned_demos: int
) -> dict[str, Any]:
    """Return the data-efficiency ratio of a fine-tuned run against the from-scratch curve.

    The ratio is the demos scratch needs for the fine-tuned success, divided by the fine-tuned
    run's demos. `bound` is `exact` for a point value, `at_most` for an upper bound and
    `more_than` for a lower bound. A fine-tuned success of 0 gives no ratio, since any run
    reaches it.
    """
    if finetuned_success <= 0.0:
        return {"ratio": None, "bound": "undefined", "scratch_demos": None}
    needed = scratch_demos_needed(demos, scratch_success, finetuned_success)
    return {"ratio": needed.demos / finetuned_demos, "bound": needed.bound, "scratch_demos": needed.demos}


# Data --------------------------------------------------------------------------------------------


def parse_task_entry(entry: str) -> tuple[str, int]:
    """Split `TASK:EPISODES` into the task name and a positive episode count."""
    task, separator, count = entry.rpartition(":")
    if not separator or not task or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected TASK:EPISODES such as sort:60, got {entry!r}")
    return task, int(count)


def record_dataset(root: Path, task: str, episodes: int, image_size: int) -> dict[str, Any]:
    """Record `episodes` UR5e expert demos of `task` into `root/TASK-EPISODES`, or reuse it."""
    folder = root / f"{task}-{episodes}"
    if (folder / "meta" / "info.json").is_file():
        logger.warning("reusing the dataset %s", folder)
        return {"path": folder, "record_wall_s": None}
    started = time.perf_counter()
    record(RecordConfig(output=folder, task=task, episodes=episodes, image_size=image_size, robot="ur5e"))
    return {"path": folder, "record_wall_s": time.perf_counter() - started}


# Runs --------------------------------------------------------------------------------------------


def timed_train(config: TrainConfig) -> dict[str, Any]:
    """Train `config`, or reuse its finished run folder, and return the checkpoint and wall time."""
    timing_path = Path(config.output) / TIMING_FILE
    if timing_path.is_file():
        logger.warning("reusing the run %s", config.output)
        return {"checkpoint": Path(config.output), **json.loads(timing_path.read_text(encoding="utf-8"))}
    started = time.perf_counter()
    checkpoint = train(config)
    timing = {"train_wall_s": time.perf_counter() - started, "steps": config.steps}
    timing_path.write_text(json.dumps(timing), encoding="utf-8")
    return {"checkpoint": checkpoint, **timing}


def common_settings(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields shared by every run."""
    return {
        "batch_size": args.batch_size,
        "seed": args.seed,
        "tensorboard": False,
        "checkpoint_every": 0,
        "num_threads": 1,
        "log_every": args.log_every,
    }


def run_pretrain(args: argparse.Namespace, datasets: Sequence[Path], root: Path) -> dict[str, Any]:
    """Train the flow policy on the equal-share mix of the pretraining datasets."""
    config = TrainConfig(
        dataset=[str(path) for path in datasets],
        output=root / "pretrain",
        policy="flow",
        policy_overrides=json.loads(args.policy_overrides),
        steps=args.pretrain_steps,
        dataset_weighting="equal",
        **common_settings(args),
    )
    return timed_train(config)


def run_finetune(
    args: argparse.Namespace, mode: str, pretrained: Path, dataset: Path, output: Path
) -> dict[str, Any]:
    """Fine-tune the pretrained checkpoint on one held-out dataset in `mode` (full or lora)."""
    config = finetune_config(
        pretrained,
        dataset=dataset,
        output=output,
        steps=args.finetune_steps,
        finetune_mode=mode,
        lr=args.finetune_lr if mode == "full" else args.lora_lr,
        **common_settings(args),
    )
    return timed_train(config)


def run_scratch(args: argparse.Namespace, dataset: Path, output: Path) -> dict[str, Any]:
    """Train a fresh flow policy of the pretrained size on one held-out dataset."""
    config = TrainConfig(
        dataset=dataset,
        output=output,
        policy="flow",
        policy_overrides=json.loads(args.policy_overrides),
        steps=args.finetune_steps,
        **common_settings(args),
    )
    return timed_train(config)


def twin_success(args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    """Evaluate `checkpoint` on the held-out task's unseen seeds, or reuse its earlier result."""
    cache = Path(checkpoint) / EVAL_FILE
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("task") == args.heldout and cached["episodes"] == args.eval_episodes:
            return cached["result"]
    started = time.perf_counter()
    report = evaluate(
        EvalConfig(policy=checkpoint, task=args.heldout, episodes=args.eval_episodes, workers=args.eval_workers)
    )
    result = {
        "successes": report["successes"],
        "episodes": report["episodes"],
        "success_rate": report["success_rate"],
        "wilson_95": list(report["success_interval_95"]),
        "eval_wall_s": time.perf_counter() - started,
    }
    cache.write_text(json.dumps({"task": args.heldout, "episodes": args.eval_episodes, "result": result}), encoding="utf-8")
    return result


def final_loss(run_folder: Path) -> float | None:
    """Return the last training loss that `metrics.csv` of a run recorded."""
    from robota.train_metrics import read_metrics

    series = read_metrics(run_folder / "metrics.csv").get("loss", [])
    return series[-1][1] if series else None


# Plots -------------------------------------------------------------------------------------------


def plot_success_vs_demos(document: dict[str, Any], path: Path) -> None:
    """Draw twin success against held-out demos, fine-tuned and scratch, with Wilson 95% bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    runs = document["runs"]
    figure, axis = pyplot.subplots(figsize=(6, 4))
    # The curves sit a little apart at each demo count so their bars do not overlap.
    curves = [(f"finetune-{mode}-", f"fine-tuned ({mode}) from the pretrained policy") for mode in document["settings"]["finetune_modes"]]
    curves.append(("scratch-", "trained from scratch"))
    for index, (prefix, label) in enumerate(curves):
        offset = 0.8 * (index - (len(curves) - 1) / 2)
        names = sorted((name for name in runs if name.startswith(prefix)), key=lambda name: runs[name]["demos"])
        demos = [runs[name]["demos"] + offset for name in names]
        rates = [runs[name]["twin"]["success_rate"] for name in names]
        below = [rate - runs[name]["twin"]["wilson_95"][0] for name, rate in zip(names, rates)]
        above = [runs[name]["twin"]["wilson_95"][1] - rate for name, rate in zip(names, rates)]
        axis.errorbar(demos, rates, yerr=[below, above], marker="s" if prefix == "scratch-" else "o", capsize=4, label=label)
    zero_shot = runs.get("pretrain", {}).get("twin")
    if zero_shot is not None:
        axis.errorbar([0], [zero_shot["success_rate"]], yerr=[[zero_shot["success_rate"] - zero_shot["wilson_95"][0]],
                      [zero_shot["wilson_95"][1] - zero_shot["success_rate"]]], marker="^", capsize=4,
                      color="grey", label="pretrained, zero-shot")
    settings = document["settings"]
    axis.set_xticks([0, *settings["demos"]])
    axis.set_xlabel(f"held-out {settings['heldout']} demonstrations")
    axis.set_ylabel(f"success over {settings['eval_episodes']} unseen seeds")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def plot_loss_curves(run_folders: dict[str, Path], path: Path) -> None:
    """Draw the training loss of every run, pretraining in its own panel."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from robota.train_metrics import read_metrics

    # One colour per kind of run (full, lora, scratch) and one line style per demo count.
    colours = {"finetune-full": "tab:blue", "finetune-lora": "tab:orange", "scratch": "tab:green", "pretrain": "tab:grey"}
    demo_counts = sorted({int(name.rsplit("-", 1)[1]) for name in run_folders if name != "pretrain"})
    styles = dict(zip(demo_counts, ("-", "--", ":", "-.")))
    figure, (pretrain_axis, heldout_axis) = pyplot.subplots(1, 2, figsize=(11, 4))
    for name, folder in run_folders.items():
        steps, losses = zip(*read_metrics(folder / "metrics.csv")["loss"])
        if name == "pretrain":
            pretrain_axis.plot(steps, losses, label=name, color=colours["pretrain"])
            continue
        kind, demos = name.rsplit("-", 1)
        heldout_axis.plot(steps, losses, label=name, color=colours.get(kind), linestyle=styles.get(int(demos), "-"))
    for axis, title in ((pretrain_axis, "pretraining on the task mix"), (heldout_axis, "held-out task")):
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.set_ylabel("flow-matching loss")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


# Orchestration -----------------------------------------------------------------------------------


def record_all(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Record (or reuse) the pretraining and held-out datasets."""
    pretrain = [record_dataset(root, task, episodes, args.image_size) for task, episodes in args.pretrain]
    heldout = {demos: record_dataset(root, args.heldout, demos, args.image_size) for demos in args.demos}
    return {"pretrain": pretrain, "heldout": heldout}


def train_and_measure(args: argparse.Namespace, root: Path, data: dict[str, Any], save) -> dict[str, Any]:
    """Run pretraining, then fine-tune and scratch at every demo count; measure each checkpoint."""
    runs: dict[str, Any] = {}
    pretrain = run_pretrain(args, [entry["path"] for entry in data["pretrain"]], root / "runs")
    pretrained = pretrain.pop("checkpoint")
    runs["pretrain"] = {**pretrain, "final_loss": final_loss(pretrained)}
    if args.zero_shot:
        runs["pretrain"]["twin"] = twin_success(args, pretrained)
    save(runs)

    for demos in args.demos:
        dataset = data["heldout"][demos]["path"]
        for mode in (*args.finetune_modes, "scratch"):
            name = f"scratch-{demos}" if mode == "scratch" else f"finetune-{mode}-{demos}"
            output = root / "runs" / name
            if mode == "scratch":
                run = run_scratch(args, dataset, output)
            else:
                run = run_finetune(args, mode, pretrained, dataset, output)
            checkpoint = run.pop("checkpoint")
            runs[name] = {**run, "demos": demos, "final_loss": final_loss(checkpoint)}
            runs[name]["twin"] = twin_success(args, checkpoint)
            logger.warning("%s done: %s", name, json.dumps(runs[name]))
            save(runs)
    return runs


def summarise(args: argparse.Namespace, runs: dict[str, Any]) -> dict[str, Any]:
    """Compute the data-efficiency ratios and the wall-time comparison."""
    demos = list(args.demos)
    scratch = [runs[f"scratch-{n}"]["twin"]["success_rate"] for n in demos]
    main_mode = args.finetune_modes[0]
    summary: dict[str, Any] = {"main_mode": main_mode, "efficiency": {}, "wall_s": {}}
    for n in demos:
        finetuned = runs[f"finetune-{main_mode}-{n}"]
        summary["efficiency"][str(n)] = {
            **efficiency_ratio(demos, scratch, finetuned["twin"]["success_rate"], n),
            "success_difference": finetuned["twin"]["success_rate"] - runs[f"scratch-{n}"]["twin"]["success_rate"],
        }
        summary["wall_s"][str(n)] = {
            "finetune": finetuned["train_wall_s"],
            "finetune_plus_pretrain": finetuned["train_wall_s"] + runs["pretrain"]["train_wall_s"],
            "scratch": runs[f"scratch-{n}"]["train_wall_s"],
        }
    return summary


def print_table(runs: dict[str, Any], summary: dict[str, Any]) -> None:
    """Print one row per run and the efficiency ratios."""
    print(f"{'run':<13} {'success':>12} {'95% interval':>13} {'final loss':>10} {'train s':>8} {'eval s':>7}")
    for name, run in runs.items():
        twin = run.get("twin")
        if twin is None:
            cells = f"{'-':>12} {'-':>13}"
        else:
            low, high = twin["wilson_95"]
            cells = f"{twin['successes']:>5}/{twin['episodes']:<3} {twin['success_rate']:3.0%} {f'{low:.2f}-{high:.2f}':>13}"
        eval_s = f"{twin['eval_wall_s']:7.0f}" if twin else f"{'-':>7}"
        loss = f"{run['final_loss']:10.4f}" if run.get("final_loss") is not None else f"{'-':>10}"
        print(f"{name:<13} {cells} {loss} {run['train_wall_s']:8.0f} {eval_s}")
    for demos, entry in summary["efficiency"].items():
        ratio = "-" if entry["ratio"] is None else f"{entry['ratio']:.2f}"
        print(f"efficiency at {demos} demos: ratio {ratio} ({entry['bound']}), "
              f"success difference {entry['success_difference']:+.2f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pretrain", type=parse_task_entry, action="append",
        help=f"pretraining task and demo count, TASK:EPISODES; repeatable (default: {' '.join(DEFAULT_PRETRAIN)})",
    )
    parser.add_argument("--heldout", default=DEFAULT_HELDOUT, help="held-out task (default: conveyor)")
    parser.add_argument("--demos", default="10,50", help="held-out demo counts, comma-separated (default: 10,50)")
    parser.add_argument("--image-size", type=int, default=64, help="camera image size in pixels (default: 64)")
    parser.add_argument("--policy-overrides", default=json.dumps(DEFAULT_POLICY), help="JSON object of flow config fields")
    parser.add_argument("--pretrain-steps", type=int, default=2000, help="optimiser steps of pretraining (default: 2000)")
    parser.add_argument("--finetune-steps", type=int, default=600, help="optimiser steps of each fine-tune and scratch run (default: 600)")
    parser.add_argument(
        "--finetune-modes", default="full",
        help="fine-tuning modes, comma-separated from full and lora; the first is the main one (default: full)",
    )
    parser.add_argument("--finetune-lr", type=float, default=3e-4, help="peak learning rate of full fine-tuning (default: 3e-4)")
    parser.add_argument("--lora-lr", type=float, default=1e-3, help="peak learning rate of LoRA fine-tuning (default: 1e-3)")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per step of every run (default: 16)")
    parser.add_argument("--log-every", type=int, default=25, help="steps between metrics rows (default: 25)")
    parser.add_argument("--eval-episodes", type=int, default=30, help="twin episodes per checkpoint (default: 30)")
    parser.add_argument("--eval-workers", type=int, default=2, help="processes that run twin episodes (default: 2)")
    parser.add_argument("--no-zero-shot", dest="zero_shot", action="store_false", help="skip evaluating the pretrained checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and data order")
    parser.add_argument("--workdir", type=Path, help="folder for datasets and runs, reused when run again; a temporary one if unset")
    parser.add_argument("--output", type=Path, help="JSON file for the figures")
    parser.add_argument("--figures", type=Path, help="folder for the PNG plots")
    args = parser.parse_args(argv)
    args.pretrain = args.pretrain or [parse_task_entry(entry) for entry in DEFAULT_PRETRAIN]
    args.demos = sorted(int(value) for value in args.demos.split(","))
    args.finetune_modes = [mode.strip() for mode in args.finetune_modes.split(",")]
    unknown = [mode for mode in args.finetune_modes if mode not in ("full", "lora")]
    if unknown or not args.finetune_modes:
        parser.error(f"--finetune-modes takes full and lora, got {unknown or args.finetune_modes}")
    if args.heldout in {task for task, _ in args.pretrain}:
        parser.error(f"--heldout {args.heldout} is also a pretraining task; hold out a task the mix lacks")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the table and write the JSON and plots."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    document: dict[str, Any] = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def save(runs: dict[str, Any]) -> None:
        document.update(total_wall_s=time.perf_counter() - started, runs=runs)
        if args.output is not None:
            args.output.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="robota-foundation-") as scratch:
        root = args.workdir or Path(scratch)
        os.environ.setdefault("ROBOTA_CACHE_DIR", str(root / "cache"))
        data = record_all(args, root / "data")
        document["record_wall_s"] = {
            str(entry["path"].name): entry["record_wall_s"] for entry in [*data["pretrain"], *data["heldout"].values()]
        }
        runs = train_and_measure(args, root, data, save)
        document["summary"] = summarise(args, runs)
        save(runs)
        if args.figures is not None:
            args.figures.mkdir(parents=True, exist_ok=True)
            plot_success_vs_demos(document, args.figures / "foundation_success_vs_demos.png")
            plot_loss_curves({name: root / "runs" / name for name in runs}, args.figures / "foundation_loss_curves.png")
    print_table(runs, document["summary"])


if __name__ == "__main__":
    main()
