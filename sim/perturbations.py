"""Perturbations and randomisation levels for regression suites, as gymnasium wrappers.

Every perturbation leaves the task's own code untouched. Sensor noise and latency wrap the
observations. A lighting shift and an unseen part colour edit the compiled model once, when the
wrapper is made. The `wide` randomisation level edits the part's mass and friction at each
reset. All random draws come from the episode's seed, so a scenario replays exactly.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

from robota.errors import RobotaError, UnknownNameError
from robota.spec import OBS_PART_POSE, OBS_STATE, OBS_VELOCITY, OBS_WRENCH

# Salts keep each wrapper's random stream apart from the task's own draws of the same seed.
_NOISE_SALT = 0x5E15
_PHYSICS_SALT = 0x9A75


@dataclasses.dataclass(frozen=True)
class SensorNoise:
    """Extra zero-mean Gaussian noise on the proprioceptive and vision observations.

    Attributes:
        state_std_rad: Standard deviation on joint positions (the gripper opening gets it in m).
        velocity_std_rad_s: Standard deviation on joint velocities.
        wrench_std_n: Standard deviation on the wrist force and torque (N and N*m).
        part_pose_std_m: Standard deviation on the reported part x and y, on top of the twin's
            own vision noise.
    """

    state_std_rad: float = 0.005
    velocity_std_rad_s: float = 0.02
    wrench_std_n: float = 0.5
    part_pose_std_m: float = 0.003

    def wrap(self, env: gymnasium.Env) -> gymnasium.Env:
        return _SensorNoiseWrapper(env, self)


@dataclasses.dataclass(frozen=True)
class Latency:
    """Observations that reach the policy a fixed number of control steps late.

    Attributes:
        steps: Delay in control steps (0.1 s each in the pick-place twin).
    """

    steps: int = 2

    def wrap(self, env: gymnasium.Env) -> gymnasium.Env:
        return _LatencyWrapper(env, self.steps)


@dataclasses.dataclass(frozen=True)
class LightingShift:
    """Dimmer, tinted light in the cell, for camera-based policies.

    Attributes:
        intensity_scale: Factor on the light's and the headlight's brightness.
        tint_rgb: Factor per colour channel, for example a warm (1.0, 0.85, 0.6).
    """

    intensity_scale: float = 0.6
    tint_rgb: tuple[float, float, float] = (1.0, 0.85, 0.6)

    def wrap(self, env: gymnasium.Env) -> gymnasium.Env:
        model = env.unwrapped.model
        factor = self.intensity_scale * np.asarray(self.tint_rgb, dtype=np.float64)
        model.light_diffuse[:] = model.light_diffuse * factor
        model.light_ambient[:] = model.light_ambient * factor
        model.vis.headlight.ambient[:] = np.asarray(model.vis.headlight.ambient) * factor
        model.vis.headlight.diffuse[:] = np.asarray(model.vis.headlight.diffuse) * factor
        return env


@dataclasses.dataclass(frozen=True)
class PartColour:
    """A part colour that no demonstration showed (the twin's part is orange).

    Attributes:
        rgba: Red, green, blue and alpha, each in [0, 1].
    """

    rgba: tuple[float, float, float, float] = (0.15, 0.35, 0.85, 1.0)

    def wrap(self, env: gymnasium.Env) -> gymnasium.Env:
        unwrapped = env.unwrapped
        unwrapped.model.geom_rgba[unwrapped.index.part_geom] = self.rgba
        return env


@dataclasses.dataclass(frozen=True)
class NoPerturbation:
    """The task as it is."""

    def wrap(self, env: gymnasium.Env) -> gymnasium.Env:
        return env


PERTURBATIONS: dict[str, type] = {
    "none": NoPerturbation,
    "sensor-noise": SensorNoise,
    "latency": Latency,
    "lighting": LightingShift,
    "part-colour": PartColour,
}


def make_perturbation(kind: str, parameters: Mapping[str, Any] | None = None, *, where: str = ""):
    """Build a perturbation of a registered kind from its parameters.

    Args:
        kind: A key of `PERTURBATIONS`, for example `sensor-noise`.
        parameters: Field values of that kind's dataclass; missing fields keep their defaults.
        where: Location for error messages, for example `suite.toml [perturbations.dim]`.

    Raises:
        UnknownNameError: The kind or a parameter name is unknown; the message names the nearest.
        RobotaError: A parameter value is invalid.
    """
    prefix = f"{where} " if where else ""
    if kind not in PERTURBATIONS:
        raise UnknownNameError(f"{prefix}perturbation kind", kind, PERTURBATIONS)
    cls = PERTURBATIONS[kind]
    fields = {field.name: field for field in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, value in dict(parameters or {}).items():
        if name not in fields:
            raise UnknownNameError(f"{prefix}{kind} parameter", name, fields)
        values[name] = tuple(value) if isinstance(value, list) else value
    perturbation = cls(**values)
    _check_values(perturbation, prefix)
    return perturbation


def _check_values(perturbation: Any, prefix: str) -> None:
    for field in dataclasses.fields(perturbation):
        value = getattr(perturbation, field.name)
        default = field.default
        if isinstance(default, tuple):
            if not isinstance(value, tuple) or len(value) != len(default):
                raise RobotaError(
                    f"{prefix}{field.name} must be a list of {len(default)} numbers, got {value!r}"
                )
            numbers = value
        else:
            numbers = (value,)
        for number in numbers:
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
                raise RobotaError(
                    f"{prefix}{field.name} must be a non-negative number, got {value!r}"
                )
    if isinstance(perturbation, Latency) and not isinstance(perturbation.steps, int):
        raise RobotaError(
            f"{prefix}steps must be a whole number of control steps, got {perturbation.steps!r}"
        )
    if isinstance(perturbation, PartColour) and max(perturbation.rgba) > 1:
        raise RobotaError(f"{prefix}rgba values must lie in [0, 1], got {perturbation.rgba!r}")


class _SensorNoiseWrapper(gymnasium.Wrapper):
    def __init__(self, env: gymnasium.Env, noise: SensorNoise):
        super().__init__(env)
        self._noise = noise
        self._rng = np.random.default_rng(_NOISE_SALT)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng([seed, _NOISE_SALT])
        observation, info = self.env.reset(seed=seed, options=options)
        return self._add_noise(observation), info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self._add_noise(observation), reward, terminated, truncated, info

    def _add_noise(self, observation: dict[str, Any]) -> dict[str, Any]:
        noisy = dict(observation)
        noise = self._noise
        for key, std in (
            (OBS_STATE, noise.state_std_rad),
            (OBS_VELOCITY, noise.velocity_std_rad_s),
            (OBS_WRENCH, noise.wrench_std_n),
        ):
            if key in noisy:
                value = np.asarray(noisy[key], dtype=np.float32)
                noisy[key] = value + self._rng.normal(0.0, std, value.shape).astype(np.float32)
        if OBS_PART_POSE in noisy:
            pose = np.array(noisy[OBS_PART_POSE], dtype=np.float32)
            pose[:2] += self._rng.normal(0.0, noise.part_pose_std_m, 2).astype(np.float32)
            noisy[OBS_PART_POSE] = pose
        return noisy


class _LatencyWrapper(gymnasium.Wrapper):
    def __init__(self, env: gymnasium.Env, steps: int):
        super().__init__(env)
        self._steps = steps
        self._buffer: collections.deque[dict[str, Any]] = collections.deque(maxlen=steps + 1)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        # Until `steps` steps have passed, the policy keeps seeing the first observation.
        self._buffer.clear()
        self._buffer.extend([observation] * (self._steps + 1))
        return self._buffer[0], info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._buffer.append(observation)
        return self._buffer[0], reward, terminated, truncated, info


# Randomisation levels. `nominal` keeps the task's own draws (part pose, arm start pose,
# instruction); `wide` adds the part's mass and friction, drawn per episode.
WIDE_PART_MASS_SCALE = (0.5, 2.0)
WIDE_PART_FRICTION_SCALE = (0.5, 1.2)
RANDOMIZATION_LEVELS = ("nominal", "wide")


class WidePhysicsRandomization(gymnasium.Wrapper):
    """Draw the part's mass and sliding friction per episode, then reset the task.

    The draws join the task's own under `info["randomization"]` as `part_mass_scale` and
    `part_friction_scale`.
    """

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        unwrapped = env.unwrapped
        self._part_body = unwrapped.index.part_body
        self._part_geom = unwrapped.index.part_geom
        self._nominal_mass_kg = float(unwrapped.model.body_mass[self._part_body])
        self._nominal_inertia = unwrapped.model.body_inertia[self._part_body].copy()
        self._nominal_friction = float(unwrapped.model.geom_friction[self._part_geom, 0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        rng = np.random.default_rng(_PHYSICS_SALT if seed is None else [seed, _PHYSICS_SALT])
        mass_scale = float(rng.uniform(*WIDE_PART_MASS_SCALE))
        friction_scale = float(rng.uniform(*WIDE_PART_FRICTION_SCALE))
        model = self.env.unwrapped.model
        model.body_mass[self._part_body] = self._nominal_mass_kg * mass_scale
        model.body_inertia[self._part_body] = self._nominal_inertia * mass_scale
        model.geom_friction[self._part_geom, 0] = self._nominal_friction * friction_scale

        observation, info = self.env.reset(seed=seed, options=options)
        randomization = dict(info.get("randomization", {}))
        randomization.update(part_mass_scale=mass_scale, part_friction_scale=friction_scale)
        info["randomization"] = randomization
        return observation, info


def apply_randomization_level(env: gymnasium.Env, level: str) -> gymnasium.Env:
    """Wrap `env` for a randomisation level named in `RANDOMIZATION_LEVELS`."""
    if level not in RANDOMIZATION_LEVELS:
        raise UnknownNameError("randomization level", level, RANDOMIZATION_LEVELS)
    if level == "wide":
        return WidePhysicsRandomization(env)
    return env
