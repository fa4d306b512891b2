"""ACT: shapes, learning, padding and the export module."""

from __future__ import annotations

import pytest
import torch

from robota.errors import SpecError
from robota.policies import ACTConfig, make_policy
from robota.spec import ACTION, TASK_TOKENS, UR5E, make_arm_spec, policy_input_names

from policy_helpers import TINY_ACT, make_batch, make_stats


def _inputs(batch: dict[str, torch.Tensor], spec) -> dict[str, torch.Tensor]:
    return {key: batch[key] for key in policy_input_names(spec)}


def test_chunk_shape_and_units(tiny_policy, tiny_batch, tiny_spec):
    chunk = tiny_policy.predict_action_chunk(_inputs(tiny_batch, tiny_spec))

    assert chunk.shape == (8, TINY_ACT["chunk_size"], 7)
    assert chunk.dtype == torch.float32


def test_forward_returns_scalar_losses(tiny_policy, tiny_batch):
    losses = tiny_policy.train()(tiny_batch)

    assert set(losses) == {"loss", "l1"}
    assert losses["loss"].shape == ()
    assert losses["loss"].item() > 0


def test_overfits_tiny_batch(tiny_spec, tiny_stats, tiny_batch):
    torch.manual_seed(0)
    policy = make_policy("act", tiny_spec, tiny_stats, **TINY_ACT).train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    first = policy(tiny_batch)["l1"].item()
    for _ in range(150):
        loss = policy(tiny_batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = policy(tiny_batch)["l1"].item()

    assert last < 0.1 * first, (first, last)


def test_padded_steps_do_not_count(tiny_policy, tiny_batch):
    padded = dict(tiny_batch)
    padded["action_is_pad"] = torch.zeros_like(tiny_batch["action_is_pad"])
    padded["action_is_pad"][:, 2:] = True
    changed = dict(padded)
    changed[ACTION] = padded[ACTION].clone()
    changed[ACTION][:, 2:] += 100.0

    assert tiny_policy(changed)["l1"].item() == pytest.approx(tiny_policy(padded)["l1"].item())
    assert tiny_policy(changed)["l1"].item() != pytest.approx(tiny_policy(tiny_batch)["l1"].item())


def test_all_padding_gives_zero_loss(tiny_policy, tiny_batch):
    padded = dict(tiny_batch)
    padded["action_is_pad"] = torch.ones_like(tiny_batch["action_is_pad"])

    assert tiny_policy(padded)["l1"].item() == 0.0


def test_inference_module_matches_predict(tiny_policy, tiny_batch, tiny_spec):
    inputs = _inputs(tiny_batch, tiny_spec)
    expected = tiny_policy.predict_action_chunk(inputs)
    module = tiny_policy.inference_module()

    actual = module(*(inputs[name] for name in policy_input_names(tiny_spec)))

    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_instruction_changes_prediction(tiny_spec, tiny_stats, tiny_batch):
    torch.manual_seed(0)
    policy = make_policy("act", tiny_spec, tiny_stats, **TINY_ACT).eval()
    inputs = _inputs(tiny_batch, tiny_spec)
    other = dict(inputs)
    other[TASK_TOKENS] = inputs[TASK_TOKENS].roll(1, dims=0)

    assert not torch.allclose(
        policy.predict_action_chunk(inputs), policy.predict_action_chunk(other)
    )


def test_empty_instruction_is_finite(tiny_policy, tiny_batch, tiny_spec):
    inputs = _inputs(tiny_batch, tiny_spec)
    inputs[TASK_TOKENS] = torch.zeros_like(inputs[TASK_TOKENS])

    assert torch.isfinite(tiny_policy.predict_action_chunk(inputs)).all()


def test_wrong_chunk_length_names_fix(tiny_policy, tiny_spec):
    batch = make_batch(tiny_spec, batch_size=2, chunk_size=TINY_ACT["chunk_size"] + 1)

    with pytest.raises(SpecError, match="chunk_size=4"):
        tiny_policy(batch)


def test_missing_input_is_named(tiny_policy, tiny_batch, tiny_spec):
    inputs = _inputs(tiny_batch, tiny_spec)
    del inputs["observation.wrench"]

    with pytest.raises(SpecError, match="observation.wrench"):
        tiny_policy.predict_action_chunk(inputs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_action_steps": 20}, "cannot exceed chunk_size"),
        ({"dim_model": 30, "n_heads": 4}, "must divide"),
        ({"dropout": 1.0}, "dropout"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"action_normalization": "zscore"}, "action_normalization"),
    ],
)
def test_config_rejects_invalid(overrides, message):
    with pytest.raises(SpecError, match=message):
        ACTConfig(**overrides)


def test_config_defaults_n_action_steps_to_chunk():
    assert ACTConfig(chunk_size=12).n_action_steps == 12


def test_two_cameras_full_size():

    spec = make_arm_spec(UR5E, 10, {"wrist": (96, 96), "overhead": (96, 96)})
    policy = make_policy("act", spec, make_stats(spec)).eval()
    batch = make_batch(spec, batch_size=2, chunk_size=10)

    chunk = policy.predict_action_chunk(_inputs(batch, spec))

    assert chunk.shape == (2, 10, 7)
    assert all(encoder.grid == (3, 3) for encoder in policy.image_encoders.values())
