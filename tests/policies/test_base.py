"""ChunkPolicy: per-step execution from a queue or by temporal ensembling, and the gripper."""

from __future__ import annotations

import math

import pytest
import torch

from robota.errors import SpecError
from robota.policies import POLICIES, ChunkPolicy, ChunkPolicyConfig
from robota.spec import ACTION, UR5E, make_arm_spec

from policy_helpers import make_stats

# Actions per chunk of the scripted policy: six joints and the gripper.
ACTION_DIM = 7


class ScriptedPolicy(ChunkPolicy):
    """Returns the chunks it is given, one per prediction, and counts the predictions."""

    name = "scripted"
    config_class = ChunkPolicyConfig

    def __init__(self, config: ChunkPolicyConfig, chunks: list[torch.Tensor]) -> None:
        spec = make_arm_spec(UR5E, 10, {"wrist": (32, 32)})
        stats = make_stats(spec)
        stats[ACTION]["min"][6] = 0.0
        stats[ACTION]["max"][6] = 1.0
        super().__init__(config, spec, stats)
        self.chunks = list(chunks)
        self.calls = 0

    def forward(self, batch):
        raise NotImplementedError("the scripted policy is not trained")

    def predict_action_chunk(self, inputs):
        chunk = self.chunks[self.calls]
        self.calls += 1
        return chunk


def _chunk(arm: list[float], gripper: list[float]) -> torch.Tensor:
    """Build a chunk `(1, len(arm), 7)`: every joint at `arm[i]`, the gripper at `gripper[i]`."""
    joints = torch.tensor(arm)[:, None].expand(-1, ACTION_DIM - 1)
    return torch.cat([joints, torch.tensor(gripper)[:, None]], dim=1)[None]


def test_ensemble_of_two_chunks():
    config = ChunkPolicyConfig(chunk_size=3, temporal_ensemble_coeff=0.5)
    policy = ScriptedPolicy(
        config,
        [_chunk([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), _chunk([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])],
    )

    first = policy.select_action({})
    second = policy.select_action({})

    torch.testing.assert_close(first, _chunk([0.0], [0.0])[0])
    # Step 1 blends chunk 0 (weight exp(0) = 1) and chunk 1 (weight exp(-0.5) = 0.6065):
    # 0.6065 / 1.6065 = 0.37754 for the joints. The gripper's weighted share of closing
    # chunks is the same 0.378, below the threshold 0.5, so it stays open.
    expected_joint = math.exp(-0.5) / (1.0 + math.exp(-0.5))
    assert expected_joint == pytest.approx(0.377541, abs=1e-6)
    torch.testing.assert_close(second[0, :6], torch.full((6,), expected_joint))
    assert second[0, 6].item() == 0.0


def test_ensemble_closes_gripper_on_majority():
    config = ChunkPolicyConfig(chunk_size=3, temporal_ensemble_coeff=0.0)
    policy = ScriptedPolicy(
        config,
        [
            _chunk([0.0, 0.0, 0.0], [0.0, 1.0, 1.0]),
            _chunk([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
        ],
    )

    policy.select_action({})
    second = policy.select_action({})

    # Equal weights: both chunks close the gripper at step 1, and the joints average to 0.5.
    assert second[0, 6].item() == 1.0
    torch.testing.assert_close(second[0, :6], torch.full((6,), 0.5))


def test_ensemble_drops_expired_chunks():
    config = ChunkPolicyConfig(chunk_size=2, temporal_ensemble_coeff=0.01)
    chunks = [_chunk([float(k), float(k)], [0.0, 0.0]) for k in (0, 10, 20)]
    policy = ScriptedPolicy(config, chunks)

    actions = [policy.select_action({})[0, 0].item() for _ in range(3)]

    # Step 2 blends chunks 1 and 2 only, because chunk 0 covered steps 0 and 1.
    weight = math.exp(-0.01)
    assert actions[2] == pytest.approx((10.0 + 20.0 * weight) / (1.0 + weight))
    assert policy.calls == 3


def test_queue_replans_every_n_action_steps():
    config = ChunkPolicyConfig(chunk_size=4, n_action_steps=3)
    chunks = [_chunk([10.0 * k + i for i in range(4)], [0.0] * 4) for k in range(3)]
    policy = ScriptedPolicy(config, chunks)

    actions = [policy.select_action({})[0, 0].item() for _ in range(7)]

    assert actions == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 20.0]
    assert policy.calls == 3  # Steps 0, 3 and 6 plan.


def test_reset_replans():
    config = ChunkPolicyConfig(chunk_size=4)
    chunks = [_chunk([0.0, 1.0, 2.0, 3.0], [0.0] * 4), _chunk([5.0, 6.0, 7.0, 8.0], [0.0] * 4)]
    policy = ScriptedPolicy(config, chunks)
    policy.select_action({})

    policy.reset()
    action = policy.select_action({})

    assert action[0, 0].item() == 5.0
    assert policy.calls == 2


def test_threshold_gripper_snaps():
    policy = ScriptedPolicy(ChunkPolicyConfig(gripper_threshold=0.3), [])
    actions = torch.zeros(4, ACTION_DIM)
    actions[:, 6] = torch.tensor([-0.5, 0.29, 0.3, 1.7])

    snapped = policy.threshold_gripper(actions)

    assert snapped[:, 6].tolist() == [0.0, 0.0, 1.0, 1.0]
    torch.testing.assert_close(snapped[:, :6], actions[:, :6])


def test_config_defaults_without_ensembling():
    config = ChunkPolicyConfig(chunk_size=8)

    assert config.n_action_steps == 8
    assert config.temporal_ensemble_coeff is None
    assert config.gripper_threshold == 0.5


def test_config_rejects_queue_with_ensembling():
    with pytest.raises(SpecError, match="n_action_steps must be 1"):
        ChunkPolicyConfig(chunk_size=8, n_action_steps=4, temporal_ensemble_coeff=0.01)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_registered_policies_are_chunk_policies(name):
    policy_class = POLICIES[name]

    assert issubclass(policy_class, ChunkPolicy)
    assert issubclass(policy_class.config_class, ChunkPolicyConfig)
    assert policy_class.name == name
