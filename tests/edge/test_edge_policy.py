"""BundlePolicy: one action per call from a queue of chunks, re-planned when it runs dry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robota.edge.bundle import load_bundle
from robota.edge.policy import BundlePolicy
from robota.edge.synthetic import synthesize_observations
from robota.errors import SpecError


class _CountingBundle:
    """Wraps a bundle and records the batch of every `run` call."""

    def __init__(self, bundle):
        self._bundle = bundle
        self.runs: list[int] = []

    def __getattr__(self, name):
        return getattr(self._bundle, name)

    def run(self, inputs):
        chunks = self._bundle.run(inputs)
        self.runs.append(chunks.shape[0])
        return chunks


@pytest.fixture
def counting_bundle(exported_bundle: Path) -> _CountingBundle:
    return _CountingBundle(load_bundle(exported_bundle))


def test_policy_executes_first_steps_of_each_chunk(counting_bundle) -> None:
    policy = BundlePolicy(counting_bundle)
    observations = synthesize_observations(policy.spec, 9, seed=3)

    actions = [policy(o) for o in observations]

    # Chunks are predicted at calls 0, 4 and 8, each from that call's observation.
    assert counting_bundle.runs == [1, 1, 1]
    for call, action in enumerate(actions):
        plan_call = call - call % 4
        chunk = policy.predict_action_chunk(observations[plan_call])
        np.testing.assert_array_equal(action, chunk[call % 4])
    assert actions[0].shape == (7,)
    assert actions[0].dtype == np.float32


def test_policy_reset_drops_queued_actions(counting_bundle) -> None:
    policy = BundlePolicy(counting_bundle)
    first, second = synthesize_observations(policy.spec, 2, seed=4)

    policy(first)
    policy.reset()
    action = policy(second)

    assert counting_bundle.runs == [1, 1]
    np.testing.assert_array_equal(action, policy.predict_action_chunk(second)[0])


def test_policy_n_action_steps_override(counting_bundle) -> None:
    policy = BundlePolicy(counting_bundle, n_action_steps=10)
    observation = synthesize_observations(policy.spec, 1)[0]

    for _ in range(10):
        policy(observation)
    assert counting_bundle.runs == [1]
    policy(observation)
    assert counting_bundle.runs == [1, 1]


@pytest.mark.parametrize("steps", [0, 11])
def test_policy_rejects_steps_outside_chunk(exported_bundle: Path, steps: int) -> None:
    with pytest.raises(SpecError, match=f"n_action_steps {steps} is outside 1..10"):
        BundlePolicy.from_path(exported_bundle, n_action_steps=steps)


def test_predict_action_chunk_leaves_queue(counting_bundle) -> None:
    policy = BundlePolicy(counting_bundle)
    observation = synthesize_observations(policy.spec, 1)[0]

    chunk = policy.predict_action_chunk(observation)
    action = policy(observation)

    assert chunk.shape == (10, 7)
    np.testing.assert_array_equal(action, chunk[0])


def test_policy_rejects_incomplete_observation(exported_bundle: Path) -> None:
    policy = BundlePolicy.from_path(exported_bundle)
    observation = synthesize_observations(policy.spec, 1)[0]
    del observation["observation.wrench"]

    with pytest.raises(SpecError, match="observation is missing 'observation.wrench'"):
        policy(observation)
