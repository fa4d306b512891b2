"""TorchPolicyRunner: action queue, re-planning, temporal ensembling and checkpoint loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robota.errors import SpecError
from robota.policies import TorchPolicyRunner, save_checkpoint

from policy_helpers import TINY_ACT


class _CountingPolicy:
    """Wraps a policy and counts its chunk predictions."""

    def __init__(self, policy):
        self.policy = policy
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def to(self, device):
        return self

    def eval(self):
        return self

    def predict_action_chunk(self, inputs):
        self.calls += 1
        return self.policy.predict_action_chunk(inputs)


def test_replans_every_n_action_steps(tiny_policy, observations):
    counting = _CountingPolicy(tiny_policy)
    runner = TorchPolicyRunner(counting, n_action_steps=3)

    actions = [runner(observation) for observation in observations[:7]]

    assert counting.calls == 3  # Steps 0, 3 and 6 plan.
    assert all(action.shape == (7,) for action in actions)


def test_actions_come_from_chunk_in_order(tiny_policy, observations):
    runner = TorchPolicyRunner(tiny_policy, n_action_steps=3)
    chunk = runner.predict_action_chunk(observations[0])

    actions = [runner(observation) for observation in observations[:3]]

    np.testing.assert_allclose(np.stack(actions), chunk[:3], rtol=0, atol=1e-6)


def test_reset_clears_queue(tiny_policy, observations):
    counting = _CountingPolicy(tiny_policy)
    runner = TorchPolicyRunner(counting, n_action_steps=4)
    runner(observations[0])

    runner.reset()
    runner(observations[1])

    assert counting.calls == 2


def test_chunk_shape(tiny_policy, observations):
    chunk = TorchPolicyRunner(tiny_policy).predict_action_chunk(observations[0])

    assert chunk.shape == (4, 7)
    assert chunk.dtype == np.float32


def test_default_steps_from_config(tiny_policy):
    assert TorchPolicyRunner(tiny_policy).n_action_steps == tiny_policy.config.n_action_steps


@pytest.mark.parametrize("n_action_steps", [0, 5])
def test_rejects_steps_out_of_range(tiny_policy, n_action_steps):
    with pytest.raises(SpecError, match="between 1 and the chunk size 4"):
        TorchPolicyRunner(tiny_policy, n_action_steps=n_action_steps)


def test_missing_feature_is_named(tiny_policy, observations):
    observation = dict(observations[0])
    del observation["observation.part_pose"]

    with pytest.raises(SpecError, match="observation.part_pose"):
        TorchPolicyRunner(tiny_policy)(observation)


def test_from_checkpoint_matches(tmp_path, tiny_policy, observations):
    path = save_checkpoint(tmp_path / "ckpt", tiny_policy)

    loaded = TorchPolicyRunner.from_checkpoint(path, n_action_steps=2)

    assert loaded.n_action_steps == 2
    np.testing.assert_array_equal(
        loaded.predict_action_chunk(observations[0]),
        TorchPolicyRunner(tiny_policy).predict_action_chunk(observations[0]),
    )


def test_ensembling_plans_every_call(tiny_policy, observations):
    counting = _CountingPolicy(tiny_policy)
    runner = TorchPolicyRunner(counting, temporal_ensemble_coeff=0.01)

    actions = [runner(observation) for observation in observations[:5]]

    assert runner.n_action_steps == 1
    assert counting.calls == 5
    assert all(action.shape == (7,) for action in actions)


def test_ensembling_matches_select_action(tiny_spec, tiny_stats, observations):
    from robota.policies import make_policy
    from robota.spec import build_policy_inputs

    torch.manual_seed(0)
    policy = make_policy("act", tiny_spec, tiny_stats, **TINY_ACT, temporal_ensemble_coeff=0.1)
    policy.eval()
    runner = TorchPolicyRunner(policy)
    runner_actions = np.stack([runner(observation) for observation in observations[:6]])

    policy.reset()
    selected = []
    for observation in observations[:6]:
        arrays = build_policy_inputs(tiny_spec, [observation])
        inputs = {key: torch.from_numpy(value) for key, value in arrays.items()}
        selected.append(policy.select_action(inputs)[0].numpy())

    np.testing.assert_allclose(runner_actions, np.stack(selected), rtol=0, atol=1e-6)
    # From step 1 on the joints are blends, so they differ from the newest chunk's first action.
    assert not np.allclose(runner_actions[3], runner.predict_action_chunk(observations[3])[0])


def test_ensembling_rejects_queue_steps(tiny_policy):
    with pytest.raises(SpecError, match="n_action_steps must be 1"):
        TorchPolicyRunner(tiny_policy, n_action_steps=3, temporal_ensemble_coeff=0.01)
