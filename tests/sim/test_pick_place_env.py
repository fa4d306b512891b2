"""The `pick-place` twin as a gymnasium environment: conformance, determinism, physics."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robota.sim
from robota.errors import SpecError, UnknownNameError
from robota.sim.pick_place import (
    ALL_INSTRUCTIONS,
    BIN_FLOOR_TOP_M,
    INSTRUCTIONS,
    PickPlaceEnv,
)
from robota.sim.twin import INSTRUCTION_CHARSET
from robota.spec import (
    ACTION,
    OBS_STATE,
    OBS_WRENCH,
    TASK,
    UR5E,
    format_feature_table,
    make_arm_spec,
)

SMALL_IMAGES = (24, 32)


@pytest.fixture
def physics_env():
    env = robota.sim.make_env("pick-place", render_images=False)
    yield env
    env.close()


def hold_action(observation) -> np.ndarray:
    """Action that keeps the arm where it is with the gripper open."""
    return np.r_[observation[OBS_STATE][:6], 0.0].astype(np.float32)


# The checker's advice on unbounded and unnormalised spaces does not apply: joint targets are in
# radians, and velocities, wrenches and part poses have no fixed bounds.
@pytest.mark.filterwarnings("ignore:.*(Box action spaces|Box observation space):UserWarning")
def test_env_checker_passes():
    env = robota.sim.make_env("pick-place", image_size=SMALL_IMAGES, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_registered_under_gymnasium_id():
    env = gymnasium.make("robota/PickPlace-v0", render_images=False)
    assert isinstance(env.unwrapped, PickPlaceEnv)
    assert robota.sim.TASKS["pick-place"] == "robota/PickPlace-v0"
    env.close()


def test_observation_keys_match_spec():
    env = robota.sim.make_env("pick-place", image_size=SMALL_IMAGES)
    expected = make_arm_spec(UR5E, 10, {"wrist": SMALL_IMAGES, "overhead": SMALL_IMAGES})
    spec = env.unwrapped.feature_spec
    observation, _ = env.reset(seed=0)
    assert spec == expected
    assert set(env.observation_space.spaces) == set(spec.features) - {ACTION}
    assert set(observation) == set(spec.features) - {ACTION}
    spec.validate_observation(observation)
    assert observation["observation.images.wrist"].shape == (24, 32, 3)
    assert observation["observation.images.wrist"].dtype == np.uint8
    assert observation["observation.images.overhead"].any()
    env.close()


def test_manual_lists_every_feature():
    for key in make_arm_spec(UR5E, 10, {"wrist": (96, 96), "overhead": (96, 96)}).features:
        assert f"`{key}`" in PickPlaceEnv.__doc__


def test_twin_doc_tables_match_spec():
    doc = Path(__file__).resolve().parents[2] / "docs" / "twin.md"
    spec = make_arm_spec(UR5E, 10, {"wrist": (96, 96), "overhead": (96, 96)})
    observation_keys = [key for key in spec.features if key != ACTION]
    text = doc.read_text(encoding="utf-8")
    assert format_feature_table(spec, observation_keys) in text
    assert format_feature_table(spec, [ACTION]) in text


def test_make_env_suggests_nearest_task():
    with pytest.raises(UnknownNameError, match="Did you mean 'pick-place'"):
        robota.sim.make_env("pick_place")


def test_make_env_passes_max_episode_steps(physics_env):
    env = robota.sim.make_env("pick-place", render_images=False, max_episode_steps=3)
    observation, _ = env.reset(seed=0)
    for step in range(3):
        observation, _, terminated, truncated, _ = env.step(hold_action(observation))
    assert env.unwrapped.max_episode_steps == 3
    assert not terminated
    assert truncated
    env.close()


def test_renderer_created_lazily():
    env = robota.sim.make_env("pick-place", image_size=SMALL_IMAGES)
    assert env.unwrapped._renderer is None
    env.reset(seed=0)
    assert env.unwrapped._renderer is not None
    env.close()


def test_render_images_false_gives_zeros(physics_env):
    observation, _ = physics_env.reset(seed=0)
    assert not observation["observation.images.wrist"].any()
    assert physics_env.unwrapped._renderer is None


def test_same_seed_same_rollout():
    actions = np.random.default_rng(7).uniform(-0.05, 0.05, (20, 7))
    rollouts = []
    for _ in range(2):
        env = robota.sim.make_env("pick-place", image_size=SMALL_IMAGES)
        observation, _ = env.reset(seed=123)
        frames = [observation]
        for offset in actions:
            action = np.r_[observation[OBS_STATE][:6] + offset[:6], abs(offset[6]) * 10]
            observation, *_ = env.step(action.astype(np.float32))
            frames.append(observation)
        rollouts.append(frames)
        env.close()
    for first, second in zip(*rollouts):
        for key in first:
            if key == TASK:
                assert first[key] == second[key]
            else:
                assert np.array_equal(first[key], second[key]), key


def test_instruction_language_option(physics_env):
    for seed in range(8):
        observation, info = physics_env.reset(seed=seed, options={"language": "de"})
        assert observation[TASK] in INSTRUCTIONS["de"]
        assert info["instruction"] == observation[TASK]
    seen = {physics_env.reset(seed=seed)[0][TASK] for seed in range(40)}
    assert seen & set(INSTRUCTIONS["en"])
    assert seen & set(INSTRUCTIONS["de"])


def test_reset_info_records_draws(physics_env):
    observation, info = physics_env.reset(seed=4)
    draws = info["randomization"]
    assert 0.35 <= draws["part_x_m"] <= 0.55
    assert -0.25 <= draws["part_y_m"] <= -0.05
    assert abs(draws["part_yaw_rad"]) <= np.pi / 4
    assert len(draws["arm_joint_offsets_rad"]) == 6
    reported = observation["observation.part_pose"]
    assert abs(reported[0] - draws["part_x_m"]) < 0.01
    assert abs(reported[1] - draws["part_y_m"]) < 0.01


def test_unknown_language_rejected(physics_env):
    with pytest.raises(UnknownNameError, match="Valid names: de, en, es, fr, it, pl"):
        physics_env.reset(seed=0, options={"language": "sv"})


def test_unknown_reset_option_rejected(physics_env):
    with pytest.raises(UnknownNameError, match="language"):
        physics_env.reset(seed=0, options={"langauge": "de"})


def test_charset_covers_instructions():
    for text in ALL_INSTRUCTIONS:
        assert set(text) <= INSTRUCTION_CHARSET, text


def test_invalid_action_raises_spec_error(physics_env):
    physics_env.reset(seed=0)
    with pytest.raises(SpecError, match="7 finite values"):
        physics_env.step(np.zeros(6, dtype=np.float32))
    with pytest.raises(SpecError, match="7 finite values"):
        physics_env.step(np.full(7, np.nan, dtype=np.float32))


def test_invalid_image_size_raises_spec_error():
    with pytest.raises(SpecError, match="480 x 640"):
        PickPlaceEnv(image_size=(1000, 96))


def test_target_step_limited_by_velocity(physics_env):
    observation, _ = physics_env.reset(seed=0)
    start = observation[OBS_STATE][:6].astype(float)
    action = np.r_[start + 1.0, 0.0].astype(np.float32)
    physics_env.step(action)
    step_rad = physics_env.unwrapped._arm_target_rad - start
    np.testing.assert_allclose(step_rad, np.pi / 10, atol=1e-6)


@pytest.mark.parametrize(("command", "expected_opening_m"), [(0.3, 0.085), (0.7, 0.0)])
def test_gripper_command_is_binary(physics_env, command, expected_opening_m):
    observation, _ = physics_env.reset(seed=0)
    for _ in range(5):
        action = np.r_[observation[OBS_STATE][:6], command].astype(np.float32)
        observation, *_ = physics_env.step(action)
    assert observation[OBS_STATE][6] == pytest.approx(expected_opening_m, abs=0.002)


def test_arm_holds_pose_without_sag(physics_env):
    observation, _ = physics_env.reset(seed=0)
    target = observation[OBS_STATE][:6].copy()
    for _ in range(10):
        observation, *_ = physics_env.step(np.r_[target, 0.0].astype(np.float32))
    error_rad = np.abs(observation[OBS_STATE][:6] - target)
    assert error_rad.max() < 1e-3


def test_wrist_sensor_weighs_gripper(physics_env):
    observation, _ = physics_env.reset(seed=0)
    for _ in range(3):
        observation, *_ = physics_env.step(hold_action(observation))
    model = physics_env.unwrapped.model
    gripper_mass_kg = sum(
        model.body_mass[model.body(name).id] for name in ("gripper/gripper", "gripper/finger_left", "gripper/finger_right")
    )
    force_n = np.linalg.norm(observation[OBS_WRENCH][:3])
    assert force_n == pytest.approx(gripper_mass_kg * 9.81, rel=0.05)


def test_part_at_rest_in_bin_succeeds(physics_env):
    observation, _ = physics_env.reset(seed=0)
    env = physics_env.unwrapped
    adr = env.index.part_qpos
    env.data.qpos[adr : adr + 3] = (*env.bin_center_m, BIN_FLOOR_TOP_M + 0.021)
    mujoco.mj_forward(env.model, env.data)
    terminated = False
    for _ in range(5):
        observation, reward, terminated, truncated, info = physics_env.step(hold_action(observation))
        if terminated:
            break
    assert terminated
    assert info["is_success"]
    assert reward == 1.0


def test_part_on_table_is_not_success(physics_env):
    observation, _ = physics_env.reset(seed=0)
    observation, reward, terminated, _, info = physics_env.step(hold_action(observation))
    assert not terminated
    assert not info["is_success"]
    assert reward == 0.0


def make_tiny_env() -> gymnasium.Env:
    return robota.sim.make_env("pick-place", image_size=(16, 16))


@pytest.mark.multiprocess
def test_async_vector_env_renders_in_workers():
    # Spawn, not fork: earlier tests rendered in this process, and workers forked from a process
    # that has rendered hang on reset (Mesa EGL, mujoco 4.0.1).
    envs = gymnasium.vector.AsyncVectorEnv([make_tiny_env] * 2, context="spawn")
    try:
        observations, _ = envs.reset(seed=[0, 1])
        assert observations["observation.images.overhead"].shape == (2, 16, 16, 3)
        assert observations["observation.images.overhead"].any()
    finally:
        envs.close()
