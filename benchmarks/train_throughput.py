"""Training throughput of `robota train` with one and two processes (torchrun, gloo, CPU).

Records a small synthetic dataset with `DatasetWriter`, trains the same policy three ways on the
same cores, and prints samples per second side by side with the ratios:

- one process, one thread;
- one process, `--threads` threads (the usual way to use the cores);
- `--threads` processes of one thread each under torchrun.

Scaling efficiency is the multi-process rate divided by the process count times the one-process,
one-thread rate. The data share is the mean share of a step spent waiting for the next batch.
Figures come from each run's `metrics.csv`, skipping the first fifth of the steps as warmup.

    python benchmarks/train_throughput.py --steps 60 --batch-size 16
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


from robota.datasets.synthetic import write_random_dataset
from robota.spec import UR5E, make_arm_spec


def _write_dataset(root: Path, episodes: int, length: int, image_size: int) -> Path:
    size = (image_size, image_size)
    spec = make_arm_spec(UR5E, 10, {"wrist": size, "overhead": size})
    return write_random_dataset(root, spec, episodes=episodes, length=length)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command: list[str], threads: int, cache: Path, timeout_s: float) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS=str(threads), ROBOTA_CACHE_DIR=str(cache))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        raise SystemExit(f"timed out after {timeout_s} s: {' '.join(command)}\n{output[-2000:]}") from None
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}\n{output[-2000:]}")


def _summary(run: Path) -> tuple[float, float]:
    """Return mean samples per second and mean data share after the first fifth of the rows."""
    with (run / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row.get("samples_per_s")]
    rows = rows[len(rows) // 5 :]
    return (
        statistics.mean(float(row["samples_per_s"]) for row in rows),
        statistics.mean(float(row["data_share"]) for row in rows),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per run")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per step and process")
    parser.add_argument("--threads", type=int, default=2, help="cores to use (processes of the parallel run)")
    parser.add_argument("--image-size", type=int, default=96, help="camera image size in pixels")
    parser.add_argument("--episodes", type=int, default=8, help="episodes of the synthetic dataset")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers per process")
    parser.add_argument("--timeout-s", type=float, default=900, help="deadline of each run")
    args = parser.parse_args()

    if importlib.util.find_spec("lerobot") is None:
        print("lerobot is not installed, so there is no lerobot baseline in this comparison")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    with tempfile.TemporaryDirectory(prefix="robota-bench-") as folder:
        root = Path(folder)
        dataset = _write_dataset(root / "dataset", args.episodes, 40, args.image_size)
        common = [
            "train", "--dataset", str(dataset), "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "log_every=1", "checkpoint_every=0",
            "tensorboard=false", f"num_workers={args.num_workers}",
        ]
        single = [sys.executable, "-m", "robota.train_cli", *common]
        runs = {
            "1 process x 1 thread": (single + ["--output", str(root / "p1t1")], 1, root / "p1t1"),
            f"1 process x {args.threads} threads": (single + ["--output", str(root / "p1tn")], args.threads, root / "p1tn"),
            f"{args.threads} processes x 1 thread (gloo)": (
                [
                    torchrun, "--nnodes", "1", "--nproc-per-node", str(args.threads),
                    "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                    "-m", "robota.train_cli", *common, "--output", str(root / "pn"), "dist_timeout_s=120",
                ],
                1,
                root / "pn",
            ),
        }
        results = {}
        for name, (command, threads, output) in runs.items():
            _run(command, threads, root / "cache", args.timeout_s)
            results[name] = _summary(output)

    base = next(iter(results.values()))[0]
    print(f"batch {args.batch_size} per process, {args.steps} steps, two {args.image_size}x{args.image_size} cameras")
    print(f"{'run':40s} {'samples/s':>10s} {'ratio':>7s} {'data share':>11s}")
    for name, (rate, share) in results.items():
        print(f"{name:40s} {rate:10.1f} {rate / base:7.2f} {share:11.1%}")
    parallel = list(results.values())[-1][0]
    print(f"scaling efficiency of {args.threads} processes: {parallel / (args.threads * base):.0%}")


if __name__ == "__main__":
    main()
