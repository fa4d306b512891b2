"""Run a suite's scenario matrix with a policy, in spawned worker processes, and judge it.

Each worker loads one policy, plus the exported bundle when comparing, and keeps the twin of the
scenario it is running. Rows come back in (scenario, seed) order whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np

import robota
from robota.console import ProgressReporter
from robota.errors import RobotaError, SpecError
from robota.evaluate import check_policy_fits_task, policy_kind
from robota.spec import Spec
from robota.suite import Scenario, Suite, load_suite
from robota.suite_stats import compare_with_baseline, summarise_scenario

logger = logging.getLogger(__name__)

# Image size of a policy that reads no camera; the twin still renders its failure videos.
DEFAULT_IMAGE_SIZE = (64, 64)


@dataclasses.dataclass
class SuiteRunConfig:
    """Settings of one `robota suite run`.

    Attributes:
        suite: Suite file, or a parsed suite.
        policy: Checkpoint or bundle folder.
        compare_bundle: Bundle exported from `policy`. Each episode then also runs the bundle on
            the same seed. The bundle also shadows the checkpoint's steps, which measures how far
            their actions differ on the same observations.
        baseline: JSON report of an earlier run to pair episodes with by seed.
        workers: Processes that run episodes in parallel.
        output: Folder that `run_suite` writes `report.json`, `junit.xml`, `report.html` and the
            failure GIFs into; `None` writes no file.
    """

    suite: Suite | Path
    policy: Path
    compare_bundle: Path | None = None
    baseline: Path | None = None
    workers: int = 1
    output: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.suite, Suite):
            self.suite = load_suite(self.suite)
        self.policy = Path(self.policy)
        for name in ("compare_bundle", "baseline", "output"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        if self.workers < 1:
            raise RobotaError(f"workers must be at least 1, got {self.workers}")


@dataclasses.dataclass
class SuiteResult:
    """A judged suite run.

    Attributes:
        report: The JSON-ready report (suite, policy, per-scenario summaries and rows).
        videos: GIF bytes of failed episodes, keyed by (scenario name, seed).
    """

    report: dict[str, Any]
    videos: dict[tuple[str, int], bytes]

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


def run_suite(config: SuiteRunConfig, progress: ProgressReporter | None = None) -> SuiteResult:
    """Check the policy against every task, run all episodes, then summarise and judge them.

    Raises:
        SpecError: The policy (or the bundle to compare) cannot drive a scenario's robot or
            lacks a feature its task provides; raised before any episode runs.
        RobotaError: The baseline report cannot be read.
    """
    suite = config.suite
    policy_spec = read_policy_spec(config.policy)
    if config.compare_bundle is not None:
        if policy_kind(config.compare_bundle) != "bundle":
            raise RobotaError(f"--compare-bundle {config.compare_bundle} is not a bundle folder "
                              "(no manifest.json); pass the output of `robota export`")
        check_same_spec(policy_spec, read_policy_spec(config.compare_bundle), config)
    check_scenarios_fit(suite, policy_spec)
    baseline_rows = read_baseline_rows(config.baseline) if config.baseline else None

    rows, frames = _run_all(config, _image_size(policy_spec), progress)
    videos = _encode_videos(frames, policy_spec.fps)
    report = build_suite_report(config, rows, baseline_rows, videos)
    if config.output is not None:
        from robota.suite_report import write_suite_outputs

        write_suite_outputs(config.output, report, videos)
    return SuiteResult(report=report, videos=videos)


def read_policy_spec(path: Path) -> Spec:
    """Read a checkpoint's or bundle's feature spec from its JSON, without loading the model."""
    kind = policy_kind(path)
    name = "manifest.json" if kind == "bundle" else "config.json"
    try:
        return Spec.from_dict(json.loads((Path(path) / name).read_text())["spec"])
    except (KeyError, TypeError, ValueError) as error:
        raise SpecError(f"{Path(path) / name} has no valid `spec` ({error}); re-create the "
                        f"{kind} with this version of robota") from None


def check_same_spec(policy_spec: Spec, bundle_spec: Spec, config: SuiteRunConfig) -> None:
    """Raise `SpecError` when the bundle to compare was not exported from a policy of this spec."""
    if policy_spec.fingerprint() != bundle_spec.fingerprint():
        raise SpecError(
            f"bundle {config.compare_bundle} has a different feature spec from {config.policy}; "
            "pass the bundle that `robota export` wrote from this checkpoint"
        )


def check_scenarios_fit(suite: Suite, policy_spec: Spec) -> None:
    """Raise `SpecError` before any rollout if a scenario's task or robot does not fit the policy."""
    from robota.sim import make_env

    for task in dict.fromkeys(s.task for s in suite.scenarios):
        env = make_env(task, image_size=_image_size(policy_spec), render_images=False)
        task_spec = env.unwrapped.feature_spec
        env.close()
        for robot in dict.fromkeys(s.robot for s in suite.scenarios if s.task == task):
            if robot != task_spec.robot.name:
                raise SpecError(
                    f"{suite.path}: task {task!r} has robot {task_spec.robot.name!r}, but the "
                    f"matrix names robot {robot!r} for it; list {task_spec.robot.name!r} instead"
                )
        try:
            check_policy_fits_task(policy_spec, task_spec)
        except SpecError as error:
            raise SpecError(f"policy does not fit task {task!r}: {error}") from None


def read_baseline_rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Read a suite report's rows, grouped by scenario name."""
    try:
        report = json.loads(Path(path).read_text())
        rows = report["rows"]
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["scenario"], []).append(row)
    except FileNotFoundError:
        raise RobotaError(f"baseline report {path} not found; pass a report.json of an earlier "
                          "`robota suite run`") from None
    except (KeyError, TypeError, ValueError) as error:
        raise RobotaError(f"baseline {path} is not a suite report ({error!r} missing or "
                          "invalid); pass a report.json of `robota suite run`") from None
    return grouped


def _image_size(spec: Spec) -> tuple[int, int]:
    from robota.evaluate import image_size_of

    return image_size_of(spec) if spec.image_keys else DEFAULT_IMAGE_SIZE


def _run_all(
    config: SuiteRunConfig, image_size: tuple[int, int], progress: ProgressReporter | None
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], np.ndarray]]:
    suite = config.suite
    jobs = [(index, seed) for index in range(len(suite.scenarios)) for seed in suite.seeds]
    init_args = (config.policy, config.compare_bundle, suite, image_size)
    rows: list[dict[str, Any]] = []
    frames: dict[tuple[str, int], np.ndarray] = {}

    def collect(result: tuple[dict[str, Any], np.ndarray | None]) -> None:
        row, video_frames = result
        rows.append(row)
        if video_frames is not None:
            _keep_first_failures(frames, row, video_frames, suite.failure_videos)
        if progress is not None:
            progress.advance(1, success=sum(r["success"] for r in rows) / len(rows))

    if config.workers <= 1:
        _init_worker(*init_args)
        try:
            for job in jobs:
                collect(_run_job(job))
        finally:
            _close_worker()
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(config.workers, initializer=_init_worker, initargs=init_args) as pool:
            for result in pool.imap_unordered(_run_job, jobs):
                collect(result)

    order = {scenario.name: index for index, scenario in enumerate(suite.scenarios)}
    rows.sort(key=lambda row: (order[row["scenario"]], row["seed"]))
    return rows, frames


def _keep_first_failures(frames, row, video_frames, limit: int) -> None:
    # Keep the failures of the lowest seeds, so the videos do not depend on worker timing.
    scenario = row["scenario"]
    kept_seeds = sorted(seed for name, seed in frames if name == scenario)
    if len(kept_seeds) < limit:
        frames[(scenario, row["seed"])] = video_frames
    elif kept_seeds and row["seed"] < kept_seeds[-1]:
        del frames[(scenario, kept_seeds[-1])]
        frames[(scenario, row["seed"])] = video_frames


def _encode_videos(frames, fps: int) -> dict[tuple[str, int], bytes]:
    from robota.suite_metrics import VIDEO_FRAME_STRIDE, encode_gif

    return {key: encode_gif(value, fps / VIDEO_FRAME_STRIDE) for key, value in sorted(frames.items())}


# One policy, an optional bundle and the current scenario's twin per process.
_worker: dict[str, Any] = {}


def _init_worker(policy: Path, compare_bundle: Path | None, suite: Suite, image_size) -> None:
    # Only store the settings: a pool initializer that raises makes the pool start replacement
    # workers forever, while an error inside `_run_job` reaches the parent.
    _worker.update(
        policy_path=policy,
        bundle_path=compare_bundle,
        suite=suite,
        image_size=image_size,
        scenario=None,
    )


def _load_policies() -> None:
    from robota.evaluate import limit_threads_in_worker, load_rollout_policy

    if "policy" in _worker:
        return
    if multiprocessing.parent_process() is not None:
        limit_threads_in_worker()
    bundle_path = _worker["bundle_path"]
    _worker["policy"] = load_rollout_policy(_worker["policy_path"])
    _worker["bundle"] = load_rollout_policy(bundle_path) if bundle_path is not None else None


def _scenario_env(index: int):
    if _worker["scenario"] == index:
        return _worker["env"], _worker["metrics"]
    _close_env()
    from robota.sim import make_env
    from robota.sim.perturbations import apply_randomization_level, make_perturbation
    from robota.suite_metrics import EpisodeMetrics

    suite: Suite = _worker["suite"]
    scenario: Scenario = suite.scenarios[index]
    kwargs: dict[str, Any] = {"image_size": _worker["image_size"]}
    if suite.max_episode_steps is not None:
        kwargs["max_episode_steps"] = suite.max_episode_steps
    env = make_env(scenario.task, **kwargs)
    metrics = EpisodeMetrics(apply_randomization_level(env, scenario.randomization))
    perturbation = make_perturbation(scenario.perturbation_kind, dict(scenario.perturbation_parameters))
    wrapped = perturbation.wrap(metrics)
    _worker.update(scenario=index, env=wrapped, metrics=metrics)
    return wrapped, metrics


def _run_job(job: tuple[int, int]) -> tuple[dict[str, Any], np.ndarray | None]:
    from robota.sim.rollout import run_episode

    index, seed = job
    _load_policies()
    scenario: Scenario = _worker["suite"].scenarios[index]
    env, metrics = _scenario_env(index)
    policy = _worker["policy"]
    shadow = _ShadowPolicy(policy, _worker["bundle"]) if _worker["bundle"] is not None else policy

    episode = run_episode(env, shadow, seed)
    row: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": seed,
        "success": bool(episode.success),
        "steps": int(episode.steps),
        "instruction": episode.instruction,
        "randomization": metrics.randomization,
        **metrics.summary(),
    }
    video_frames = None if episode.success else metrics.frames()

    if _worker["bundle"] is not None:
        bundle_episode = run_episode(env, _worker["bundle"], seed)
        row["bundle"] = {
            "success": bool(bundle_episode.success),
            "steps": int(bundle_episode.steps),
            "action_max_abs_diff": shadow.max_abs_diff,
        }
    return row, video_frames


class _ShadowPolicy:
    """Drive the twin with `primary` while `shadow` receives the same observations.

    Both keep their own chunk queues, which stay in step because both plan on the same calls.
    """

    def __init__(self, primary, shadow):
        self.primary = primary
        self.shadow = shadow
        self.max_abs_diff = 0.0

    def reset(self) -> None:
        self.primary.reset()
        self.shadow.reset()
        self.max_abs_diff = 0.0

    def __call__(self, observation):
        action = np.asarray(self.primary(observation))
        shadow_action = np.asarray(self.shadow(observation))
        self.max_abs_diff = max(self.max_abs_diff, float(np.max(np.abs(action - shadow_action))))
        return action


def _close_env() -> None:
    env = _worker.pop("env", None)
    if env is not None:
        env.close()
    _worker["scenario"] = None


def _close_worker() -> None:
    _close_env()
    _worker.clear()


def build_suite_report(
    config: SuiteRunConfig,
    rows: list[dict[str, Any]],
    baseline_rows: dict[str, list[dict[str, Any]]] | None,
    videos: dict[tuple[str, int], bytes],
) -> dict[str, Any]:
    """Summarise each scenario, compare it with the baseline, and decide whether the run passed."""
    suite: Suite = config.suite
    scenarios = []
    for scenario in suite.scenarios:
        scenario_rows = [row for row in rows if row["scenario"] == scenario.name]
        summary = {"name": scenario.name, **summarise_scenario(scenario_rows, suite.thresholds)}
        if baseline_rows is not None:
            previous = baseline_rows.get(scenario.name)
            summary["baseline"] = (
                compare_with_baseline(scenario_rows, previous, suite.alpha) if previous else None
            )
        summary["videos"] = sorted(seed for name, seed in videos if name == scenario.name)
        summary["passed"] = not summary["threshold_failures"] and not (
            summary.get("baseline") or {}
        ).get("regression", False)
        scenarios.append(summary)

    return {
        "suite": suite.to_dict(),
        "policy": str(config.policy),
        "policy_kind": policy_kind(config.policy),
        "compare_bundle": str(config.compare_bundle) if config.compare_bundle else None,
        "baseline": str(config.baseline) if config.baseline else None,
        "passed": all(s["passed"] for s in scenarios),
        "scenarios": scenarios,
        "rows": rows,
        "interval_method": "wilson",
        "paired_test": "exact McNemar, two-sided, on seeds shared with the baseline",
        "robota_version": robota.__version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
