"""Record scripted-expert demonstrations in a twin into a LeRobot v3.0 dataset."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from robota.console import ProgressReporter
from robota.errors import DatasetError, RobotaError
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
        task: Twin task name, for example `pick-place`.
        episodes: Number of successful demonstrations to keep.
        seed: First episode seed; episode k uses `seed + k`.
        image_size: Camera image height and width in pixels.
        max_attempts: Upper bound on episodes tried; defaults to twice `episodes`.
        keep_failures: Also keep episodes in which the expert failed.
    """

    output: Path
    task: str = "pick-place"
    episodes: int = 50
    seed: int = RECORD_SEED_START
    image_size: int = 96
    max_attempts: int | None = None
    keep_failures: bool = False

    def __post_init__(self) -> None:
        self.output = Path(self.output)
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
    """Run the task's scripted expert and write every kept episode to a new dataset.

    Raises:
        DatasetError: The output folder exists already.
        UnknownNameError: The task is not registered.
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
    env = make_env(config.task, image_size=size)
    expert = make_expert(config.task, env)
    spec = env.unwrapped.feature_spec
    result = RecordResult(config.output, attempts=0, successes=0, kept=0, seeds=[])

    with DatasetWriter(config.output, spec, robot_type=spec.robot.name) as writer:

        def add_frame(observation: dict, action) -> None:
            writer.add_frame({**observation, "action": action})

        seed = config.seed
        while result.kept < config.episodes and result.attempts < config.max_attempts:
            episode = run_episode(env, expert, seed, on_step=add_frame)
            result.attempts += 1
            result.successes += int(episode.success)
            if episode.success or config.keep_failures:
                writer.save_episode({"seed": seed, "success": bool(episode.success)})
                result.kept += 1
                result.seeds.append(seed)
                if progress is not None:
                    progress.advance(1, expert_success=result.expert_success_rate)
            else:
                writer.discard_episode()
                logger.info("expert failed on seed %d; episode discarded", seed)
            seed += 1
    env.close()

    if result.kept < config.episodes:
        logger.warning(
            "kept %d of %d requested episodes after %d attempts",
            result.kept,
            config.episodes,
            result.attempts,
        )
    return result
