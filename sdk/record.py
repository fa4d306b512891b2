"""Record scripted-expert demonstrations in a twin into a LeRobot v3.0 dataset."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from robota.console import ProgressReporter
from robota.errors import DatasetError, RobotaError, SpecError
from robota.stats import wilson_interval

logger = logging.getLogger(__name__)

# Recording uses seeds from 0 up; evaluation starts far above, so no evaluated scene was seen
# in training.
RECORD_SEED_START = 0


@dataclasses.dataclass
class RecordConfig:
    """Settings of one `robota record` run.

    Attributes:
        output: Dataset folder to create; it must not exist yet.
        task: Twin task name, for example `pick-place`, or several names for a multi-task
            dataset, recorded one task after the other.
        episodes: Number of successful demonstrations to keep per task.
        seed: First episode seed of each task; its episode k uses `seed + k`.
        image_size: Camera image height and width in pixels.
        max_attempts: Upper bound on episodes tried per task; defaults to twice `episodes`.
        keep_failures: Also keep episodes in which the expert failed.
        robot: Arm of the twin, `ur5e` or `panda`.
        domain_randomization: Draw the tasks' domain randomisation every episode.
    """

    output: Path
    task: str | Sequence[str] = "pick-place"
    episodes: int = 50
    seed: int = RECORD_SEED_START
    image_size: int = 96
    max_attempts: int | None = None
    keep_failures: bool = False
    robot: str = "ur5e"
    domain_randomization: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return (self.task,) if isinstance(self.task, str) else tuple(self.task)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if not self.tasks:
            raise RobotaError("task names no task; pass at least one, for example pick-place")
        if len(set(self.tasks)) != len(self.tasks):
            raise RobotaError(f"task lists a task twice: {list(self.tasks)}")
        if self.episodes < 1:
            raise RobotaError(f"episodes must be at least 1, got {self.episodes}")
        if self.image_size < 16:
            raise RobotaError(f"image_size must be at least 16 pixels, got {self.image_size}")
        if self.max_attempts is None:
            self.max_attempts = 2 * self.episodes
        if self.max_attempts < self.episodes:
            raise RobotaError(
                f"max_attempts ({self.max_attempts}) is below episodes ({self.episodes})"
            )


@dataclasses.dataclass
class RecordResult:
    """Outcome of a recording run."""

    dataset: Path
    attempts: int
    successes: int
    kept: int
    seeds: list[int]

    @property
    def expert_success_rate(self) -> float:
        return self.successes / max(self.attempts, 1)

    @property
    def expert_interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.attempts)


def record(config: RecordConfig, progress: ProgressReporter | None = None) -> RecordResult:
    """Run each task's scripted expert and write every kept episode to a new dataset.

    Each episode's metadata stores its seed, success, task name, robot and every random draw of
    its reset (JSON text under `randomization`), so any episode can be inspected and replayed.

    Raises:
        DatasetError: The output folder exists already.
        UnknownNameError: A task or the robot is not registered.
        SpecError: The tasks' twins have different feature specs.
    """
    from robota.datasets import DatasetWriter
    from robota.sim import make_env
    from robota.sim.expert import make_expert
    from robota.sim.rollout import run_episode

    if config.output.exists():
        raise DatasetError(
            f"{config.output} exists already; choose a new folder so no recording is overwritten"
        )
    size = (config.image_size, config.image_size)
    envs = {
        task: make_env(
            task,
            robot=config.robot,
            image_size=size,
            domain_randomization=config.domain_randomization,
        )
        for task in config.tasks
    }
    spec = envs[config.tasks[0]].unwrapped.feature_spec
    for task, env in envs.items():
        if env.unwrapped.feature_spec != spec:
            raise SpecError(f"task {task!r} has a different feature spec from {config.tasks[0]!r}")
    result = RecordResult(config.output, attempts=0, successes=0, kept=0, seeds=[])

    with DatasetWriter(config.output, spec, robot_type=spec.robot.name) as writer:

        def add_frame(observation: dict, action) -> None:
            writer.add_frame({**observation, "action": action})

        for task, env in envs.items():
            expert = make_expert(task, env)
            seed = config.seed
            kept = attempts = 0
            while kept < config.episodes and attempts < config.max_attempts:
                episode = run_episode(env, expert, seed, on_step=add_frame)
                attempts += 1
                result.attempts += 1
                result.successes += int(episode.success)
                if episode.success or config.keep_failures:
                    writer.save_episode(
                        {
                            "seed": seed,
                            "success": bool(episode.success),
                            "task_name": task,
                            "robot": spec.robot.name,
                            "randomization": json.dumps(episode.randomization, sort_keys=True),
                        }
                    )
                    kept += 1
                    result.kept += 1
                    result.seeds.append(seed)
                    if progress is not None:
                        progress.advance(1, expert_success=result.expert_success_rate)
                else:
                    writer.discard_episode()
                    logger.info("%s expert failed on seed %d; episode discarded", task, seed)
                seed += 1
            if kept < config.episodes:
                logger.warning(
                    "%s: kept %d of %d requested episodes after %d attempts",
                    task,
                    kept,
                    config.episodes,
                    attempts,
                )
    for env in envs.values():
        env.close()
    return result
