"""Task registry: task names, their gymnasium ids and `make_env`."""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium

from robota.errors import UnknownNameError

# Task name -> gymnasium environment id.
TASKS: dict[str, str] = {
    "pick-place": "robota/PickPlace-v0",
    "peg-in-hole": "robota/PegInHole-v0",
    "conveyor": "robota/ConveyorPick-v0",
    "machine-tending": "robota/MachineTending-v0",
    "sort": "robota/Sort-v0",
}

_ENTRY_POINTS: dict[str, str] = {
    "robota/PickPlace-v0": "robota.sim.pick_place:PickPlaceEnv",
    "robota/PegInHole-v0": "robota.sim.peg_in_hole:PegInHoleEnv",
    "robota/ConveyorPick-v0": "robota.sim.conveyor:ConveyorPickEnv",
    "robota/MachineTending-v0": "robota.sim.machine_tending:MachineTendingEnv",
    "robota/Sort-v0": "robota.sim.sort:SortEnv",
}


def register_envs() -> None:
    """Register every task's environment with gymnasium; calling it again changes nothing."""
    for env_id, entry_point in _ENTRY_POINTS.items():
        if env_id not in gymnasium.registry:
            # No TimeLimit wrapper: each environment truncates at its own `max_episode_steps`.
            gymnasium.register(id=env_id, entry_point=entry_point)


def make_env(task: str, **kwargs: Any) -> gymnasium.Env:
    """Create the environment of a registered task.

    Args:
        task: Task name, a key of `TASKS`, for example `pick-place`.
        **kwargs: Constructor arguments of the environment, for example `robot="panda"`,
            `image_size=(96, 96)`, `render_images=False`, `max_episode_steps=80` or
            `domain_randomization=True`.

    Raises:
        UnknownNameError: `task` is not registered; the message suggests the nearest name.
    """
    if task not in TASKS:
        raise UnknownNameError("task", task, TASKS)
    register_envs()
    env_spec = gymnasium.spec(TASKS[task])
    # `gymnasium.make(id, max_episode_steps=...)` would consume that argument for its own
    # TimeLimit wrapper, so every argument travels in the spec's kwargs to the constructor.
    env_spec = dataclasses.replace(env_spec, kwargs={**env_spec.kwargs, **kwargs})
    return gymnasium.make(env_spec)
