"""Perturbation wrappers and randomisation levels on the pick-place twin, and episode metrics."""

from __future__ import annotations

import numpy as np
import pytest

import robota.sim
from robota.errors import RobotaError, UnknownNameError
from robota.sim.robots import UR5E_HOME_QPOS_RAD
from robota.sim.expert import PickPlaceExpert
from robota.sim.perturbations import apply_randomization_level, make_perturbation
from robota.sim.rollout import run_episode
from robota.spec import OBS_IMAGES, OBS_PART_POSE, OBS_STATE
from robota.suite_metrics import EpisodeMetrics, encode_gif

HOLD = np.r_[UR5E_HOME_QPOS_RAD, 0.0].astype(np.float32)


@pytest.fixture
def env():
    env = robota.sim.make_env("pick-place", image_size=(24, 24), max_episode_steps=40)
    yield env
    env.close()


def test_latency_delays_observations(env):
    delayed = make_perturbation("latency", {"steps": 2}).wrap(env)
    first, _ = delayed.reset(seed=3)
    seen = [first]
    for _ in range(4):
        seen.append(delayed.step(HOLD)[0])
    clean = robota.sim.make_env("pick-place", image_size=(24, 24))
    truth = [clean.reset(seed=3)[0]]
    for _ in range(4):
        truth.append(clean.step(HOLD)[0])
    clean.close()
    # Steps 0..2 still show the first observation, then each lags two steps behind.
    for step in range(3):
        np.testing.assert_array_equal(seen[step][OBS_STATE], truth[0][OBS_STATE])
    np.testing.assert_array_equal(seen[4][OBS_STATE], truth[2][OBS_STATE])


def test_sensor_noise_repeats_per_seed(env):
    noisy = make_perturbation("sensor-noise", {"state_std_rad": 0.01}).wrap(env)
    first = noisy.reset(seed=5)[0][OBS_STATE]
    again = noisy.reset(seed=5)[0][OBS_STATE]
    other = noisy.reset(seed=6)[0][OBS_STATE]
    clean = env.reset(seed=5)[0][OBS_STATE]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, clean, atol=1e-4)
    assert np.abs(first - clean).max() < 0.06
    assert not np.array_equal(first[:6] - clean[:6], other[:6] - env.reset(seed=6)[0][OBS_STATE][:6])


def test_lighting_darkens_images(env):
    bright = env.reset(seed=1)[0][OBS_IMAGES + "overhead"].astype(float).mean()
    make_perturbation("lighting", {"intensity_scale": 0.5}).wrap(env)
    dim = env.reset(seed=1)[0][OBS_IMAGES + "overhead"].astype(float).mean()
    assert dim < 0.8 * bright


def test_part_colour_changes_geom(env):
    make_perturbation("part-colour", {"rgba": [0.0, 0.0, 1.0, 1.0]}).wrap(env)
    index = env.unwrapped.index
    np.testing.assert_array_equal(env.unwrapped.model.geom_rgba[index.part_geom], [0, 0, 1, 1])


def test_wide_level_draws_part_physics(env):
    wide = apply_randomization_level(env, "wide")
    _, info = wide.reset(seed=11)
    draws = info["randomization"]
    assert {"part_x_m", "part_mass_scale", "part_friction_scale"} <= set(draws)
    model = env.unwrapped.model
    mass = model.body_mass[env.unwrapped.index.part_body]
    assert mass == pytest.approx(0.1 * draws["part_mass_scale"])
    _, again = wide.reset(seed=11)
    assert again["randomization"] == draws


def test_unknown_parameter_suggests(env):
    with pytest.raises(UnknownNameError, match="Did you mean 'intensity_scale'"):
        make_perturbation("lighting", {"intensity": 0.5})
    with pytest.raises(RobotaError, match="non-negative"):
        make_perturbation("sensor-noise", {"wrench_std_n": -1.0})
    with pytest.raises(UnknownNameError, match="Did you mean 'nominal'"):
        apply_randomization_level(env, "nominl")


def test_part_pose_noise_added(env):
    noisy = make_perturbation("sensor-noise", {"part_pose_std_m": 0.05}).wrap(env)
    observed = noisy.reset(seed=2)[0][OBS_PART_POSE]
    truth = env.unwrapped.index.part_pose_world(env.unwrapped.data)[0][:2]
    assert np.abs(observed[:2] - truth).max() > 0.01


def test_expert_episode_metrics():
    env = robota.sim.make_env("pick-place", image_size=(24, 24))
    metrics = EpisodeMetrics(env)
    result = run_episode(metrics, PickPlaceExpert(env), seed=0)
    summary = metrics.summary()
    env.close()
    assert result.success
    assert summary["time_to_success_s"] == pytest.approx(result.steps / 10)
    assert summary["cell_collisions"] == 0
    assert summary["joint_limit_violations"] == 0
    # Gripping the 0.1 kg part loads the pads; the fingers close with at most 40 N.
    assert 1.0 < summary["max_contact_force_n"] < 200.0
    assert 0.5 < summary["tool_path_length_m"] < 3.0
    assert len(summary["contact_force_trace_n"]) == result.steps
    frames = metrics.frames()
    assert frames.shape[1:] == (24, 24, 3)
    assert encode_gif(frames, 5).startswith(b"GIF8")


def test_metrics_count_limit_violations(env):
    metrics = EpisodeMetrics(env)
    metrics.reset(seed=0)
    beyond = HOLD.copy()
    beyond[2] = 4.0  # elbow target beyond its +-pi limit, and a jump far over pi rad/s
    metrics.step(HOLD)
    metrics.step(beyond)
    summary = metrics.summary()
    assert summary["joint_limit_violations"] == 1
    assert summary["velocity_limit_violations"] >= 1


def test_metrics_count_table_collision(env):
    metrics = EpisodeMetrics(env)
    metrics.reset(seed=0)
    unwrapped = env.unwrapped
    # Push the tool straight down into the table by lowering the shoulder for a few steps.
    target = HOLD.copy()
    for _ in range(15):
        target[1] += 0.2
        metrics.step(target)
    summary = metrics.summary()
    assert summary["cell_collisions"] >= 1
    assert summary["cell_contact_steps"] >= summary["cell_collisions"]
    assert unwrapped.data.site_xpos[unwrapped.index.tcp_site][2] < 0.05
