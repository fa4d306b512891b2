"""The flow-matching policy: padded layouts, the loss, integration and the gripper channel."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robota.errors import SpecError, UnknownNameError
from robota.policies import load_checkpoint, make_policy, save_checkpoint
from robota.policies.flow import FlowMatchingConfig
from robota.spec import ACTION, UR5E, RobotSpec, encode_instruction, make_arm_spec

from policy_helpers import TINY_ACT, make_batch, make_stats

TINY_FLOW = {**TINY_ACT, "n_layers": 1, "n_expert_layers": 1, "num_inference_steps": 4}

# A 7-joint arm shaped like a Franka Panda, to check that robots share the gripper slot.
SEVEN_JOINTS = RobotSpec(
    name="panda",
    joint_names=tuple(f"joint{i}" for i in range(1, 8)),
    lower_rad=(-2.8973,) * 7,
    upper_rad=(2.8973,) * 7,
    velocity_limit_rad_s=(2.175,) * 7,
    gripper_max_opening_m=0.08,
)


@pytest.fixture
def flow(tiny_spec, tiny_stats) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_policy("flow", tiny_spec, tiny_stats, **TINY_FLOW).eval()


def _inputs(policy, batch) -> dict[str, torch.Tensor]:
    return {name: batch[name] for name in policy.input_names}


def _predict(policy, batch, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return policy.predict_action_chunk(_inputs(policy, batch), **kwargs)


def test_chunk_shape_and_binary_gripper(flow, tiny_batch, tiny_stats):
    chunk = _predict(flow, tiny_batch)

    assert chunk.shape == (8, 4, 7)
    assert torch.isfinite(chunk).all()
    open_value = torch.tensor(tiny_stats[ACTION]["min"][6], dtype=torch.float32)
    closed_value = torch.tensor(tiny_stats[ACTION]["max"][6], dtype=torch.float32)
    gripper = chunk[..., 6]
    assert ((gripper == open_value) | (gripper == closed_value)).all()


def test_prediction_is_deterministic(flow, tiny_batch):
    first = _predict(flow, tiny_batch)
    second = _predict(flow, tiny_batch)

    assert torch.equal(first, second)


def test_start_noise_changes_chunk(flow, tiny_batch):
    noise = torch.randn(8, 4, flow.config.max_action_dim, generator=torch.Generator().manual_seed(1))

    from_zeros = _predict(flow, tiny_batch)
    from_noise = _predict(flow, tiny_batch, start=noise)

    assert not torch.allclose(from_zeros[..., :6], from_noise[..., :6])


def test_one_step_is_one_euler_step(tiny_spec, tiny_stats, tiny_batch):
    torch.manual_seed(0)
    policy = make_policy("flow", tiny_spec, tiny_stats, **{**TINY_FLOW, "num_inference_steps": 1})
    policy.eval()

    with torch.no_grad():
        memory, mask = policy.encode(_inputs(policy, tiny_batch))
        zeros = policy.start_chunk(memory)
        expected = policy.unnormalize_action(policy.velocity(zeros, torch.zeros(1), memory, mask))
    chunk = _predict(policy, tiny_batch)

    torch.testing.assert_close(chunk, expected)


def test_more_steps_change_chunk(tiny_spec, tiny_stats, tiny_batch):
    chunks = []
    for steps in (1, 4):
        torch.manual_seed(0)
        policy = make_policy(
            "flow", tiny_spec, tiny_stats, **{**TINY_FLOW, "num_inference_steps": steps}
        )
        chunks.append(_predict(policy.eval(), tiny_batch))

    assert not torch.allclose(chunks[0][..., :6], chunks[1][..., :6])


def test_forward_returns_scalar_losses(flow, tiny_batch):
    losses = flow.train()(tiny_batch)

    assert set(losses) == {"loss", "mse"}
    assert losses["loss"].shape == ()
    assert torch.isfinite(losses["loss"])


def test_loss_is_velocity_error_on_real_steps(tiny_spec, tiny_stats, tiny_batch):
    torch.manual_seed(0)
    policy = make_policy("flow", tiny_spec, tiny_stats, **{**TINY_FLOW, "time_sampling": "uniform"})
    batch = dict(tiny_batch)
    batch["action_is_pad"] = torch.zeros(8, 4, dtype=torch.bool)
    batch["action_is_pad"][:, 2:] = True
    torch.manual_seed(3)
    loss = policy(batch)["loss"]

    # The same draws in the same order: noise, then one time per sample.
    torch.manual_seed(3)
    with torch.no_grad():
        memory, mask = policy.encode(_inputs(policy, batch))
        target = policy.normalize_action(batch[ACTION])
        noise = torch.randn_like(target)
        time = torch.rand(8)
        noisy = time[:, None, None] * target + (1 - time[:, None, None]) * noise
        error = (policy.velocity(noisy, time, memory, mask) - (target - noise)) ** 2
    # Steps 0 and 1 are real; elements 0-5 are the arm and 8 the gripper, 6 and 7 padding.
    expected = error[:, :2, [0, 1, 2, 3, 4, 5, 8]].mean()

    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_all_padding_gives_zero_loss(flow, tiny_batch):
    batch = dict(tiny_batch)
    batch["action_is_pad"] = torch.ones(8, 4, dtype=torch.bool)

    assert flow(batch)["loss"].item() == 0.0


def test_action_layout_puts_gripper_last(flow, tiny_stats):
    action = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, tiny_stats[ACTION]["max"][6]]])

    padded = flow.normalize_action(action)

    assert padded.shape == (1, 9)
    assert padded[0, 6:8].tolist() == [0.0, 0.0]
    assert padded[0, 8].item() == 1.0  # closed maps to +1
    torch.testing.assert_close(flow.unnormalize_action(padded), action)


def test_robots_share_gripper_slot():
    spec = make_arm_spec(SEVEN_JOINTS, 10, {"wrist": (32, 32)})
    stats = make_stats(spec)
    policy = make_policy("flow", spec, stats, **TINY_FLOW)
    closed = stats[ACTION]["max"][7]

    padded = policy.normalize_action(torch.tensor([[0.0] * 7 + [closed]]))

    assert padded.shape == (1, 9)
    assert padded[0, 7].item() == 0.0
    assert padded[0, 8].item() == 1.0
    assert policy.robot_id.item() == 1  # "panda" in the default vocabulary


def test_unknown_robot_gets_other_token(tiny_stats):
    robot = dataclasses.replace(UR5E, name="my-arm")
    spec = make_arm_spec(robot, 10, {"wrist": (32, 32)})

    policy = make_policy("flow", spec, tiny_stats, **TINY_FLOW)

    assert policy.config.robot_vocabulary[policy.robot_id.item()] == "other"


def test_too_many_joints_names_fix():
    robot = RobotSpec(
        name="long-arm",
        joint_names=tuple(f"j{i}" for i in range(9)),
        lower_rad=(-1.0,) * 9,
        upper_rad=(1.0,) * 9,
        velocity_limit_rad_s=(1.0,) * 9,
        gripper_max_opening_m=0.1,
    )
    spec = make_arm_spec(robot, 10, {"wrist": (32, 32)})

    with pytest.raises(SpecError, match="raise max_state_dim and max_action_dim to at least 10"):
        make_policy("flow", spec, make_stats(spec), **TINY_FLOW)


def test_instruction_changes_chunk(flow, tiny_batch):
    other = dict(tiny_batch)
    tokens = torch.from_numpy(encode_instruction("Mets la pièce dans le bac"))
    other["task_tokens"] = tokens.expand(8, -1).clone()

    assert not torch.allclose(_predict(flow, tiny_batch)[..., :6], _predict(flow, other)[..., :6])


def test_row_ignores_other_rows_instruction_length(flow, tiny_batch):
    short = {key: value[:1] for key, value in tiny_batch.items()}
    mixed = {key: value[:2].clone() for key, value in tiny_batch.items()}
    long_text = "Nimm das Werkstück und lege es in den Behälter, bitte vorsichtig!"
    mixed["task_tokens"][1] = torch.from_numpy(encode_instruction(long_text))

    alone = _predict(flow, short)
    beside_long = _predict(flow, mixed)[:1]

    torch.testing.assert_close(alone, beside_long, rtol=0, atol=1e-5)


def test_empty_instruction_is_finite(flow, tiny_batch):
    batch = dict(tiny_batch)
    batch["task_tokens"] = torch.zeros_like(tiny_batch["task_tokens"])

    assert torch.isfinite(_predict(flow, batch)).all()


def test_checkpoint_round_trip(tmp_path, flow, tiny_batch):
    save_checkpoint(tmp_path / "checkpoint", flow)

    loaded = load_checkpoint(tmp_path / "checkpoint")

    assert loaded.name == "flow"
    assert loaded.config == flow.config
    assert torch.equal(_predict(loaded, tiny_batch), _predict(flow, tiny_batch))


def test_integration_mode_suggests(flow):
    with pytest.raises(UnknownNameError, match="Did you mean 'loop'"):
        flow.inference_module(integration="loops")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_inference_steps": 0}, "num_inference_steps must be a positive integer"),
        ({"max_action_dim": 0}, "max_action_dim must be a positive integer"),
        ({"dim_model": 30, "n_heads": 4}, "must be even and divisible by n_heads"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"robot_vocabulary": ("ur5e",)}, "ending with 'other'"),
        ({"noise_samples": 0}, "noise_samples must be a positive integer"),
    ],
)
def test_config_rejects_invalid(overrides, message):
    with pytest.raises(SpecError, match=message):
        FlowMatchingConfig(**overrides)


def test_config_rejects_unknown_time_sampling():
    with pytest.raises(UnknownNameError, match="Did you mean 'uniform'"):
        FlowMatchingConfig(time_sampling="uniforn")


def test_noise_samples_train(tiny_spec, tiny_stats, tiny_batch):
    torch.manual_seed(0)
    policy = make_policy("flow", tiny_spec, tiny_stats, **{**TINY_FLOW, "noise_samples": 3})

    loss = policy(tiny_batch)["loss"]
    loss.backward()

    assert torch.isfinite(loss)
    assert policy.action_output.weight.grad is not None
