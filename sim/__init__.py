"""MuJoCo twins of factory cells, their tasks, scripted experts and rollouts.

Importing this package registers every task's gymnasium environment (for example
`robota/PickPlace-v0`); `make_env(task)` creates one by task name. The twins need the `sim`
extra: `pip install 'robota[sim]'`.
"""

from __future__ import annotations

import os

from robota.errors import MissingExtraError

# Headless machines have no display for GLFW; MuJoCo reads MUJOCO_GL when it is first imported,
# so this default only helps where robota.sim is imported before mujoco.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"

try:
    import gymnasium  # noqa: F401
    import mujoco  # noqa: F401
except ImportError as error:
    raise MissingExtraError(error.name or "mujoco", "sim") from error

from robota.sim.registry import TASKS, make_env, register_envs

register_envs()

__all__ = ["TASKS", "make_env", "register_envs"]
