"""Run one episode of any policy in a twin.

A policy here is any object with `reset()` and `__call__(observation) -> action`: a scripted
expert, a torch checkpoint or an ONNX bundle behind the edge runtime. This module never imports
`robota.policies`, so the same loop drives all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import gymnasium
import numpy as np

from robota.spec import TASK


class RolloutPolicy(Protocol):
    """Policy interface that `run_episode` calls."""

    def reset(self) -> None:
        """Forget the previous episode."""

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Return the action for one observation."""


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """Outcome of one episode.

    Attributes:
        seed: Seed passed to `env.reset`.
        success: Whether the last step reported `info["is_success"]`.
        steps: Number of `env.step` calls.
        instruction: The episode's language instruction.
        terminated: Whether the episode ended by reaching a terminal state.
        truncated: Whether the episode ended by the step limit.
        randomization: Every random draw of the episode's reset, from `info["randomization"]`.
    """

    seed: int
    success: bool
    steps: int
    instruction: str
    terminated: bool
    truncated: bool
    randomization: dict[str, Any] = dataclasses.field(default_factory=dict)


def run_episode(
    env: gymnasium.Env,
    policy: RolloutPolicy,
    seed: int,
    *,
    options: Mapping[str, Any] | None = None,
    on_step: Callable[[Mapping[str, Any], np.ndarray], None] | None = None,
) -> EpisodeResult:
    """Reset `env` with `seed` and step `policy` until the episode terminates or is truncated.

    Args:
        env: A gymnasium environment whose `info` carries `is_success`.
        policy: Object with `reset()` and `__call__(observation) -> action`.
        seed: Seed of the episode.
        options: Passed to `env.reset`, for example `{"language": "de"}`.
        on_step: Called with each observation and the action taken from it, before the step;
            a recorder uses it to write dataset frames.

    Returns:
        The episode's seed, success, length, instruction and how it ended.
    """
    observation, info = env.reset(seed=seed, options=dict(options) if options else None)
    instruction = str(observation.get(TASK, info.get("instruction", "")))
    randomization = dict(info.get("randomization", {}))
    policy.reset()

    steps = 0
    terminated = truncated = False
    while not (terminated or truncated):
        action = np.asarray(policy(observation))
        if on_step is not None:
            on_step(observation, action)
        observation, _, terminated, truncated, info = env.step(action)
        steps += 1

    return EpisodeResult(
        seed=seed,
        success=bool(info.get("is_success", False)),
        steps=steps,
        instruction=instruction,
        terminated=bool(terminated),
        truncated=bool(truncated),
        randomization=randomization,
    )
