"""Regression suites: a TOML file that names a scenario matrix, seeds and pass thresholds.

A suite expands to one scenario per combination of task, robot, randomisation level and
perturbation. Every scenario runs the same seeds, so episodes pair up across scenarios, across
a checkpoint and its bundle, and against a baseline report.

```toml
[suite]
name = "pick-place-smoke"
episodes = 4

[matrix]
tasks = ["pick-place"]
robots = ["ur5e"]
randomization = ["nominal", "wide"]
perturbations = ["none", "latency", "dim-light"]

[perturbations.dim-light]
kind = "lighting"
intensity_scale = 0.4

[thresholds]
min_success_rate = 0.8
```
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robota.errors import RobotaError, UnknownNameError
from robota.evaluate import EVAL_SEED_START

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SUITE_KEYS = ("name", "episodes", "seed_start", "alpha", "max_episode_steps", "failure_videos")
MATRIX_KEYS = ("tasks", "robots", "randomization", "perturbations")
TOP_LEVEL_KEYS = ("suite", "matrix", "perturbations", "thresholds")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Pass conditions of every scenario; `None` leaves a condition unchecked.

    Attributes:
        min_success_rate: Lowest success rate a scenario may have, in [0, 1].
        max_contact_force_n: Highest contact force on the robot in any episode.
        max_cell_collisions: Most collisions of the robot with the cell in any episode.
        max_joint_limit_violations: Most steps outside the joint limits in any episode.
        max_velocity_limit_violations: Most steps over the velocity limits in any episode.
    """

    min_success_rate: float | None = None
    max_contact_force_n: float | None = None
    max_cell_collisions: int | None = None
    max_joint_limit_violations: int | None = None
    max_velocity_limit_violations: int | None = None

    def episode_limits(self) -> dict[str, float]:
        """Return the per-episode maxima that are set, keyed by the row metric they bound."""
        limits = {
            "max_contact_force_n": self.max_contact_force_n,
            "cell_collisions": self.max_cell_collisions,
            "joint_limit_violations": self.max_joint_limit_violations,
            "velocity_limit_violations": self.max_velocity_limit_violations,
        }
        return {metric: value for metric, value in limits.items() if value is not None}


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One cell of the matrix. Its name is `task/robot/randomization/perturbation`."""

    task: str
    robot: str
    randomization: str
    perturbation: str
    perturbation_kind: str
    perturbation_parameters: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.task}/{self.robot}/{self.randomization}/{self.perturbation}"


@dataclasses.dataclass(frozen=True)
class Suite:
    """A parsed suite file.

    Attributes:
        name: Suite name, shown in reports and JUnit.
        path: The TOML file it came from.
        scenarios: The expanded matrix, in file order.
        episodes: Episodes per scenario, one seed each.
        seed_start: First seed; episode k of every scenario uses `seed_start + k`.
        alpha: Significance level of the paired test against a baseline.
        max_episode_steps: Step limit of each episode, or `None` for the task's default.
        failure_videos: Failed episodes per scenario that get a video in the HTML report.
        thresholds: Pass conditions of every scenario.
    """

    name: str
    path: Path
    scenarios: tuple[Scenario, ...]
    episodes: int = 10
    seed_start: int = EVAL_SEED_START
    alpha: float = 0.05
    max_episode_steps: int | None = None
    failure_videos: int = 2
    thresholds: Thresholds = Thresholds()

    @property
    def seeds(self) -> list[int]:
        return [self.seed_start + k for k in range(self.episodes)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "episodes": self.episodes,
            "seed_start": self.seed_start,
            "alpha": self.alpha,
            "max_episode_steps": self.max_episode_steps,
            "failure_videos": self.failure_videos,
            "thresholds": dataclasses.asdict(self.thresholds),
            "scenarios": [
                {**dataclasses.asdict(s), "name": s.name,
                 "perturbation_parameters": dict(s.perturbation_parameters)}
                for s in self.scenarios
            ],
        }


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file.

    Raises:
        RobotaError: The file is missing, is not valid TOML or has an invalid value.
        UnknownNameError: A key, task, robot, level or perturbation is unknown; the message
            names the file, the table and the nearest valid name.
    """
    path = Path(path)
    if not path.is_file():
        raise RobotaError(f"suite file {path} not found; pass a TOML file such as "
                          "examples/suites/pick_place_smoke.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RobotaError(f"{path} is not valid TOML: {error}") from None
    return parse_suite(data, path)


def parse_suite(data: Mapping[str, Any], path: Path) -> Suite:
    """Build a `Suite` from the TOML tables of the file at `path` (named in errors)."""
    _check_keys(data, TOP_LEVEL_KEYS, f"{path}: top-level table")
    settings = _table(data, "suite", path)
    _check_keys(settings, SUITE_KEYS, f"{path}: key in [suite]")
    matrix = _table(data, "matrix", path)
    _check_keys(matrix, MATRIX_KEYS, f"{path}: key in [matrix]")

    definitions = _perturbation_definitions(_table(data, "perturbations", path), path)
    scenarios = _expand_matrix(matrix, definitions, path)
    thresholds = _thresholds(_table(data, "thresholds", path), path)

    suite = Suite(
        name=str(settings.get("name", path.stem)),
        path=path,
        scenarios=scenarios,
        episodes=_integer(settings, "episodes", 10, 1, path),
        seed_start=_integer(settings, "seed_start", EVAL_SEED_START, 0, path),
        alpha=_number(settings, "alpha", 0.05, path),
        max_episode_steps=_integer(settings, "max_episode_steps", None, 1, path),
        failure_videos=_integer(settings, "failure_videos", 2, 0, path),
        thresholds=thresholds,
    )
    if not 0.0 < suite.alpha < 1.0:
        raise RobotaError(f"{path}: [suite] alpha must lie in (0, 1), got {suite.alpha}")
    return suite


def _expand_matrix(
    matrix: Mapping[str, Any], definitions: dict[str, tuple[str, dict[str, Any]]], path: Path
) -> tuple[Scenario, ...]:
    from robota.sim import TASKS
    from robota.sim.perturbations import PERTURBATIONS, RANDOMIZATION_LEVELS
    from robota.spec import ROBOTS

    tasks = _names(matrix, "tasks", ["pick-place"], TASKS, path)
    robots = _names(matrix, "robots", ["ur5e"], ROBOTS, path)
    levels = _names(matrix, "randomization", ["nominal"], RANDOMIZATION_LEVELS, path)
    known = {name: (name, {}) for name in PERTURBATIONS} | definitions
    perturbations = _names(matrix, "perturbations", ["none"], known, path)

    scenarios = []
    for task, robot, level, perturbation in itertools.product(tasks, robots, levels, perturbations):
        kind, parameters = known[perturbation]
        scenarios.append(
            Scenario(task, robot, level, perturbation, kind, tuple(sorted(parameters.items())))
        )
    return tuple(scenarios)


def _perturbation_definitions(
    tables: Mapping[str, Any], path: Path
) -> dict[str, tuple[str, dict[str, Any]]]:
    from robota.sim.perturbations import make_perturbation

    definitions = {}
    for name, table in tables.items():
        where = f"{path}: [perturbations.{name}]"
        if not isinstance(table, Mapping) or "kind" not in table:
            raise RobotaError(f"{where} must be a table with a `kind`, for example kind = \"latency\"")
        parameters = {key: value for key, value in table.items() if key != "kind"}
        make_perturbation(str(table["kind"]), parameters, where=where)
        definitions[name] = (str(table["kind"]), parameters)
    return definitions


def _thresholds(table: Mapping[str, Any], path: Path) -> Thresholds:
    fields = [field.name for field in dataclasses.fields(Thresholds)]
    _check_keys(table, fields, f"{path}: key in [thresholds]")
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise RobotaError(f"{path}: [thresholds] {key} must be a non-negative number, "
                              f"got {value!r}")
    rate = table.get("min_success_rate")
    if rate is not None and rate > 1:
        raise RobotaError(f"{path}: [thresholds] min_success_rate must lie in [0, 1], got {rate}")
    return Thresholds(**table)


def _check_keys(table: Mapping[str, Any], allowed, kind: str) -> None:
    for key in table:
        if key not in allowed:
            raise UnknownNameError(kind, key, allowed)


def _table(data: Mapping[str, Any], key: str, path: Path) -> Mapping[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, Mapping):
        raise RobotaError(f"{path}: `{key}` must be a table ([{key}]), got {table!r}")
    return table


def _names(table: Mapping[str, Any], key: str, default: list[str], choices, path: Path) -> list[str]:
    names = table.get(key, default)
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise RobotaError(f"{path}: [matrix] {key} must be a non-empty list of names, got {names!r}")
    for name in names:
        if name not in choices:
            raise UnknownNameError(f"{path}: [matrix] {key} entry", str(name), choices)
    if len(set(names)) != len(names):
        raise RobotaError(f"{path}: [matrix] {key} lists a name twice: {names}")
    return list(names)


def _integer(table: Mapping[str, Any], key: str, default, minimum: int, path: Path):
    value = table.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RobotaError(f"{path}: [suite] {key} must be an integer of at least {minimum}, "
                          f"got {value!r}")
    return value


def _number(table: Mapping[str, Any], key: str, default: float, path: Path) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RobotaError(f"{path}: [suite] {key} must be a number, got {value!r}")
    return float(value)
