"""Vector environments of the pick-place twin, rendering in spawned worker processes."""

from __future__ import annotations

import numpy as np
import pytest

from robota.errors import RobotaError, UnknownNameError
from robota.sim import make_env
from robota.sim.pick_place import ALL_INSTRUCTIONS
from robota.sim.vector import make_vector_env
from robota.spec import OBS_IMAGES, OBS_STATE, TASK

# Deadline for worker replies; a worker that hangs fails the test instead of the whole run.
WORKER_DEADLINE_S = 120


@pytest.mark.multiprocess
def test_two_workers_render_after_parent_rendered() -> None:
    # The parent renders first, the case in which forked workers hang.
    parent_env = make_env("pick-place", image_size=(32, 32))
    parent_observation, _ = parent_env.reset(seed=0)
    parent_env.close()
    assert parent_observation[OBS_IMAGES + "overhead"].std() > 5

    vector_env = make_vector_env("pick-place", 2, image_size=(32, 32))
    try:
        vector_env.reset_async(seed=[0, 1])
        observations, _ = vector_env.reset_wait(timeout=WORKER_DEADLINE_S)
        hold = np.concatenate(
            [observations[OBS_STATE][:, :6], np.zeros((2, 1), dtype=np.float32)], axis=1
        )
        for _ in range(2):
            vector_env.step_async(hold)
            observations, _, terminated, truncated, _ = vector_env.step_wait(
                timeout=WORKER_DEADLINE_S
            )
    except BaseException:
        vector_env.close(terminate=True)
        raise
    vector_env.close()

    overhead = observations[OBS_IMAGES + "overhead"]
    assert overhead.shape == (2, 32, 32, 3)
    assert overhead[0].std() > 5
    assert overhead[1].std() > 5
    # Seeds 0 and 1 put the part in different places, so the overhead images differ.
    assert np.abs(overhead[0].astype(int) - overhead[1].astype(int)).max() > 0
    assert all(text in ALL_INSTRUCTIONS for text in observations[TASK])
    assert terminated.tolist() == [False, False]
    assert truncated.tolist() == [False, False]


@pytest.mark.multiprocess
def test_worker_matches_single_env_seed() -> None:
    single_observation, _ = make_env("pick-place", render_images=False).reset(seed=3)
    vector_env = make_vector_env("pick-place", 1, render_images=False)
    try:
        vector_env.reset_async(seed=3)
        observations, _ = vector_env.reset_wait(timeout=WORKER_DEADLINE_S)
    finally:
        vector_env.close(terminate=True)

    np.testing.assert_array_equal(observations[OBS_STATE][0], single_observation[OBS_STATE])
    assert observations[TASK][0] == single_observation[TASK]


def test_vector_env_rejects_fork_and_zero_envs() -> None:
    with pytest.raises(UnknownNameError, match="spawn"):
        make_vector_env("pick-place", 2, context="fork")
    with pytest.raises(RobotaError, match="at least 1"):
        make_vector_env("pick-place", 0)
