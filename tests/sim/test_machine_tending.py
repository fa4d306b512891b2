"""The `machine-tending` twin: manual, door physics, success criterion and its scripted expert."""

from __future__ import annotations

import gymnasium
import mujoco
import numpy as np
import pytest

import robota.sim
from robota.sim.machine_tending import (
    DOOR_START_RANGE_M,
    DOOR_TRAVEL_M,
    INSTRUCTIONS,
    NEST_FLOOR_TOP_M,
    MachineTendingEnv,
)
from robota.sim.machine_tending_expert import MachineTendingExpert, Phase
from robota.sim.expert import make_expert
from robota.sim.rollout import run_episode
from robota.spec import INSTRUCTION_MAX_BYTES, OBS_STATE

SEATED_Z_M = NEST_FLOOR_TOP_M + 0.0201


@pytest.fixture(scope="module")
def env():
    env = robota.sim.make_env("machine-tending", render_images=False)
    yield env
    env.close()


def hold_action(observation) -> np.ndarray:
    """Action that keeps the arm where it is with the gripper open."""
    return np.r_[observation[OBS_STATE][:-1], 0.0].astype(np.float32)


def set_scene(env, part_position, door_opening_m: float) -> None:
    """Put the part at rest at `part_position` and the door at `door_opening_m`."""
    unwrapped = env.unwrapped
    qpos, qvel = unwrapped.index.part_qpos, unwrapped.index.part_qvel
    unwrapped.data.qpos[qpos : qpos + 7] = (*part_position, 1.0, 0.0, 0.0, 0.0)
    unwrapped.data.qvel[qvel : qvel + 6] = 0.0
    unwrapped.data.qpos[unwrapped.door_qpos] = door_opening_m
    unwrapped.data.qvel[unwrapped.door_qvel] = 0.0
    mujoco.mj_forward(unwrapped.model, unwrapped.data)


def test_manual_has_tables_and_draws():
    manual = MachineTendingEnv.__doc__
    assert "robota/MachineTending-v0" in manual
    assert "`observation.part_pose`" in manual
    assert "| `friction_scale` | U(0.7, 1.3) |" in manual
    assert "x ~ U(0.35, 0.55) m" in manual
    assert "start opening ~ U(0, 0.01) m" in manual
    assert "`door_start_opening_m`" in manual
    assert "- the door is open by less than 5 mm." in manual
    assert "## Version history" in manual


def test_registered_under_gymnasium_id():
    env = gymnasium.make("robota/MachineTending-v0", render_images=False)
    assert isinstance(env.unwrapped, MachineTendingEnv)
    assert env.unwrapped.max_episode_steps == 200
    env.close()


def test_instructions_fit_and_cover_six_languages():
    assert set(INSTRUCTIONS) == {"en", "de", "fr", "es", "it", "pl"}
    for texts in INSTRUCTIONS.values():
        for text in texts:
            assert len(text.encode("utf-8")) <= INSTRUCTION_MAX_BYTES, text


def test_reset_records_draws_and_sets_door(env):
    observation, info = env.reset(seed=4)
    draws = info["randomization"]
    assert set(draws) == {
        "part_x_m",
        "part_y_m",
        "part_yaw_rad",
        "door_start_opening_m",
        "arm_joint_offsets_rad",
    }
    assert DOOR_START_RANGE_M[0] <= draws["door_start_opening_m"] <= DOOR_START_RANGE_M[1]
    assert env.unwrapped.door_opening_m() == draws["door_start_opening_m"]
    assert abs(observation["observation.part_pose"][0] - draws["part_x_m"]) < 0.01
    _, same_info = env.reset(seed=4)
    assert same_info["randomization"] == draws


def test_door_stays_put_when_untouched(env):
    observation, _ = env.reset(seed=0)
    set_scene(env, (0.45, -0.15, 0.02), 0.09)
    for _ in range(10):
        observation, *_ = env.step(hold_action(observation))
    assert env.unwrapped.door_opening_m() == pytest.approx(0.09, abs=1e-4)


def test_door_stops_at_its_travel(env):
    env.reset(seed=0)
    unwrapped = env.unwrapped
    set_scene(env, (0.45, -0.15, 0.02), 0.15)
    # Unstopped, the damping would let it coast about 0.07 m further.
    unwrapped.data.qvel[unwrapped.door_qvel] = 2.0
    for _ in range(200):
        mujoco.mj_step(unwrapped.model, unwrapped.data)
    assert unwrapped.door_opening_m() == pytest.approx(DOOR_TRAVEL_M, abs=0.002)


def test_part_in_nest_with_door_closed_succeeds(env):
    observation, _ = env.reset(seed=0)
    set_scene(env, (*env.unwrapped.nest_center_m, SEATED_Z_M), 0.0)
    observation, reward, terminated, truncated, info = env.step(hold_action(observation))
    assert info["is_success"]
    assert terminated
    assert reward == 1.0


@pytest.mark.parametrize(
    ("part_offset_m", "door_opening_m"),
    [
        ((0.0, 0.0, 0.0), 0.006),  # door ajar past the 5 mm tolerance
        ((0.0, 0.0, 0.0), DOOR_TRAVEL_M),  # door open
        ((0.035, 0.0, 0.006), 0.0),  # part on the nest's rim
        ((0.0, 0.0, 0.05), 0.0),  # part held above the nest
    ],
)
def test_failing_cases_are_not_success(env, part_offset_m, door_opening_m):
    env.reset(seed=0)
    center = np.r_[env.unwrapped.nest_center_m, SEATED_Z_M]
    set_scene(env, center + part_offset_m, door_opening_m)
    assert not env.unwrapped.is_success()


def test_part_on_table_fails(env):
    observation, _ = env.reset(seed=0)
    set_scene(env, (0.45, -0.15, 0.02), 0.0)
    observation, reward, terminated, truncated, info = env.step(hold_action(observation))
    assert not info["is_success"]
    assert not terminated
    assert reward == 0.0


@pytest.mark.parametrize("robot", ["ur5e", "panda"])
def test_expert_succeeds_on_10_seeds(robot):
    env = robota.sim.make_env("machine-tending", robot=robot, render_images=False)
    expert = make_expert("machine-tending", env)
    results = [run_episode(env, expert, seed) for seed in range(10)]
    env.close()
    assert isinstance(expert, MachineTendingExpert)
    assert sum(r.success for r in results) >= 9, [r for r in results if not r.success]
    assert all(r.steps <= 130 for r in results if r.success)


def test_expert_opens_door_before_placing(env):
    expert = MachineTendingExpert(env)
    door_when_lowering = []
    phases = []

    def record(observation, action):
        phases.append(expert.phase)
        if expert.phase == Phase.LOWER and not door_when_lowering:
            door_when_lowering.append(env.unwrapped.door_opening_m())

    result = run_episode(env, expert, 3, on_step=record)
    assert result.success
    assert phases == sorted(phases)
    assert door_when_lowering[0] > DOOR_TRAVEL_M - 0.01
    assert env.unwrapped.door_opening_m() < 0.005
