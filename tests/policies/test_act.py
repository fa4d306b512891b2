"""ACT: shapes, learning, padding and the export module."""

from __future__ import annotations

import pytest
import torch

from robota.errors import CheckpointError, SpecError
from robota.policies import ACTConfig, make_policy
from robota.spec import ACTION, TASK_TOKENS, UR5E, make_arm_spec, policy_input_names

from policy_helpers import TINY_ACT, make_batch, make_stats

# Optimiser steps of the two-styles test.
STYLE_STEPS = 100


def _inputs(batch: dict[str, torch.Tensor], spec) -> dict[str, torch.Tensor]:
    return {key: batch[key] for key in policy_input_names(spec)}


def test_chunk_shape_and_units(tiny_policy, tiny_batch, tiny_spec):
    chunk = tiny_policy.predict_action_chunk(_inputs(tiny_batch, tiny_spec))

    assert chunk.shape == (8, TINY_ACT["chunk_size"], 7)
    assert chunk.dtype == torch.float32


def test_forward_returns_scalar_losses(tiny_policy, tiny_batch):
    losses = tiny_policy.train()(tiny_batch)

    assert set(losses) == {"loss", "l1", "gripper_bce", "kl"}
    assert losses["loss"].shape == ()
    assert losses["loss"].item() > 0
    assert losses["kl"].item() > 0
    expected = losses["l1"] + losses["gripper_bce"] + 10.0 * losses["kl"]
    assert losses["loss"].item() == pytest.approx(expected.item())


def test_eval_loss_uses_zero_latent(tiny_policy, tiny_batch):
    first = tiny_policy.eval()(tiny_batch)
    second = tiny_policy(tiny_batch)

    assert first["kl"].item() == 0.0
    assert first["loss"].item() == second["loss"].item()


def test_training_samples_latent(tiny_policy, tiny_batch):
    tiny_policy.train()
    torch.manual_seed(1)
    first = tiny_policy(tiny_batch)["l1"].item()
    torch.manual_seed(2)
    second = tiny_policy(tiny_batch)["l1"].item()

    assert first != second


def test_without_vae_has_no_encoder(tiny_spec, tiny_stats, tiny_batch):
    policy = make_policy("act", tiny_spec, tiny_stats, **TINY_ACT, use_vae=False).train()

    losses = policy(tiny_batch)

    assert set(losses) == {"loss", "l1", "gripper_bce"}
    assert policy.cvae_encoder is None
    assert not any("cvae" in name for name in policy.state_dict())


def _train_on_two_styles(spec, stats, use_vae: bool) -> float:
    """Train on observations demonstrated with two opposite offsets; return the training L1."""
    torch.manual_seed(0)
    policy = make_policy("act", spec, stats, **TINY_ACT, use_vae=use_vae, kl_weight=0.01).train()
    base = make_batch(spec, batch_size=8, chunk_size=TINY_ACT["chunk_size"])
    batch = {key: torch.cat([value, value]) for key, value in base.items()}
    batch[ACTION] = batch[ACTION].clone()
    batch[ACTION][:8, :, :6] += 1.0
    batch[ACTION][8:, :, :6] -= 1.0
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for _ in range(STYLE_STEPS):
        loss = policy(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy(batch)["l1"].item()


def test_cvae_latent_separates_two_styles(tiny_spec, tiny_stats):
    # A deterministic regressor can only predict the mean of both styles, while the CVAE's
    # posterior latent separates them.
    with_vae = _train_on_two_styles(tiny_spec, tiny_stats, use_vae=True)
    without_vae = _train_on_two_styles(tiny_spec, tiny_stats, use_vae=False)

    # Measured with 100 steps: 0.32 with the CVAE, 2.72 without.
    assert with_vae < 0.5 * without_vae, (with_vae, without_vae)


def test_gripper_output_is_open_or_closed(tiny_policy, tiny_batch, tiny_spec, tiny_stats):
    chunk = tiny_policy.predict_action_chunk(_inputs(tiny_batch, tiny_spec))

    gripper = chunk[..., 6]
    low = torch.tensor(tiny_stats[ACTION]["min"][6], dtype=torch.float32)
    high = torch.tensor(tiny_stats[ACTION]["max"][6], dtype=torch.float32)
    assert bool(((gripper == low) | (gripper == high)).all()), gripper.unique()


def test_gripper_threshold_moves_decision(tiny_spec, tiny_stats, tiny_batch):
    inputs = _inputs(tiny_batch, tiny_spec)
    closed_counts = []
    for threshold in (0.01, 0.99):
        torch.manual_seed(0)
        policy = make_policy(
            "act", tiny_spec, tiny_stats, **TINY_ACT, gripper_threshold=threshold
        ).eval()
        gripper = policy.predict_action_chunk(inputs)[..., 6]
        closed_counts.append(int((gripper == torch.tensor(tiny_stats[ACTION]["max"][6])).sum()))

    # An untrained head's probabilities lie near 0.5: all 32 close at 0.01 and none at 0.99.
    assert closed_counts == [32, 0]


def test_weights_without_gripper_rejected(tiny_policy):
    state = {
        name: tensor for name, tensor in tiny_policy.state_dict().items() if "gripper" not in name
    }

    with pytest.raises(CheckpointError, match="train the policy again"):
        tiny_policy.load_state_dict(state, strict=False)


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
        ({"n_action_steps": 20}, "between 1 and the chunk size 10"),
        ({"n_action_steps": 2, "temporal_ensemble_coeff": 0.01}, "n_action_steps must be 1"),
        ({"temporal_ensemble_coeff": -1.0}, "temporal_ensemble_coeff"),
        ({"gripper_threshold": 1.0}, "gripper_threshold"),
        ({"kl_weight": float("nan")}, "kl_weight"),
        ({"latent_dim": 0}, "latent_dim"),
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


def test_config_ensembling_executes_one_step():
    assert ACTConfig(chunk_size=12, temporal_ensemble_coeff=0.01).n_action_steps == 1


def test_two_cameras_full_size():

    spec = make_arm_spec(UR5E, 10, {"wrist": (96, 96), "overhead": (96, 96)})
    policy = make_policy("act", spec, make_stats(spec)).eval()
    batch = make_batch(spec, batch_size=2, chunk_size=10)

    chunk = policy.predict_action_chunk(_inputs(batch, spec))

    assert chunk.shape == (2, 10, 7)
    assert all(encoder.grid == (3, 3) for encoder in policy.image_encoders.values())
