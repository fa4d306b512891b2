"""Federated pick-and-place on non-IID sites: FedAvg and DiLoCo against centralised training.

Data. The twin's scripted expert records one pool of pick-and-place episodes. Each episode goes to
a site by where its part spawned: the twin draws the part's y coordinate from `PART_Y_RANGE_M`
(-0.25 to -0.05 m) at reset, that range is cut into `--sites` equal bands, and site k keeps only
the episodes whose part starts in band k. No site has demonstrations from the whole table, so a
policy trained at one site alone would not have seen the other bands' spawn positions.

Seeds are tried in order. An episode whose band is already full is skipped before it runs, and
one the expert fails is discarded. Each kept episode's frames are written to its site's dataset
and to the union dataset at the same time, so the centralised run trains on exactly the frames
the sites train on. Every episode's metadata records its seed, `part_x_m`, `part_y_m` and site.

Runs, on the same CPU and with the same number of training samples: the centralised run trains
`rounds x local_steps x sites` steps of `--batch-size`, and each site trains `local_steps` steps
of the same batch size per round.

- centralised: `robota.train` on the union, with its default warmup and cosine schedule;
- fedavg, fedavg-<c>: a real SuperLink and one SuperNode per site on 127.0.0.1, FedAvg with
  float32 updates, then with `--compression` (int8 or fp16);
- diloco, diloco-<c>: the same with DiLoCo's outer Nesterov step (learning rate 0.7, momentum
  0.9, as in the DiLoCo paper, arXiv:2311.08455).

Figures per run:

- twin success over `--eval-episodes` unseen seeds, with a Wilson 95% interval, and per band;
- the final model's mean policy loss on all training samples, and on a held-out set that
  `robota.record` records from other seeds over the whole spawn range;
- training wall time;
- the update bytes each site sent per round and in total, with the ratio against float32 FedAvg.
Bytes are update payloads (tensor data and int8 scales); Flower's message framing comes on top.
The script prints a table and writes the figures as JSON.

    python benchmarks/federated_pick_place.py --output /tmp/fed.json
    python benchmarks/federated_pick_place.py --episodes-per-site 3 --rounds 2 --local-steps 5 \
        --eval-episodes 2 --validation-episodes 2 --strategies fedavg   # plumbing check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robota.evaluate import EvalConfig, evaluate
from robota.federated import FederationConfig, train_federated_local
from robota.record import RecordConfig, record
from robota.sim.pick_place import PART_Y_RANGE_M
from robota.train import TrainConfig, train

TASK = "pick-place"
# Seed ranges that never overlap: sites from 0, validation from here, evaluation from
# `robota.evaluate.EVAL_SEED_START` (one million).
VALIDATION_SEED_START = 500_000
# Seeds tried per kept episode at most; the expert fails rarely, and a full band skips its seeds.
MAX_SEEDS_PER_EPISODE = 4
DILOCO_OUTER_LR = 0.7
DILOCO_OUTER_MOMENTUM = 0.9
LOSS_BATCH_SIZE = 64

logger = logging.getLogger(__name__)


def spawn_band(part_y_m: float, bands: int) -> int:
    """Return the index of the equal-width band of `PART_Y_RANGE_M` that contains `part_y_m`.

    Band 0 starts at the range's low end. A value on the range's upper bound falls in the last
    band, and values outside the range are clipped into the first or last band.
    """
    low, high = PART_Y_RANGE_M
    fraction = (part_y_m - low) / (high - low)
    return int(np.clip(np.floor(fraction * bands), 0, bands - 1))


# Data --------------------------------------------------------------------------------------------


def record_site_split(root: Path, sites: int, episodes_per_site: int, image_size: int) -> dict[str, Any]:
    """Record expert episodes into one dataset per spawn band and one union dataset.

    Returns:
        `site_dirs` (one folder per site), `union_dir`, and `episodes`: per kept episode its
        seed, part position and site.
    """
    from robota.datasets import DatasetWriter
    from robota.sim import make_env
    from robota.sim.expert import make_expert

    env = make_env(TASK, image_size=(image_size, image_size))
    expert = make_expert(TASK, env)
    spec = env.unwrapped.feature_spec
    site_dirs = [root / f"site-{index}" for index in range(sites)]
    kept: list[dict[str, Any]] = []
    seed_limit = MAX_SEEDS_PER_EPISODE * sites * episodes_per_site

    with contextlib.ExitStack() as stack:
        union = stack.enter_context(DatasetWriter(root / "union", spec, robot_type=spec.robot.name))
        writers = [stack.enter_context(DatasetWriter(folder, spec, robot_type=spec.robot.name)) for folder in site_dirs]
        for seed in range(seed_limit):
            counts = np.bincount([episode["site"] for episode in kept], minlength=sites)
            if counts.min() >= episodes_per_site:
                break
            episode = _record_one(env, expert, seed, sites, episodes_per_site, counts, (union, writers))
            if episode is not None:
                kept.append(episode)
    env.close()

    counts = np.bincount([episode["site"] for episode in kept], minlength=sites)
    if counts.min() < episodes_per_site:
        raise SystemExit(
            f"recorded {counts.tolist()} episodes per site from {seed_limit} seeds, expected {episodes_per_site} "
            "each; check the expert's success rate with `robota record`"
        )
    return {"site_dirs": site_dirs, "union_dir": root / "union", "episodes": kept}


def _record_one(
    env: Any, expert: Any, seed: int, sites: int, quota: int, counts: np.ndarray, writers: tuple[Any, list[Any]]
) -> dict[str, Any] | None:
    """Record the episode of `seed` into its site's dataset and the union, or skip it."""
    from robota.sim.rollout import run_episode

    _, info = env.reset(seed=seed)
    part = info["randomization"]
    site = spawn_band(part["part_y_m"], sites)
    if counts[site] >= quota:
        return None

    union, site_writers = writers
    targets = (union, site_writers[site])

    def add_frame(observation: dict, action: np.ndarray) -> None:
        for writer in targets:
            writer.add_frame({**observation, "action": action})

    episode = run_episode(env, expert, seed, on_step=add_frame)
    if not episode.success:
        for writer in targets:
            writer.discard_episode()
        return None
    metadata = {"seed": seed, "part_x_m": part["part_x_m"], "part_y_m": part["part_y_m"], "site": site}
    for writer in targets:
        writer.save_episode({**metadata, "success": True})
    return metadata


# Runs --------------------------------------------------------------------------------------------


def run_centralised(args: argparse.Namespace, union: Path, output: Path) -> dict[str, Any]:
    """Train on the union of the sites' episodes with the federation's sample budget."""
    config = TrainConfig(
        dataset=union,
        output=output,
        steps=args.rounds * args.local_steps * args.sites,
        batch_size=args.batch_size,
        lr=args.lr,
        chunk_size=args.chunk_size,
        policy_overrides=_policy_overrides(args),
        tensorboard=False,
        checkpoint_every=0,
        num_threads=1,
        seed=args.seed,
    )
    started = time.perf_counter()
    checkpoint = train(config)
    return {"checkpoint": checkpoint, "train_wall_s": time.perf_counter() - started, "bytes": None}


def run_federated(
    args: argparse.Namespace, sites: Sequence[Path], output: Path, strategy: str, compression: str
) -> dict[str, Any]:
    """Train across one local SuperNode per site and return the checkpoint, wall time and bytes."""
    diloco = strategy == "diloco"
    config = FederationConfig(
        output=output,
        rounds=args.rounds,
        local_steps=args.local_steps,
        strategy=strategy,
        min_sites=len(sites),
        compression=compression,
        outer_lr=DILOCO_OUTER_LR if diloco else 1.0,
        outer_momentum=DILOCO_OUTER_MOMENTUM if diloco else 0.0,
        policy_overrides=_policy_overrides(args),
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        wait_timeout_s=180,
        round_timeout_s=args.round_timeout_s,
    )
    started = time.perf_counter()
    checkpoint = train_federated_local(
        sites, config, workdir=output.with_name(output.name + "-flower"),
        run_timeout_s=args.rounds * args.round_timeout_s + 600,
    )
    wall_s = time.perf_counter() - started
    rounds = json.loads((output / "rounds.json").read_text(encoding="utf-8"))
    return {"checkpoint": checkpoint, "train_wall_s": wall_s, "bytes": _bytes_summary(rounds)}


def _bytes_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the update bytes each site sent, from `rounds.json`."""
    per_site: dict[str, int] = {}
    for entry in rounds:
        for node, size in entry["bytes_per_site"].items():
            per_site[node] = per_site.get(node, 0) + int(size)
    sizes = [int(size) for entry in rounds for size in entry["bytes_per_site"].values()]
    return {
        "per_site_per_round": float(np.mean(sizes)),
        "per_site_total": float(np.mean(list(per_site.values()))),
        "all_sites_total": int(sum(per_site.values())),
        "rounds": len(rounds),
    }


def _policy_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return json.loads(args.policy_overrides)


# Measurements ------------------------------------------------------------------------------------


def mean_loss(checkpoint: Path, dataset: Path, chunk_size: int) -> float:
    """Return the policy's mean loss over every sample of `dataset`, in eval mode (no dropout)."""
    from robota.datasets.torch_loader import ChunkDataset
    from robota.policies.checkpoint import load_checkpoint
    from robota.train_dist import DistributedContext
    from robota.train_loop import validation_loss

    policy = load_checkpoint(checkpoint)
    samples = ChunkDataset(dataset, chunk_size=chunk_size)
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)
    return validation_loss(policy, samples, context, LOSS_BATCH_SIZE, contextlib.nullcontext)


def twin_success(checkpoint: Path, episodes: int, workers: int, bands: int) -> dict[str, Any]:
    """Evaluate `checkpoint` on unseen seeds; return the success rate, its interval and per band."""
    report = evaluate(EvalConfig(policy=checkpoint, task=TASK, episodes=episodes, workers=workers))
    rows = report["rows"]
    band_of_seed = _bands_of_seeds([int(row["seed"]) for row in rows], bands)
    per_band = []
    for band in range(bands):
        outcomes = [int(row["success"]) for row in rows if band_of_seed[int(row["seed"])] == band]
        per_band.append({"band": band, "successes": sum(outcomes), "episodes": len(outcomes)})
    return {
        "successes": report["successes"],
        "episodes": report["episodes"],
        "success_rate": report["success_rate"],
        "wilson_95": report["success_interval_95"],
        "per_band": per_band,
    }


def _bands_of_seeds(seeds: Sequence[int], bands: int) -> dict[int, int]:
    """Return the spawn band of each seed's part, read from a reset of the twin without images."""
    from robota.sim import make_env

    env = make_env(TASK, render_images=False)
    try:
        return {seed: spawn_band(env.reset(seed=seed)[1]["randomization"]["part_y_m"], bands) for seed in seeds}
    finally:
        env.close()


def measure(args: argparse.Namespace, run: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Add the losses and the twin success of a finished run's checkpoint."""
    checkpoint = run.pop("checkpoint")
    started = time.perf_counter()
    run["train_loss"] = mean_loss(checkpoint, data["union_dir"], args.chunk_size)
    run["validation_loss"] = mean_loss(checkpoint, data["validation_dir"], args.chunk_size)
    run["twin"] = twin_success(checkpoint, args.eval_episodes, args.eval_workers, args.sites)
    run["measure_wall_s"] = time.perf_counter() - started
    return run


# Report ------------------------------------------------------------------------------------------


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """Print one row per run, with ratios against centralised (wall) and float32 FedAvg (bytes)."""
    central_wall = results["centralised"]["train_wall_s"]
    fp32_bytes = results.get("fedavg", {}).get("bytes")
    header = (
        f"{'run':<13} {'success':>12} {'95% interval':>13} {'train loss':>10} {'val loss':>9} "
        f"{'wall s':>7} {'x central':>9} {'B/site/round':>13} {'B/site total':>13} {'x fedavg':>8}"
    )
    print(header)
    for name, row in results.items():
        twin = row["twin"]
        low, high = twin["wilson_95"]
        sent = row["bytes"]
        ratio = sent["per_site_total"] / fp32_bytes["per_site_total"] if sent and fp32_bytes else None
        print(
            f"{name:<13} {twin['successes']:>5}/{twin['episodes']:<3} {twin['success_rate']:3.0%} "
            f"{f'{low:.2f}-{high:.2f}':>13} {row['train_loss']:10.4f} {row['validation_loss']:9.4f} "
            f"{row['train_wall_s']:7.0f} {row['train_wall_s'] / central_wall:9.2f} "
            f"{_number(sent and sent['per_site_per_round']):>13} {_number(sent and sent['per_site_total']):>13} "
            f"{_number(ratio, '.3f'):>8}"
        )
    print("success per spawn band (band 0 has the lowest part y):")
    for name, row in results.items():
        bands = "  ".join(f"{b['successes']}/{b['episodes']}" for b in row["twin"]["per_band"])
        print(f"  {name:<13} {bands}")


def _number(value: float | None, form: str = ",.0f") -> str:
    return "-" if value is None else format(value, form)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3, help="sites, one spawn band each (default: 3)")
    parser.add_argument("--episodes-per-site", type=int, default=20, help="expert episodes per site")
    parser.add_argument("--validation-episodes", type=int, default=10, help="held-out episodes")
    parser.add_argument("--image-size", type=int, default=64, help="camera image size in pixels")
    parser.add_argument("--rounds", type=int, default=5, help="federated rounds")
    parser.add_argument("--local-steps", type=int, default=120, help="site optimiser steps per round")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per step, sites and centralised")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (site inner and centralised peak)")
    parser.add_argument("--chunk-size", type=int, default=10, help="action chunk length")
    parser.add_argument("--policy-overrides", default="{}", help="JSON object of ACT config fields to change")
    parser.add_argument(
        "--compression", choices=("int8", "fp16"), default="int8", help="update compression of the compressed runs"
    )
    parser.add_argument(
        "--strategies", default="fedavg,diloco", help="comma-separated federated strategies to run (fedavg, diloco)"
    )
    parser.add_argument("--eval-episodes", type=int, default=50, help="twin episodes per checkpoint")
    parser.add_argument("--eval-workers", type=int, default=2, help="processes that run twin episodes")
    parser.add_argument("--round-timeout-s", type=float, default=600.0, help="deadline of each federated round")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and data order")
    parser.add_argument("--workdir", type=Path, help="folder for datasets and runs; a temporary one if unset")
    parser.add_argument("--output", type=Path, help="JSON file for the figures")
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace, root: Path, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Record the data, train and measure every run, and return the figures.

    `save` receives the figures after each run, so a stopped benchmark still leaves the runs
    that finished.
    """
    started = time.perf_counter()
    data = record_site_split(root / "data", args.sites, args.episodes_per_site, args.image_size)
    validation = RecordConfig(
        output=root / "data" / "validation", episodes=args.validation_episodes,
        seed=VALIDATION_SEED_START, image_size=args.image_size,
    )
    data["validation_dir"] = record(validation).dataset
    logger.warning("recorded the data in %.0f s", time.perf_counter() - started)

    figures: dict[str, Any] = {"episodes": data["episodes"], "results": {}}
    plan = [("centralised", None, None)]
    for strategy in args.strategies.split(","):
        plan += [(strategy, strategy, "none"), (f"{strategy}-{args.compression}", strategy, args.compression)]
    for name, strategy, compression in plan:
        if strategy is None:
            run = run_centralised(args, data["union_dir"], root / name)
        else:
            run = run_federated(args, data["site_dirs"], root / name, strategy, compression)
        figures["results"][name] = measure(args, run, data)
        logger.warning("%s done: %s", name, json.dumps(figures["results"][name]))
        save(figures)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the table and write the JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()

    def save(figures: dict[str, Any]) -> None:
        if args.output is None:
            return
        document = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "total_wall_s": time.perf_counter() - started,
            "centralised_steps": args.rounds * args.local_steps * args.sites,
            **figures,
        }
        args.output.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="robota-fed-bench-") as scratch:
        root = args.workdir or Path(scratch)
        # Decoded-frame caches go beside the runs, so they vanish with a temporary folder.
        os.environ.setdefault("ROBOTA_CACHE_DIR", str(root / "cache"))
        figures = run_all(args, root, save)
    print_table(figures["results"])

if __name__ == "__main__":
    main()
