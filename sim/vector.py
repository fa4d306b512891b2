"""Vector environments: several copies of a twin stepping in parallel worker processes."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium

from robota.errors import RobotaError, check_choice
from robota.sim.registry import TASKS, make_env

# Start methods that give each worker a fresh process. A forked worker inherits the parent's
# EGL state, and with Mesa EGL and mujoco 4.0.1 it hangs on its first render once the parent
# has rendered, so "fork" is not offered.
START_METHODS = ("spawn", "forkserver")


def make_vector_env(
    task: str = "pick-place",
    num_envs: int = 2,
    *,
    context: str = "spawn",
    **env_kwargs: Any,
) -> gymnasium.vector.AsyncVectorEnv:
    """Create `num_envs` copies of a task's environment, each in its own worker process.

    Each worker builds its environment with `make_env(task, **env_kwargs)` and creates its own
    renderer on its first render, so rendering works in the workers whether or not the parent
    process has rendered. Observations come back batched: images `(num_envs, height, width, 3)`,
    vectors `(num_envs, dim)` and `task` as a tuple of `num_envs` strings. Episodes reset
    automatically in gymnasium 1.x's next-step mode.

    Args:
        task: Task name, a key of `robota.sim.TASKS`.
        num_envs: Number of environments and worker processes.
        context: Start method of the workers, `spawn` or `forkserver`.
        **env_kwargs: Constructor arguments of each environment, for example
            `image_size=(96, 96)` or `render_images=False`.

    Raises:
        UnknownNameError: `task` or `context` is not a valid name.
        RobotaError: `num_envs` is below 1.
    """
    check_choice("task", task, TASKS)
    check_choice("worker start method", context, START_METHODS)
    if num_envs < 1:
        raise RobotaError(f"num_envs must be at least 1, got {num_envs}")

    env_fns = [functools.partial(make_env, task, **env_kwargs) for _ in range(num_envs)]
    # NOTE: with shared memory, gymnasium 1.4.0 returned the `task` Text observation as blank
    # strings, so observations travel through the workers' pipes instead (a 96 x 96 image
    # pair is 55 KB per environment and step).
    return gymnasium.vector.AsyncVectorEnv(env_fns, context=context, shared_memory=False)
