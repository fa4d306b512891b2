"""The `conveyor` twin: manual, belt physics, success and loss, and its scripted expert."""

from __future__ import annotations

import gymnasium
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robota.sim
from robota.errors import RobotaError
from robota.sim.conveyor import (
    BELT_END_Y_M,
    BELT_SPEED_RANGE_M_S,
    BELT_TOP_M,
    INSTRUCTIONS,
    PART_Y_RANGE_M,
    ConveyorPickEnv,
)
from robota.sim.conveyor_expert import ConveyorExpert
from robota.sim.expert import Phase, make_expert
from robota.sim.rollout import run_episode
from robota.spec import INSTRUCTION_MAX_BYTES, OBS_PART_POSE, OBS_STATE

BIN_FLOOR_TOP_M = 0.01


@pytest.fixture(scope="module")
def env():
    env = robota.sim.make_env("conveyor", render_images=False)
    yield env
    env.close()


def hold_action(observation) -> np.ndarray:
    """Action that keeps the arm where it is with the gripper open."""
    return np.r_[observation[OBS_STATE][:-1], 0.0].astype(np.float32)


def place_part(env, position, velocity=(0.0, 0.0, 0.0)) -> None:
    unwrapped = env.unwrapped
    qpos, qvel = unwrapped.index.part_qpos, unwrapped.index.part_qvel
    unwrapped.data.qpos[qpos : qpos + 7] = (*position, 1.0, 0.0, 0.0, 0.0)
    unwrapped.data.qvel[qvel : qvel + 6] = (*velocity, 0.0, 0.0, 0.0)
    mujoco.mj_forward(unwrapped.model, unwrapped.data)


def test_manual_has_tables_and_draws():
    manual = ConveyorPickEnv.__doc__
    assert "robota/ConveyorPick-v0" in manual
    assert "`observation.part_pose`" in manual
    assert "| `friction_scale` | U(0.7, 1.3) |" in manual
    assert "belt speed ~ U(0.03, 0.05) m/s" in manual
    assert "`belt_speed_m_s`" in manual
    assert "## Version history" in manual


def test_instructions_in_six_languages():
    assert set(INSTRUCTIONS) == {"en", "de", "fr", "es", "it", "pl"}
    for texts in INSTRUCTIONS.values():
        for text in texts:
            assert len(text.encode("utf-8")) <= INSTRUCTION_MAX_BYTES, text


# The checker's advice on unbounded and unnormalised spaces does not apply: joint targets are in
# radians, and velocities, wrenches and part poses have no fixed bounds.
@pytest.mark.filterwarnings("ignore:.*(Box action spaces|Box observation space):UserWarning")
def test_env_checker_passes():
    env = gymnasium.make("robota/ConveyorPick-v0", image_size=(16, 16), render_mode="rgb_array")
    assert isinstance(env.unwrapped, ConveyorPickEnv)
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_reset_records_draws(env):
    observation, info = env.reset(seed=4)
    draws = info["randomization"]
    assert BELT_SPEED_RANGE_M_S[0] <= draws["belt_speed_m_s"] <= BELT_SPEED_RANGE_M_S[1]
    assert PART_Y_RANGE_M[0] <= draws["part_y_m"] <= PART_Y_RANGE_M[1]
    assert abs(draws["part_yaw_rad"]) <= np.pi / 4
    assert abs(observation[OBS_PART_POSE][1] - draws["part_y_m"]) < 0.01
    _, same_info = env.reset(seed=4)
    assert same_info["randomization"] == draws


def test_belt_carries_part_at_drawn_speed(env):
    observation, info = env.reset(seed=1)
    speed_m_s = info["randomization"]["belt_speed_m_s"]
    start, _ = env.unwrapped.index.part_pose_world(env.unwrapped.data)
    for _ in range(20):
        observation, *_ = env.step(hold_action(observation))
    end, _ = env.unwrapped.index.part_pose_world(env.unwrapped.data)
    assert end[1] - start[1] == pytest.approx(speed_m_s * 2.0, rel=0.02)
    assert end[0] == pytest.approx(start[0], abs=1e-3)
    assert end[2] == pytest.approx(BELT_TOP_M + 0.02, abs=1e-3)


def test_unpicked_part_falls_off_belt_end(env):
    observation, _ = env.reset(seed=2)
    steps = 0
    terminated = truncated = False
    while not (terminated or truncated):
        observation, reward, terminated, truncated, info = env.step(hold_action(observation))
        steps += 1
    position, _ = env.unwrapped.index.part_pose_world(env.unwrapped.data)
    assert terminated
    assert not truncated
    assert info["part_lost"]
    assert not info["is_success"]
    assert reward == 0.0
    assert steps < env.unwrapped.max_episode_steps
    assert position[1] > BELT_END_Y_M
    assert position[2] < BELT_TOP_M


def test_part_at_rest_in_bin_succeeds(env):
    observation, _ = env.reset(seed=0)
    place_part(env, (*env.unwrapped.bin_center_m, BIN_FLOOR_TOP_M + 0.021))
    terminated = False
    for _ in range(5):
        observation, reward, terminated, truncated, info = env.step(hold_action(observation))
        if terminated:
            break
    assert terminated
    assert info["is_success"]
    assert not info["part_lost"]
    assert reward == 1.0


@pytest.mark.parametrize(
    ("offset_m", "velocity_m_s"),
    [
        ((0.0, 0.0, 0.0), (0.0, 0.0, -0.2)),  # still falling
        ((0.0, 0.0, 0.08), (0.0, 0.0, 0.0)),  # above the wall tops
        ((0.0, -0.15, 0.0), (0.0, 0.0, 0.0)),  # on the table beside the bin
    ],
)
def test_part_near_bin_is_not_success(env, offset_m, velocity_m_s):
    env.reset(seed=0)
    center = np.r_[env.unwrapped.bin_center_m, BIN_FLOOR_TOP_M + 0.021]
    place_part(env, center + offset_m, velocity_m_s)
    assert not env.unwrapped.is_success()


def test_part_on_belt_is_not_success(env):
    observation, _ = env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(hold_action(observation))
    assert not terminated
    assert not info["is_success"]
    assert not info["part_lost"]
    assert reward == 0.0


@pytest.mark.parametrize("robot", ["ur5e", "panda"])
def test_expert_succeeds_on_10_seeds(robot):
    env = robota.sim.make_env("conveyor", robot=robot, render_images=False)
    expert = make_expert("conveyor", env)
    results = [run_episode(env, expert, seed) for seed in range(10)]
    env.close()
    assert isinstance(expert, ConveyorExpert)
    assert sum(r.success for r in results) >= 9, [r for r in results if not r.success]
    assert all(r.steps <= 60 for r in results if r.success)


def test_expert_estimates_belt_speed(env):
    expert = ConveyorExpert(env)
    estimates = []

    def record(observation, action):
        if expert.phase == Phase.CLOSE and not estimates:
            estimates.append(expert.part_velocity_m_s())

    observation, info = env.reset(seed=7)
    result = run_episode(env, expert, 7, on_step=record)
    speed_m_s = info["randomization"]["belt_speed_m_s"]
    assert result.success
    assert estimates[0][1] == pytest.approx(speed_m_s, abs=0.005)
    assert estimates[0][0] == pytest.approx(0.0, abs=0.005)


def test_expert_rejects_other_task_env():
    env = robota.sim.make_env("pick-place", render_images=False)
    with pytest.raises(RobotaError, match=r"make_env\('conveyor'\)"):
        ConveyorExpert(env)
    env.close()
