"""`robota demo`: the main job end to end on the built-in twin, with CPU-sized defaults.

Phases: record expert demonstrations, train a policy, export a bundle (with a parity check),
evaluate the checkpoint and the bundle on unseen seeds, and time both at batch 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robota import console
from robota.errors import RobotaError
from robota.evaluate import EVAL_SEED_START, EvalConfig, evaluate, write_json_atomic
from robota.record import RecordConfig, RecordResult, record
from robota.stats import latency_percentiles_ms, wilson_interval

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DemoConfig:
    """Defaults sized to finish within 20 minutes on a 2-core CPU.

    Attributes:
        workdir: Parent folder; each run gets a new timestamped folder inside it.
        task: Twin task name.
        demonstrations: Expert episodes recorded for training.
        eval_episodes: Unseen seeds evaluated, for the checkpoint and again for the bundle.
        train_steps: Optimiser steps.
        batch_size: Training batch size.
        image_size: Camera image height and width in pixels.
        latency_samples: Batch-1 inference calls timed per runtime.
        eval_workers: Processes that run evaluation episodes in parallel.
        train_threads: Torch threads for training. One thread is slower than two on an idle
            2-core machine but stays fast when other processes load the cores, where two
            threads spin against each other.
        sites: Local federated sites; above 1, the demonstrations are split between sites and
            trained with Flower (FedAvg) instead of one process.
        federated_rounds: Rounds of the federated training; each site runs
            `train_steps // federated_rounds` steps per round.
        seed: Seed of training and of the first recorded episode.
    """

    workdir: Path = Path("runs")
    task: str = "pick-place"
    demonstrations: int = 50
    eval_episodes: int = 50
    train_steps: int = 3000
    batch_size: int = 32
    image_size: int = 96
    latency_samples: int = 200
    eval_workers: int = 2
    train_threads: int = 1
    sites: int = 1
    federated_rounds: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        for name in (
            "demonstrations",
            "eval_episodes",
            "train_steps",
            "batch_size",
            "sites",
            "federated_rounds",
        ):
            if getattr(self, name) < 1:
                raise RobotaError(f"{name} must be at least 1, got {getattr(self, name)}")


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run every phase of the main job and return the summary that `robota demo` prints."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = config.workdir / f"demo-{stamp}"
    run_dir.mkdir(parents=True)
    logger.info("demo run folder: %s", run_dir)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "config": _jsonable(config)}
    timer = _PhaseTimer()
    summary["phase_s"] = timer.durations

    with timer("record"):
        recordings = _record_phase(config, run_dir)
    successes = sum(r.successes for r in recordings)
    attempts = sum(r.attempts for r in recordings)
    summary["expert"] = {
        "successes": successes,
        "episodes": attempts,
        "success_rate": successes / attempts,
        "success_interval_95": list(wilson_interval(successes, attempts)),
    }
    datasets = [r.dataset for r in recordings]
    dataset = datasets[0]
    with timer("train"):
        if config.sites > 1:
            checkpoint = _federated_train_phase(config, datasets, run_dir / "federated")
        else:
            checkpoint = _train_phase(config, dataset, run_dir / "checkpoint")
    with timer("export"):
        summary["export"] = _export_phase(checkpoint, dataset, run_dir / "bundle")
    for kind, path in (("checkpoint", checkpoint), ("bundle", run_dir / "bundle")):
        with timer(f"eval {kind}"):
            summary[kind] = _eval_phase(config, kind, path, run_dir / f"eval-{kind}.json")
    with timer("latency"):
        summary["latency"] = _latency_phase(config, checkpoint, run_dir / "bundle", dataset)

    summary["wall_time_s"] = sum(timer.durations.values())
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


class _PhaseTimer:
    """Context manager factory that adds each phase's wall time to `durations` (seconds)."""

    def __init__(self) -> None:
        self.durations: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.durations[phase] = time.monotonic() - start
            logger.info("phase %s took %.1f s", phase, self.durations[phase])


def _record_phase(config: DemoConfig, run_dir: Path) -> list[RecordResult]:
    """Record one dataset, or one per site with disjoint seeds when `config.sites` > 1."""
    if config.sites == 1:
        plan = [(run_dir / "dataset", config.demonstrations, config.seed)]
    else:
        per_site = [config.demonstrations // config.sites] * config.sites
        per_site[0] += config.demonstrations % config.sites
        # Each site may try up to twice its episodes, so these seed ranges never overlap.
        starts = [config.seed + 2 * sum(per_site[:k]) for k in range(config.sites)]
        plan = [
            (run_dir / f"dataset-site{k}", per_site[k], starts[k]) for k in range(config.sites)
        ]

    results = []
    with console.progress("record", config.demonstrations) as bar:
        for dataset, episodes, seed in plan:
            record_config = RecordConfig(
                output=dataset,
                task=config.task,
                episodes=episodes,
                seed=seed,
                image_size=config.image_size,
            )
            results.append(record(record_config, progress=bar))
    return results


def _federated_train_phase(config: DemoConfig, datasets: list[Path], output: Path) -> Path:
    """Train across one local Flower site per dataset with the same total optimiser steps."""
    from robota.federated import FederationConfig, train_federated_local

    federation = FederationConfig(
        output=output,
        rounds=config.federated_rounds,
        local_steps=max(1, config.train_steps // config.federated_rounds),
        min_sites=len(datasets),
        batch_size=config.batch_size,
        seed=config.seed,
    )
    logger.info(
        "federated training: %d sites, %d rounds of %d local steps",
        len(datasets),
        federation.rounds,
        federation.local_steps,
    )
    return train_federated_local(datasets, federation, workdir=output.parent / "flower")


def _train_phase(config: DemoConfig, dataset: Path, output: Path) -> Path:
    from robota.train import TrainConfig, train

    train_config = TrainConfig(
        dataset=dataset,
        output=output,
        policy="act",
        steps=config.train_steps,
        batch_size=config.batch_size,
        seed=config.seed,
        num_threads=config.train_threads,
    )
    with console.progress("train", config.train_steps) as bar:
        last = [0]

        def report(step: int, metrics: dict) -> None:
            bar.advance(step - last[0], loss=float(metrics.get("loss", float("nan"))))
            last[0] = step

        return train(train_config, progress=report)


def _export_phase(checkpoint: Path, dataset: Path, bundle: Path) -> dict[str, Any]:
    from robota.export import export_bundle, parity_observations_from_dataset

    observations = parity_observations_from_dataset(dataset, 64)
    result = export_bundle(checkpoint, bundle, observations=observations)
    return {
        "bundle": str(result.bundle),
        "parity_max_abs_error": result.parity_max_abs_error,
        "parity_frames": result.frames_checked,
    }


def _eval_phase(config: DemoConfig, kind: str, policy: Path, report: Path) -> dict[str, Any]:
    eval_config = EvalConfig(
        policy=policy,
        task=config.task,
        episodes=config.eval_episodes,
        seed_start=EVAL_SEED_START,
        output=report,
        workers=config.eval_workers,
    )
    with console.progress(f"eval {kind}", config.eval_episodes) as bar:
        result = evaluate(eval_config, progress=bar)
    return {
        "successes": result["successes"],
        "episodes": result["episodes"],
        "success_rate": result["success_rate"],
        "success_interval_95": result["success_interval_95"],
        "report": str(report),
    }


def _latency_phase(
    config: DemoConfig, checkpoint: Path, bundle: Path, dataset: Path
) -> dict[str, Any]:
    from robota.edge.policy import BundlePolicy
    from robota.export import parity_observations_from_dataset
    from robota.policies.runner import TorchPolicyRunner

    observations = parity_observations_from_dataset(dataset, min(config.latency_samples, 64))
    results = {}
    for name, runner in (
        ("torch", TorchPolicyRunner.from_checkpoint(checkpoint)),
        ("onnxruntime", BundlePolicy.from_path(bundle)),
    ):
        results[name] = time_chunk_inference(runner, observations, config.latency_samples)
    return results


def time_chunk_inference(runner, observations: list[dict], samples: int) -> dict[str, float]:
    """Time `predict_action_chunk` at batch 1 over `samples` calls after a short warm-up."""
    for observation in observations[:5]:
        runner.predict_action_chunk(observation)
    durations = []
    for k in range(samples):
        observation = observations[k % len(observations)]
        start = time.perf_counter()
        runner.predict_action_chunk(observation)
        durations.append(time.perf_counter() - start)
    return latency_percentiles_ms(durations)


def format_summary(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows of the table `robota demo` prints."""

    def rate(entry: dict[str, Any]) -> str:
        low, high = entry["success_interval_95"]
        return (
            f"{entry['success_rate']:.0%} ({entry['successes']}/{entry['episodes']}), "
            f"95% CI [{low:.0%}, {high:.0%}]"
        )

    latency = summary["latency"]
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary["phase_s"].items())
    return [
        ("expert success (recording seeds)", rate(summary["expert"])),
        ("policy success, checkpoint (torch)", rate(summary["checkpoint"])),
        ("policy success, bundle (ONNX Runtime)", rate(summary["bundle"])),
        ("export parity, max abs error", f"{summary['export']['parity_max_abs_error']:.2e}"),
        (
            "latency batch 1, torch p50 / p99",
            f"{latency['torch']['p50_ms']:.2f} / {latency['torch']['p99_ms']:.2f} ms",
        ),
        (
            "latency batch 1, ONNX Runtime p50 / p99",
            f"{latency['onnxruntime']['p50_ms']:.2f} / {latency['onnxruntime']['p99_ms']:.2f} ms",
        ),
        ("wall time", f"{summary['wall_time_s'] / 60:.1f} min ({phases})"),
        ("run folder", summary["run_dir"]),
    ]


def _jsonable(config: DemoConfig) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
