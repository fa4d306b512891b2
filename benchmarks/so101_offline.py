"""Offline benchmark on real data: train ACT on the SO-101 LeRobot dataset and score held-out episodes.

Phases, each a function below:

1. import: convert the read-only LeRobot v3.0 dataset into robota datasets with a spec and
   smaller camera images (`import_lerobot`). They go to a cache folder, so later runs reuse them.
2. train: robota's ACT on every episode except the held-out ones.
3. export: `export_bundle`, whose parity check runs on the held-out real frames.
4. evaluate: on each held-out frame, the first action of the predicted chunk against the
   recorded action, per joint (mean abs, rad), for the torch checkpoint, the ONNX bundle and two
   baselines: hold position (action = current state) and the mean action of the training
   episodes. The table also prints how far each joint's recorded action moves (max - min) in the
   held-out episodes, because a dataset whose actions barely move makes every error small.

Run it with the data folder that holds `lerobot_v3_so101_sim/`:

    python benchmarks/so101_offline.py --data "$ROBOTA_TEST_DATA" --steps 800
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robota.datasets import open_dataset
from robota.datasets.lerobot import import_lerobot
from robota.spec import ACTION, OBS_STATE, TASK, Spec, build_policy_inputs, policy_input_names

logger = logging.getLogger("so101_offline")

SO101_FOLDER = "lerobot_v3_so101_sim"
# The test suite's default data folder: `shared/data` beside the repository.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EVAL_BATCH_SIZE = 64


@dataclasses.dataclass
class BenchmarkConfig:
    """Settings of one benchmark run.

    Attributes:
        source: The SO-101 LeRobot v3.0 dataset folder (read only).
        workdir: Folder for the checkpoint and the bundle of this run.
        cache_dir: Folder for the imported dataset; reused when its import is complete.
        held_out: Episodes kept out of training and scored.
        steps: Optimiser steps.
        batch_size: Samples per step.
        chunk_size: Actions per predicted chunk.
        image_size: `(height, width)` the 360x640 wrist camera is shrunk to.
        seed: Seed of training.
        torch_threads: Threads torch may use.
    """

    source: Path
    workdir: Path
    cache_dir: Path
    held_out: tuple[int, ...] = (4, 5)
    steps: int = 800
    batch_size: int = 32
    chunk_size: int = 10
    image_size: tuple[int, int] = (72, 128)
    seed: int = 0
    torch_threads: int = 2


def import_phase(config: BenchmarkConfig) -> tuple[Path, Path]:
    """Import the training and the held-out episodes into two cached robota datasets.

    Two datasets, so that the normalisation statistics the policy is built from cover the
    training episodes only. Each is imported once per source content, image size and episodes.
    """
    reader = open_dataset(config.source)
    train_episodes = [e for e in range(reader.num_episodes) if e not in config.held_out]
    return (
        _import_cached(config, train_episodes, "train"),
        _import_cached(config, list(config.held_out), "held_out"),
    )


def _import_cached(config: BenchmarkConfig, episodes: list[int], name: str) -> Path:
    info = (config.source / "meta" / "info.json").read_bytes()
    key = hashlib.sha256(info + repr((config.image_size, episodes)).encode()).hexdigest()[:12]
    target = config.cache_dir / f"so101_{name}_{config.image_size[0]}x{config.image_size[1]}_{key}"
    if (target / "meta" / "info.json").is_file():
        logger.info("reusing the imported dataset %s", target)
        return target
    import_lerobot(config.source, target, image_size=config.image_size, joint_unit="rad", episodes=episodes)
    return target


def train_phase(config: BenchmarkConfig, dataset: Path) -> Path:
    """Train ACT on the training dataset and return the checkpoint."""
    from robota.datasets.torch_loader import ChunkDataset
    from robota.train import TrainConfig, train

    frame_cache = config.cache_dir / "frames"

    def build(train_config: TrainConfig) -> ChunkDataset:
        return ChunkDataset(train_config.dataset, train_config.chunk_size, cache_dir=frame_cache)

    def report(step: int, metrics: dict[str, float]) -> None:
        logger.info("step %d loss %.4f", step, metrics["loss"])

    train_config = TrainConfig(
        dataset=dataset,
        output=config.workdir / "checkpoint",
        steps=config.steps,
        batch_size=config.batch_size,
        chunk_size=config.chunk_size,
        seed=config.seed,
        warmup_steps=min(100, config.steps // 10),
        log_every=max(1, config.steps // 5),
    )
    return train(train_config, progress=report, dataset_factory=build)


def held_out_frames(dataset: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Return the raw observations of every episode of `dataset` and their recorded actions."""
    reader = open_dataset(dataset)
    episodes = range(reader.num_episodes)
    spec: Spec = reader.spec
    observations: list[dict[str, Any]] = []
    actions = []
    for index in episodes:
        episode = reader.episode(index)
        for step in range(len(episode[TASK])):
            observation = {key: episode[key][step] for key in spec.features if key != ACTION}
            observations.append(observation)
        actions.append(episode[ACTION])
    return observations, np.concatenate(actions).astype(np.float64)  # (frames, action_dim)


def predict_first_actions(predict, spec: Spec, observations: Sequence[dict[str, Any]]) -> np.ndarray:
    """Run `predict(inputs) -> (batch, chunk, action_dim)` in batches; return the first steps."""
    first = []
    for begin in range(0, len(observations), EVAL_BATCH_SIZE):
        inputs = build_policy_inputs(spec, observations[begin : begin + EVAL_BATCH_SIZE])
        first.append(np.asarray(predict(inputs))[:, 0])  # (batch, action_dim)
    return np.concatenate(first).astype(np.float64)


def evaluate_phase(checkpoint: Path, bundle: Path, dataset: Path) -> dict[str, Any]:
    """Score the checkpoint, the bundle and the hold-position baseline on the held-out frames."""
    import torch

    from robota.edge.bundle import load_bundle
    from robota.policies.checkpoint import load_checkpoint

    policy = load_checkpoint(checkpoint)
    module = policy.inference_module().eval()
    names = policy_input_names(policy.spec)

    def torch_predict(inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(*(torch.from_numpy(inputs[name]) for name in names)).numpy()

    loaded = load_bundle(bundle, providers=["CPUExecutionProvider"])
    observations, recorded = held_out_frames(dataset)
    torch_actions = predict_first_actions(torch_predict, policy.spec, observations)
    bundle_actions = predict_first_actions(loaded.run, loaded.spec, observations)
    hold = np.stack([np.asarray(o[OBS_STATE], dtype=np.float64) for o in observations])
    train_mean = np.asarray(policy_stats(checkpoint)[ACTION]["mean"], dtype=np.float64)

    return {
        "joint_names": list(policy.spec.features[ACTION].names),
        "frames": len(observations),
        "recorded_action_range_rad": np.ptp(recorded, axis=0).tolist(),
        "hold_position_mae_rad": np.abs(hold - recorded).mean(axis=0).tolist(),
        "train_mean_mae_rad": np.abs(train_mean - recorded).mean(axis=0).tolist(),
        "act_torch_mae_rad": np.abs(torch_actions - recorded).mean(axis=0).tolist(),
        "act_bundle_mae_rad": np.abs(bundle_actions - recorded).mean(axis=0).tolist(),
        "bundle_vs_torch_max_abs": float(np.abs(bundle_actions - torch_actions).max()),
    }


def policy_stats(checkpoint: Path) -> dict[str, Any]:
    """Read the training statistics saved beside a checkpoint; `mean` is over the training frames."""
    return json.loads((checkpoint / "stats.json").read_text())


def run_benchmark(config: BenchmarkConfig) -> dict[str, Any]:
    """Run the four phases and return every figure the table prints."""
    import torch

    from robota.export import export_bundle

    torch.set_num_threads(config.torch_threads)
    config.workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    train_dataset, held_out_dataset = import_phase(config)
    timings["import_s"] = time.perf_counter() - started

    started = time.perf_counter()
    checkpoint = train_phase(config, train_dataset)
    timings["train_s"] = time.perf_counter() - started

    observations, _ = held_out_frames(held_out_dataset)
    export = export_bundle(checkpoint, config.workdir / "bundle", observations=observations)
    timings["export_s"] = export.export_s

    started = time.perf_counter()
    figures = evaluate_phase(checkpoint, export.bundle, held_out_dataset)
    timings["evaluate_s"] = time.perf_counter() - started

    return {
        **figures,
        **timings,
        # Wall time, so it includes the frame cache build and the checkpoint save.
        "train_step_s": timings["train_s"] / config.steps,
        "steps": config.steps,
        "held_out": list(config.held_out),
        "image_size": list(config.image_size),
        "export_parity_max_abs_error": export.parity_max_abs_error,
        "export_parity_frames": export.frames_checked,
    }


def format_table(result: dict[str, Any]) -> str:
    """Render the per-joint errors and the run's figures as a Markdown table."""
    lines = [
        f"held-out episodes {result['held_out']} ({result['frames']} frames); "
        f"{result['steps']} training steps at {result['image_size'][0]}x{result['image_size'][1]}; "
        "mean abs action error per joint in rad, first step of each predicted chunk",
        "",
        "| joint | recorded range | hold position | training mean | ACT torch | ACT bundle |",
        "|---|---|---|---|---|---|",
    ]
    keys = (
        "recorded_action_range_rad",
        "hold_position_mae_rad",
        "train_mean_mae_rad",
        "act_torch_mae_rad",
        "act_bundle_mae_rad",
    )
    for row, name in enumerate(result["joint_names"]):
        cells = " | ".join(f"{result[key][row]:.4f}" for key in keys)
        lines.append(f"| {name} | {cells} |")
    means = " | ".join(f"{float(np.mean(result[key])):.4f}" for key in keys)
    lines.append(f"| mean | {means} |")
    lines += [
        "",
        f"bundle vs torch on held-out frames: max abs {result['bundle_vs_torch_max_abs']:.2e}; "
        f"export parity check {result['export_parity_max_abs_error']:.2e} over "
        f"{result['export_parity_frames']} frames",
        f"import {result['import_s']:.1f} s, train {result['train_s']:.1f} s "
        f"({result['train_step_s'] * 1000:.0f} ms/step), export {result['export_s']:.1f} s, "
        f"evaluate {result['evaluate_s']:.1f} s",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("ROBOTA_TEST_DATA", DEFAULT_DATA)),
        help=f"folder that contains {SO101_FOLDER}/ (default: $ROBOTA_TEST_DATA, else {DEFAULT_DATA})",
    )
    parser.add_argument("--workdir", type=Path, help="folder for the checkpoint and bundle (default: a new temporary folder)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("ROBOTA_CACHE_DIR", Path.home() / ".cache" / "robota")) / "imports",
        help="folder for the imported dataset (default: $ROBOTA_CACHE_DIR/imports)",
    )
    parser.add_argument("--steps", type=int, default=800, help="optimiser steps (default: 800)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per step")
    parser.add_argument("--height", type=int, default=72, help="camera height in pixels after resizing")
    parser.add_argument("--width", type=int, default=128, help="camera width in pixels after resizing")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    source = args.data / SO101_FOLDER
    if not (source / "meta" / "info.json").is_file():
        print(f"error: {source} is not a LeRobot dataset; pass --data with the folder that contains it", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="so101_offline_"))
    config = BenchmarkConfig(
        source=source,
        workdir=workdir,
        cache_dir=args.cache_dir,
        steps=args.steps,
        batch_size=args.batch_size,
        image_size=(args.height, args.width),
        seed=args.seed,
    )
    result = run_benchmark(config)
    print(format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
