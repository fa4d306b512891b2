"""Instruction following: one sort scene, two instructions, two different bins.

The sort twin has a red and a blue bin, and only the instruction names the one the part goes to.
`reset(seed=s, options={"target": "red"})` and `{"target": "blue"}` give the same scene (part
pose, arm start, language draw) with only the instruction changed. So a policy that ignores the
instruction puts the part in the same bin under both, and at most one of the two is right.

The script records UR5e expert demos of sort (both bins, every language) and trains the flow
policy on them, fresh or fine-tuning `--from CKPT`. With `--policy CKPT` it takes a finished
checkpoint instead. For each of `--seeds` unseen seeds it then rolls the policy out once per
target. It reads the bin that holds the part at the end
(`env.unwrapped.bin_holding_part()`, None when the part is in no bin) and reports, with Wilson
95% intervals:

- per target: the share of seeds that end in the instructed bin;
- `both_right`: the share of seeds where the two rollouts end in different bins, each the
  instructed one;
- `same_bin`: the share of seeds where both rollouts end in the same bin, a sign that the
  instruction was ignored.

    python benchmarks/instruction_following.py --workdir runs/foundation --output runs/instructions.json
    python benchmarks/instruction_following.py --episodes 2 --steps 5 --seeds 2   # plumbing check
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from robota.evaluate import EVAL_SEED_START
from robota.finetune import finetune_config
from robota.record import RecordConfig, record
from robota.stats import wilson_interval
from robota.train import TrainConfig, train

TASK = "sort"
TARGETS = ("red", "blue")
DEFAULT_POLICY = {
    "dim_model": 64,
    "n_heads": 4,
    "dim_feedforward": 128,
    "image_channels": [8, 16, 16, 32, 32],
}

logger = logging.getLogger(__name__)


# Scoring -----------------------------------------------------------------------------------------


def score_outcomes(outcomes: Sequence[Mapping[str, str | None]]) -> dict[str, Any]:
    """Count right bins per target and seeds whose two outcomes differ and are both right.

    Args:
        outcomes: One mapping per seed from each target in `TARGETS` to the bin that held the
            part at the end of that rollout, or None.

    Returns:
        `seeds`, and per target the `successes`, `rate` and `wilson_95` of rollouts that end
        in the named bin. The same three fields describe `both_right` and `same_bin` (both
        rollouts in one bin, either bin). `right_bin_when_placed` counts, among the rollouts
        that left the part in a bin (`trials`), those where it is the named bin.
    """
    seeds = len(outcomes)

    def share(count: int, trials: int = seeds) -> dict[str, Any]:
        return {
            "successes": count,
            "rate": count / trials if trials else 0.0,
            "wilson_95": list(wilson_interval(count, trials)),
        }

    per_target = {target: share(sum(outcome[target] == target for outcome in outcomes)) for target in TARGETS}
    both_right = sum(all(outcome[target] == target for target in TARGETS) for outcome in outcomes)
    same_bin = sum(
        outcome[TARGETS[0]] is not None and outcome[TARGETS[0]] == outcome[TARGETS[1]] for outcome in outcomes
    )
    placed = [(target, outcome[target]) for outcome in outcomes for target in TARGETS if outcome[target] is not None]
    right_when_placed = sum(target == held for target, held in placed)
    return {
        "seeds": seeds,
        "per_target": per_target,
        "both_right": share(both_right),
        "same_bin": share(same_bin),
        "right_bin_when_placed": {**share(right_when_placed, len(placed)), "trials": len(placed)},
    }


# Rollouts ----------------------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(checkpoint: str) -> None:
    from robota.evaluate import image_size_of, limit_threads_in_worker
    from robota.policies.runner import TorchPolicyRunner
    from robota.sim import make_env

    limit_threads_in_worker()
    policy = TorchPolicyRunner.from_checkpoint(checkpoint)
    _worker["policy"] = policy
    _worker["env"] = make_env(TASK, image_size=image_size_of(policy.spec), robot=policy.spec.robot.name)


def _roll_out_seed(seed: int) -> dict[str, Any]:
    """Roll the policy out on `seed` once per target; return the bin holding the part after each."""
    from robota.sim.rollout import run_episode

    env, policy = _worker["env"], _worker["policy"]
    row: dict[str, Any] = {"seed": seed}
    for target in TARGETS:
        result = run_episode(env, policy, seed, options={"target": target})
        row[target] = env.unwrapped.bin_holding_part()
        row[f"{target}_instruction"] = result.instruction
        row[f"{target}_steps"] = result.steps
    return row


def roll_out(checkpoint: Path, seeds: Sequence[int], workers: int) -> list[dict[str, Any]]:
    """Run `_roll_out_seed` for every seed in spawned worker processes, in seed order."""
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
        initargs=(str(checkpoint),),
    ) as pool:
        return list(pool.map(_roll_out_seed, seeds))


# Data and training -------------------------------------------------------------------------------


def prepare_policy(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Record the sort demos, or reuse them, and train the flow policy on them."""
    if args.policy is not None:
        return {"checkpoint": args.policy, "record_wall_s": None, "train_wall_s": None}

    dataset = root / "data" / f"{TASK}-{args.episodes}"
    record_wall_s = None
    if not (dataset / "meta" / "info.json").is_file():
        started = time.perf_counter()
        record(RecordConfig(output=dataset, task=TASK, episodes=args.episodes, image_size=args.image_size))
        record_wall_s = time.perf_counter() - started

    output = root / "runs" / f"{TASK}-instructions-{args.steps}"
    settings = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "tensorboard": False,
        "checkpoint_every": 0,
        "num_threads": 1,
        "log_every": args.log_every,
    }
    if args.init_from is not None:
        config = finetune_config(
            args.init_from, dataset=dataset, output=output, finetune_mode="full", lr=args.lr, **settings
        )
    else:
        config = TrainConfig(
            dataset=dataset,
            output=output,
            policy="flow",
            policy_overrides=json.loads(args.policy_overrides),
            lr=args.lr,
            **settings,
        )
    started = time.perf_counter()
    train(config)
    return {"checkpoint": output, "record_wall_s": record_wall_s, "train_wall_s": time.perf_counter() - started}


def plot_outcomes(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Draw, per instruction, how many rollouts ended with the part in each bin or in none."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    outcomes = (("red", "tab:red"), ("blue", "tab:blue"), (None, "lightgrey"))
    figure, axis = pyplot.subplots(figsize=(5, 3.5))
    bottoms = [0, 0]
    for outcome, colour in outcomes:
        counts = [sum(row[target] == outcome for row in rows) for target in TARGETS]
        label = f"part in the {outcome} bin" if outcome else "part in no bin"
        axis.bar([f"told {target}" for target in TARGETS], counts, bottom=bottoms, color=colour, label=label)
        bottoms = [bottom + count for bottom, count in zip(bottoms, counts)]
    axis.set_ylabel(f"rollouts over {len(rows)} seeds")
    axis.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def print_summary(score: dict[str, Any]) -> None:
    """Print the per-target and paired shares with their intervals."""
    rows = [(f"{target} bin when told {target}", entry) for target, entry in score["per_target"].items()]
    rows += [("different bins, both right", score["both_right"]), ("same bin under both", score["same_bin"])]
    rows += [("named bin, of parts in a bin", score["right_bin_when_placed"])]
    for label, entry in rows:
        low, high = entry["wilson_95"]
        trials = entry.get("trials", score["seeds"])
        print(f"{label:<28} {entry['successes']:>3}/{trials:<3} {entry['rate']:4.0%}  95% CI [{low:.0%}, {high:.0%}]")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, help="flow or ACT checkpoint to test; trains one on sort if unset")
    parser.add_argument("--episodes", type=int, default=60, help="sort demos to record (default: 60)")
    parser.add_argument("--image-size", type=int, default=64, help="camera image size in pixels (default: 64)")
    parser.add_argument("--policy-overrides", default=json.dumps(DEFAULT_POLICY), help="JSON object of flow config fields")
    parser.add_argument(
        "--from", dest="init_from", type=Path,
        help="checkpoint to fine-tune (all weights) on the sort demos instead of training a fresh policy",
    )
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps (default: 3000)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the policy config's)")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per step (default: 16)")
    parser.add_argument("--log-every", type=int, default=25, help="steps between metrics rows (default: 25)")
    parser.add_argument("--seeds", type=int, default=50, help="unseen seeds, two rollouts each (default: 50)")
    parser.add_argument("--workers", type=int, default=2, help="processes that run rollouts (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and data order")
    parser.add_argument("--workdir", type=Path, help="folder for the dataset and run; a temporary one if unset")
    parser.add_argument("--output", type=Path, help="JSON file for the figures")
    parser.add_argument("--figure", type=Path, help="PNG of the outcomes per instruction")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Train or load the policy, roll it out under both instructions, print and write the shares."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="robota-instructions-") as scratch:
        root = args.workdir or Path(scratch)
        os.environ.setdefault("ROBOTA_CACHE_DIR", str(root / "cache"))
        prepared = prepare_policy(args, root)
        rollout_started = time.perf_counter()
        seeds = list(range(EVAL_SEED_START, EVAL_SEED_START + args.seeds))
        rows = roll_out(prepared["checkpoint"], seeds, args.workers)
        rollout_wall_s = time.perf_counter() - rollout_started

    score = score_outcomes(rows)
    print_summary(score)
    if args.figure is not None:
        plot_outcomes(rows, args.figure)
    if args.output is not None:
        document = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "checkpoint": str(prepared["checkpoint"]),
            "record_wall_s": prepared["record_wall_s"],
            "train_wall_s": prepared["train_wall_s"],
            "rollout_wall_s": rollout_wall_s,
            "total_wall_s": time.perf_counter() - started,
            "score": score,
            "rows": rows,
        }
        args.output.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
