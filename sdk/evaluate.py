"""Roll a policy out in a twin on unseen seeds and write a JSON report with intervals.

A policy is either a checkpoint folder (run with torch) or an exported bundle (run through
robota.edge with ONNX Runtime alone), so both go through the same rollout and report.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import robota
from robota.console import ProgressReporter
from robota.errors import RobotaError, SpecError, check_choice
from robota.spec import Spec
from robota.stats import wilson_interval

logger = logging.getLogger(__name__)

# Far above the recording seeds, so evaluated scenes were never seen in training.
EVAL_SEED_START = 1_000_000


def policy_kind(path: Path) -> str:
    """Return `bundle` or `checkpoint` for a policy folder, or raise naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise RobotaError(
            f"policy folder {path} not found; pass a checkpoint from `robota train` "
            "or a bundle from `robota export`"
        )
    if (path / "manifest.json").is_file():
        return "bundle"
    if (path / "config.json").is_file():
        return "checkpoint"
    raise RobotaError(
        f"{path} is neither a bundle (no manifest.json) nor a checkpoint (no config.json)"
    )


def load_rollout_policy(path: Path, variant: str | None = None, robot: str | None = None):
    """Load a checkpoint or a bundle as a rollout policy with `reset()`, `__call__` and `.spec`.

    Args:
        path: Checkpoint or bundle folder.
        variant: Reduced-precision model of a bundle (`fp16` or `int8`); `None` runs fp32.
        robot: Robot to run a checkpoint of several robots for; `None` runs its primary robot.
            A bundle runs one robot, which must be this one when it is given.
    """
    kind = policy_kind(path)
    if kind == "bundle":
        from robota.edge.policy import BundlePolicy

        bundle = BundlePolicy.from_path(path, variant=variant)
        if robot is not None and bundle.spec.robot.name != robot:
            raise RobotaError(
                f"bundle {path} is for robot {bundle.spec.robot.name!r}, not {robot!r}; export "
                f"the checkpoint with `robota export CHECKPOINT --robot {robot}`"
            )
        return bundle
    if variant is not None:
        raise RobotaError(
            f"variant {variant!r} applies to bundles only, but {path} is a checkpoint; "
            "export it with `robota export --variants` first"
        )
    from robota.policies.checkpoint import load_checkpoint
    from robota.policies.runner import TorchPolicyRunner

    return TorchPolicyRunner(load_checkpoint(path, robot=robot))


def check_policy_fits_task(policy_spec: Spec, task_spec: Spec) -> None:
    """Raise `SpecError` before any rollout if the policy cannot drive the task's robot."""
    if policy_spec.robot.joint_names != task_spec.robot.joint_names:
        raise SpecError(
            f"policy is for robot {policy_spec.robot.name!r} with joints "
            f"{list(policy_spec.robot.joint_names)}, but the task's robot is "
            f"{task_spec.robot.name!r} with {list(task_spec.robot.joint_names)}"
        )
    for key, feature in policy_spec.features.items():
        if key not in task_spec.features:
            raise SpecError(f"policy needs feature {key!r}, which the task does not provide")
        if feature.dtype != "string" and task_spec.features[key].shape != feature.shape:
            raise SpecError(
                f"policy expects {key!r} of shape {feature.shape}, the task gives "
                f"{task_spec.features[key].shape}"
            )


def image_size_of(spec: Spec) -> tuple[int, int]:
    """Camera image size (height, width) of a spec, which must be the same for all cameras."""
    sizes = {spec.features[key].shape[:2] for key in spec.image_keys}
    if len(sizes) != 1:
        raise SpecError(f"cameras of different sizes are not supported yet: {sorted(sizes)}")
    return sizes.pop()


@dataclasses.dataclass
class EvalConfig:
    """Settings of one `robota eval` run.

    Attributes:
        policy: Checkpoint or bundle folder.
        task: Twin task name.
        episodes: Number of episodes, one seed each.
        seed_start: First seed; episode k uses `seed_start + k`.
        output: Report path (JSON); none writes no file.
        workers: Processes that run episodes in parallel.
        variant: Reduced-precision model of a bundle to run (`fp16` or `int8`).
        domain_randomization: Draw the task's domain randomisation every episode.
        robot: Robot to evaluate a checkpoint of several robots for; `None` takes its primary
            robot. The twin's arm is the policy's robot.
    """

    policy: Path
    task: str = "pick-place"
    episodes: int = 50
    seed_start: int = EVAL_SEED_START
    output: Path | None = None
    workers: int = 1
    variant: str | None = None
    domain_randomization: bool = False
    robot: str | None = None

    def __post_init__(self) -> None:
        self.policy = Path(self.policy)
        if self.episodes < 1:
            raise RobotaError(f"episodes must be at least 1, got {self.episodes}")
        if self.workers < 1:
            raise RobotaError(f"workers must be at least 1, got {self.workers}")
        if self.output is not None:
            self.output = Path(self.output)


def evaluate(config: EvalConfig, progress: ProgressReporter | None = None) -> dict[str, Any]:
    """Run the policy on `config.episodes` seeds, then return the report and write it if asked.

    With `config.workers` above 1, spawned worker processes share the seeds, and each has its
    own twin, renderer and policy. Rows come back in seed order either way.
    """
    from robota.sim import TASKS

    check_choice("task", config.task, TASKS)
    kind = policy_kind(config.policy)
    seeds = [config.seed_start + k for k in range(config.episodes)]
    rows: list[dict[str, Any]] = []

    def collect(row: dict[str, Any]) -> None:
        rows.append(row)
        if progress is not None:
            progress.advance(1, success=sum(r["success"] for r in rows) / len(rows))

    setup = (config.policy, config.task, config.variant, config.domain_randomization, config.robot)
    jobs = [(*setup, seed) for seed in seeds]
    if config.workers <= 1:
        for job in jobs:
            collect(_run_job(job))
        _close_worker()
    else:
        # Load once here first, so a bad policy fails before any worker starts: an exception in
        # a pool's initializer would make the pool restart workers forever.
        _init_worker(*setup)
        _close_worker()
        context = multiprocessing.get_context("spawn")
        with context.Pool(config.workers) as pool:
            for row in pool.imap_unordered(_run_job, jobs):
                collect(row)

    rows.sort(key=lambda r: r["seed"])
    report = build_report(rows, policy=config.policy, kind=kind, task=config.task)
    if config.output is not None:
        write_json_atomic(config.output, report)
    return report


# One twin and one policy per process, made on its first job by `_init_worker`.
_worker_state: dict[str, Any] = {}


def _init_worker(
    policy_path: Path,
    task: str,
    variant: str | None = None,
    domain_randomization: bool = False,
    robot: str | None = None,
) -> None:
    from robota.sim import make_env

    if multiprocessing.parent_process() is not None:
        limit_threads_in_worker()
    policy = load_rollout_policy(policy_path, variant, robot)
    env = make_env(
        task,
        robot=policy.spec.robot.name,
        image_size=image_size_of(policy.spec),
        domain_randomization=domain_randomization,
    )
    check_policy_fits_task(policy.spec, env.unwrapped.feature_spec)
    key = (policy_path, task, variant, domain_randomization, robot)
    _worker_state.update(policy=policy, env=env, key=key)


def limit_threads_in_worker() -> None:
    """Give a worker process one thread for torch and one for Mesa's software renderer.

    Workers share the cores, and more threads per worker only add contention.
    """
    os.environ["LP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run_job(job: tuple[Path, str, str | None, bool, str | None, int]) -> dict[str, Any]:
    from robota.sim.rollout import run_episode

    *setup, seed = job
    if _worker_state.get("key") != tuple(setup):
        _close_worker()
        _init_worker(*setup)
    episode = run_episode(_worker_state["env"], _worker_state["policy"], seed)
    return {
        "seed": seed,
        "success": bool(episode.success),
        "steps": int(episode.steps),
        "instruction": episode.instruction,
        "randomization": episode.randomization,
    }


def _close_worker() -> None:
    env = _worker_state.pop("env", None)
    if env is not None:
        env.close()
    _worker_state.clear()


def build_report(
    rows: list[dict[str, Any]], *, policy: Path, kind: str, task: str
) -> dict[str, Any]:
    """Aggregate per-episode rows into a report with the success rate and its Wilson interval."""
    successes = sum(bool(r["success"]) for r in rows)
    low, high = wilson_interval(successes, len(rows))
    return {
        "policy": str(policy),
        "policy_kind": kind,
        "task": task,
        "episodes": len(rows),
        "successes": successes,
        "success_rate": successes / len(rows) if rows else 0.0,
        "success_interval_95": [low, high],
        "interval_method": "wilson",
        "rows": rows,
        "robota_version": robota.__version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
