"""The `sort` task: the instruction alone names the target bin."""

from __future__ import annotations

import mujoco
import pytest

import robota.sim
from robota.errors import UnknownNameError
from robota.sim.expert import make_expert
from robota.sim.rollout import run_episode
from robota.sim.sort import TARGET_OF_INSTRUCTION, TARGETS


@pytest.fixture(scope="module")
def env():
    env = robota.sim.make_env("sort", render_images=False)
    yield env
    env.close()


def test_target_option_keeps_scene(env):
    _, red = env.reset(seed=11, options={"target": "red"})
    _, blue = env.reset(seed=11, options={"target": "blue"})
    assert red["target"] == "red"
    assert blue["target"] == "blue"
    for key in ("part_x_m", "part_y_m", "part_yaw_rad", "arm_joint_offsets_rad"):
        assert red["randomization"][key] == blue["randomization"][key]


def test_every_instruction_names_one_target():
    assert set(TARGET_OF_INSTRUCTION.values()) == set(TARGETS)
    for language, texts in robota.sim.make_env("sort", render_images=False).unwrapped.instructions.items():
        targets = {TARGET_OF_INSTRUCTION[text] for text in texts}
        assert targets == set(TARGETS), language


def test_expert_follows_the_instruction(env):
    expert = make_expert("sort", env)
    for target in TARGETS:
        result = run_episode(env, expert, 4, options={"target": target})
        assert result.success
        assert env.unwrapped.bin_holding_part() == target


def test_part_in_other_bin_is_no_success(env):
    env.reset(seed=0, options={"target": "red"})
    unwrapped = env.unwrapped
    adr = unwrapped.index.part_qpos
    unwrapped.data.qpos[adr : adr + 3] = (*unwrapped.bin_centers_m["blue"], 0.031)
    unwrapped.data.qvel[:] = 0.0
    mujoco.mj_step(unwrapped.model, unwrapped.data, nstep=100)
    assert unwrapped.bin_holding_part() == "blue"
    assert not unwrapped.is_success()


def test_unknown_target_suggests_nearest(env):
    with pytest.raises(UnknownNameError, match="blue"):
        env.reset(seed=0, options={"target": "blu"})
