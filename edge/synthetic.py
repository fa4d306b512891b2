"""Synthesise plausible observations from a spec, for benchmarks and parity checks without data.

Values stay inside the robot's limits and in the units the spec states, so a model gets inputs
of the right scale. They are not recorded data: a parity check on them shows the graph is
exported correctly, not that it behaves well on the robot's real observation distribution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robota.spec import (
    ACTION,
    OBS_PART_POSE,
    OBS_STATE,
    OBS_VELOCITY,
    OBS_WRENCH,
    TASK,
    Spec,
)

SYNTHETIC_INSTRUCTIONS = (
    "pick up the part and place it in the bin",
    "insert the peg into the hole",
    "nimm das Teil und lege es in die Kiste",
)


def synthesize_observations(spec: Spec, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Draw `n` observations that `spec.validate_observation` accepts.

    Args:
        spec: Feature spec to draw for.
        n: Number of observations.
        seed: Seed of the numpy generator, so the same call returns the same observations.

    Returns:
        Observations keyed by feature key; images are uint8 `(height, width, 3)`, vectors are
        float32, and `task` is an instruction string.
    """
    rng = np.random.default_rng(seed)
    return [_draw_observation(spec, rng, index) for index in range(n)]


def _draw_observation(spec: Spec, rng: np.random.Generator, index: int) -> dict[str, Any]:
    robot = spec.robot
    observation: dict[str, Any] = {}
    for key, feature in spec.features.items():
        if key == ACTION:
            continue
        if feature.is_image:
            observation[key] = rng.integers(0, 256, size=feature.shape, dtype=np.uint8)
        elif key == OBS_STATE and feature.shape == (robot.action_dim,):
            joints = rng.uniform(robot.lower_rad, robot.upper_rad)
            gripper = rng.uniform(0.0, robot.gripper_max_opening_m)
            observation[key] = np.append(joints, gripper).astype(np.float32)
        elif key == OBS_VELOCITY and feature.shape == (robot.num_joints,):
            limit = np.asarray(robot.velocity_limit_rad_s)
            observation[key] = rng.uniform(-limit, limit).astype(np.float32)
        elif key == OBS_WRENCH:
            # Forces of tens of newtons and torques of a few newton-metres, as in light assembly.
            scale = np.array([20.0, 20.0, 20.0, 2.0, 2.0, 2.0])[: feature.shape[0]]
            observation[key] = (rng.normal(size=feature.shape) * scale).astype(np.float32)
        elif key == OBS_PART_POSE:
            # x and y in metres on a table in front of the base, yaw in rad.
            low = np.array([0.3, -0.3, -np.pi])[: feature.shape[0]]
            high = np.array([0.7, 0.3, np.pi])[: feature.shape[0]]
            observation[key] = rng.uniform(low, high).astype(np.float32)
        elif key == TASK or feature.dtype == "string":
            observation[key] = SYNTHETIC_INSTRUCTIONS[index % len(SYNTHETIC_INSTRUCTIONS)]
        elif feature.dtype == "int64":
            observation[key] = rng.integers(0, 2, size=feature.shape, dtype=np.int64)
        elif feature.dtype == "bool":
            observation[key] = rng.integers(0, 2, size=feature.shape).astype(bool)
        else:
            observation[key] = rng.normal(size=feature.shape).astype(np.float32)
    return observation


def synthesize_stats(spec: Spec, seed: int = 0) -> dict[str, dict[str, list]]:
    """Draw dataset-like statistics in stats.json form, image statistics per channel on [0, 1].

    For building a policy with random weights (benchmarks, export checks) without a dataset.
    """
    rng = np.random.default_rng(seed)
    stats = {}
    for key in spec.image_keys:
        stats[key] = {
            "mean": rng.uniform(0.3, 0.6, (3, 1, 1)).tolist(),
            "std": rng.uniform(0.1, 0.3, (3, 1, 1)).tolist(),
            "min": np.zeros((3, 1, 1)).tolist(),
            "max": np.ones((3, 1, 1)).tolist(),
        }
    for key in [*spec.vector_keys, ACTION]:
        dim = spec.features[key].shape[0]
        mean, std = rng.normal(0.0, 0.5, dim), rng.uniform(0.2, 1.0, dim)
        stats[key] = {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "min": (mean - 3 * std).tolist(),
            "max": (mean + 3 * std).tolist(),
            "q01": (mean - 2 * std).tolist(),
            "q99": (mean + 2 * std).tolist(),
        }
    return stats
