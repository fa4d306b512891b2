"""The scripted pick-and-place expert and the rollout loop."""

from __future__ import annotations

import numpy as np
import pytest

import robota.sim
from robota.errors import UnknownNameError
from robota.sim.expert import Phase, PickPlaceExpert, make_expert
from robota.sim.rollout import EpisodeResult, run_episode
from robota.spec import ACTION


@pytest.fixture(scope="module")
def env():
    env = robota.sim.make_env("pick-place", render_images=False)
    yield env
    env.close()


def run_expert(env, seeds) -> list[EpisodeResult]:
    expert = PickPlaceExpert(env)
    return [run_episode(env, expert, seed) for seed in seeds]


def test_expert_succeeds_on_20_seeds(env):
    results = run_expert(env, range(20))
    successes = sum(r.success for r in results)
    assert successes >= 19, [r for r in results if not r.success]
    assert all(r.steps <= 80 for r in results if r.success)


@pytest.mark.slow
def test_expert_succeeds_on_100_seeds(env):
    results = run_expert(env, range(100))
    assert sum(r.success for r in results) >= 95


def test_expert_episode_passes_all_phases(env):
    expert = PickPlaceExpert(env)
    phases = []
    result = run_episode(env, expert, 5, on_step=lambda observation, action: phases.append(expert.phase))
    assert result.success
    assert result.terminated
    assert not result.truncated
    assert set(phases) == set(Phase)
    assert phases == sorted(phases)


def test_make_expert_covers_every_task():
    for task in robota.sim.TASKS:
        task_env = robota.sim.make_env(task, render_images=False)
        assert callable(make_expert(task, task_env))
        task_env.close()


def test_make_expert_suggests_nearest_task(env):
    with pytest.raises(UnknownNameError, match="Did you mean 'pick-place'"):
        make_expert("pick-plaice", env)


def test_expert_action_fits_action_space(env):
    expert = PickPlaceExpert(env)
    observation, _ = env.reset(seed=0)
    expert.reset()
    action = expert(observation)
    assert action.shape == env.unwrapped.feature_spec.features[ACTION].shape
    assert action.dtype == np.float32
    assert env.action_space.contains(action)


def test_expert_is_deterministic(env):
    recorded = []
    for _ in range(2):
        actions = []
        run_episode(env, PickPlaceExpert(env), 11, on_step=lambda o, a: actions.append(a))
        recorded.append(np.stack(actions))
    assert np.array_equal(recorded[0], recorded[1])


def test_run_episode_reports_outcome(env):
    observations = []
    result = run_episode(
        env,
        PickPlaceExpert(env),
        3,
        options={"language": "de"},
        on_step=lambda observation, action: observations.append(observation),
    )
    assert result.seed == 3
    assert result.steps == len(observations)
    assert result.instruction == observations[0]["task"]
    assert "Teil" in result.instruction or "Werkstück" in result.instruction


class HoldStill:
    """Policy that repeats the first observed joint positions with the gripper open."""

    def reset(self) -> None:
        self.target = None

    def __call__(self, observation) -> np.ndarray:
        if self.target is None:
            self.target = np.r_[observation["observation.state"][:6], 0.0].astype(np.float32)
        return self.target


def test_run_episode_truncates_idle_policy():
    env = robota.sim.make_env("pick-place", render_images=False, max_episode_steps=5)
    result = run_episode(env, HoldStill(), 0)
    env.close()
    assert result == EpisodeResult(
        seed=0,
        success=False,
        steps=5,
        instruction=result.instruction,
        terminated=False,
        truncated=True,
        randomization=result.randomization,
    )
    assert set(result.randomization) == {"part_x_m", "part_y_m", "part_yaw_rad", "arm_joint_offsets_rad"}
