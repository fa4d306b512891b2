"""Federated pick-and-place: FedAvg and DiLoCo across sites against one centralised run.

Records pick-and-place demonstrations in the twin and splits them into `--sites` site datasets
(disjoint seeds), then trains the same policy three ways on the same CPU:

- centralised: `robota.train` on one dataset with all demonstrations, `rounds x local_steps` steps;
- FedAvg: a real SuperLink and one SuperNode per site on 127.0.0.1, `local_steps` per round;
- DiLoCo: the same federation with the outer Nesterov step (learning rate 0.7, momentum 0.9).

It prints, side by side, the wall time, the bytes each site sent per round and the twin success
rate of each checkpoint over `--eval-episodes` episodes, with ratios against the centralised run.
Every Flower process listens on loopback only and is stopped by its PID.

    python benchmarks/federated_pick_place.py --sites 2 --episodes-per-site 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from robota.evaluate import EvalConfig, evaluate
from robota.federated import FederationConfig, train_federated_local
from robota.record import RecordConfig, record
from robota.train import TrainConfig, train

SMALL_ACT = {"dim_model": 64, "n_heads": 4, "dim_feedforward": 128, "image_channels": [16, 32], "dropout": 0.0}


def _record_sites(root: Path, sites: int, episodes: int, image_size: int) -> tuple[list[Path], Path]:
    """Record one dataset per site and one with every site's seeds for the centralised run."""
    site_dirs = []
    for index in range(sites):
        config = RecordConfig(
            output=root / f"site-{index}", episodes=episodes, seed=1000 + index * episodes, image_size=image_size
        )
        site_dirs.append(record(config).dataset)
    union = record(RecordConfig(output=root / "all", episodes=sites * episodes, seed=1000, image_size=image_size))
    return site_dirs, union.dataset


def _success_rate(checkpoint: Path, episodes: int) -> float:
    report = evaluate(EvalConfig(policy=checkpoint, episodes=episodes))
    return float(report["success_rate"])


def _run_federated(args: argparse.Namespace, sites: list[Path], output: Path, strategy: str) -> dict:
    diloco = strategy == "diloco"
    config = FederationConfig(
        output=output,
        rounds=args.rounds,
        local_steps=args.local_steps,
        strategy=strategy,
        min_sites=len(sites),
        compression=args.compression,
        outer_lr=0.7 if diloco else 1.0,
        outer_momentum=0.9 if diloco else 0.0,
        policy_overrides=SMALL_ACT,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        lr=args.lr,
        wait_timeout_s=120,
        round_timeout_s=900,
    )
    started = time.perf_counter()
    checkpoint = train_federated_local(sites, config, run_timeout_s=args.rounds * 900 + 300)
    wall_s = time.perf_counter() - started
    rounds = json.loads((output / "rounds.json").read_text())
    bytes_per_site = [size for entry in rounds for size in entry["bytes_per_site"].values()]
    return {
        "wall_s": wall_s,
        "bytes_per_site_round": sum(bytes_per_site) / len(bytes_per_site),
        "success_rate": _success_rate(checkpoint, args.eval_episodes),
    }


def _run_central(args: argparse.Namespace, union: Path, output: Path) -> dict:
    config = TrainConfig(
        dataset=union,
        output=output,
        steps=args.rounds * args.local_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=0,
        chunk_size=args.chunk_size,
        policy_overrides=SMALL_ACT,
        tensorboard=False,
        checkpoint_every=0,
    )
    started = time.perf_counter()
    checkpoint = train(config)
    return {
        "wall_s": time.perf_counter() - started,
        "bytes_per_site_round": 0.0,
        "success_rate": _success_rate(checkpoint, args.eval_episodes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=2, help="number of sites (default: 2)")
    parser.add_argument("--episodes-per-site", type=int, default=4, help="demonstrations per site")
    parser.add_argument("--image-size", type=int, default=32, help="camera image size in pixels")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds")
    parser.add_argument("--local-steps", type=int, default=20, help="site steps per round")
    parser.add_argument("--compression", choices=("none", "fp16", "int8"), default="int8")
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-episodes", type=int, default=5, help="twin episodes per checkpoint")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="robota-fed-bench-") as scratch:
        root = Path(scratch)
        sites, union = _record_sites(root / "data", args.sites, args.episodes_per_site, args.image_size)
        results = {
            "centralised": _run_central(args, union, root / "central"),
            "fedavg": _run_federated(args, sites, root / "fedavg", "fedavg"),
            "diloco": _run_federated(args, sites, root / "diloco", "diloco"),
        }

    base = results["centralised"]
    print(f"{'run':<12} {'wall s':>8} {'x central':>9} {'bytes/site/round':>17} {'success':>8}")
    for name, row in results.items():
        ratio = row["wall_s"] / base["wall_s"]
        print(
            f"{name:<12} {row['wall_s']:8.1f} {ratio:9.2f} {row['bytes_per_site_round']:17,.0f} "
            f"{row['success_rate']:8.2f}"
        )


if __name__ == "__main__":
    main()
