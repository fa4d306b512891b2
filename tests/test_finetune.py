"""Fine-tuning: LoRA adapters, frozen encoders, merging, errors and the `robota finetune` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from robota.datasets.synthetic import write_random_dataset
from robota.errors import CheckpointError, SpecError
from robota.export import export_bundle
from robota.finetune import finetune_config, prepare_parameters
from robota.policies import load_checkpoint
from robota.policies.layers import DecoderLayer, EncoderLayer
from robota.policies.lora import LoRAUpdate, apply_lora, lora_target_names, merge_lora
from robota.spec import UR5E, make_arm_spec
from robota.train import train
from robota.train_cli import main
from robota.train_config import load_config
from test_train_helpers import write_tiny_config, write_tiny_dataset


@pytest.fixture(autouse=True)
def _one_thread(tmp_path: Path, monkeypatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.setenv("ROBOTA_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A checkpoint of the tiny ACT trained for 3 steps on one recorded dataset."""
    root = tmp_path_factory.mktemp("pretrained")
    dataset = write_tiny_dataset(root / "dataset", episodes=2, length=10, seed=0)
    config = load_config(
        write_tiny_config(root / "tiny.toml", steps=3, checkpoint_every=0),
        [f"dataset={json.dumps(str(dataset))}", f"output={json.dumps(str(root / 'run'))}", "val_fraction=0"],
    )
    return train(config)


@pytest.fixture(scope="module")
def new_dataset(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("new") / "dataset", episodes=2, length=8, seed=5)


def _batch(policy: torch.nn.Module, dataset: Path, cache: Path) -> dict[str, torch.Tensor]:
    from robota.datasets.torch_loader import ChunkDataset

    samples = ChunkDataset(dataset, chunk_size=policy.config.chunk_size, cache_dir=cache)
    items = [samples[i] for i in range(4)]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def _layer_count(policy: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(module, kind) for module in policy.modules())


def test_lora_targets_attention_and_mlp(pretrained):
    policy = load_checkpoint(pretrained)

    names = lora_target_names(policy)

    # An encoder layer has query, key_value, out and two MLP linears; a decoder layer has two
    # attention blocks and the MLP.
    expected = 5 * _layer_count(policy, EncoderLayer) + 8 * _layer_count(policy, DecoderLayer)
    assert len(names) == expected
    assert expected >= 13
    suffixes = (".query", ".key_value", ".out", ".feed_forward.0", ".feed_forward.3")
    assert all(name.endswith(suffixes) for name in names)
    assert not [name for name in names if "image_encoders" in name or "instruction_encoder" in name]


def test_only_adapters_get_gradients(pretrained, new_dataset, tmp_path):
    policy = load_checkpoint(pretrained).train()
    config = finetune_config(pretrained, new_dataset, tmp_path / "out", freeze_encoders=True, lora_rank=2)
    frozen_before = {name: p.detach().clone() for name, p in policy.named_parameters()}

    adapted = prepare_parameters(policy, config)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    policy(_batch(policy, new_dataset, tmp_path / "cache"))["loss"].backward()
    optimizer.step()

    with_gradient = {name for name, p in policy.named_parameters() if p.grad is not None}
    adapters = {name for name, p in policy.named_parameters() if name.endswith(("lora_a", "lora_b"))}
    assert with_gradient == adapters
    assert len(adapters) == 2 * len(adapted)
    after = dict(policy.named_parameters())
    for name in ("action_head.weight", "action_queries", *[n for n in after if n.startswith("image_encoders.")]):
        assert torch.equal(after[name], frozen_before[name]), name


def test_lora_keeps_image_encoders_trainable(pretrained, new_dataset, tmp_path):
    policy = load_checkpoint(pretrained).train()
    config = finetune_config(pretrained, new_dataset, tmp_path / "out")

    prepare_parameters(policy, config)

    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    encoders = {name for name, _ in policy.named_parameters() if name.startswith("image_encoders.")}
    adapters = {name for name in trainable if name.endswith(("lora_a", "lora_b"))}
    assert encoders
    assert trainable == encoders | adapters


def test_full_mode_trains_all_but_frozen_encoders(pretrained, new_dataset, tmp_path):
    policy = load_checkpoint(pretrained).train()
    config = finetune_config(pretrained, new_dataset, tmp_path / "out", finetune_mode="full", freeze_encoders=True)

    prepare_parameters(policy, config)

    frozen = {name for name, p in policy.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in policy.named_parameters() if name.startswith("image_encoders.")}
    assert not [name for name, _ in policy.named_parameters() if "lora" in name]


def test_merged_output_equals_adapted(pretrained, new_dataset, tmp_path):
    policy = load_checkpoint(pretrained)
    keys_before = set(policy.state_dict())
    apply_lora(policy, rank=4, alpha=8.0)
    generator = torch.Generator().manual_seed(0)
    for module in policy.modules():
        if isinstance(module, LoRAUpdate):  # Trained adapters have a non-zero B.
            module.lora_b.data = torch.randn(module.lora_b.shape, generator=generator) * 0.1
    inputs = _batch(policy, new_dataset, tmp_path / "cache")

    with torch.no_grad():
        adapted = policy.predict_action_chunk(inputs)
        merged = merge_lora(policy).predict_action_chunk(inputs)
        base = load_checkpoint(pretrained).predict_action_chunk(inputs)

    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)
    assert (adapted - base).abs().max() > 1e-3
    assert set(policy.state_dict()) == keys_before


def test_bad_rank(pretrained, new_dataset, tmp_path):
    with pytest.raises(SpecError, match="lora_rank"):
        finetune_config(pretrained, new_dataset, tmp_path / "out", lora_rank=0)
    policy = load_checkpoint(pretrained)
    with pytest.raises(SpecError, match="use a rank from 1 to 32"):
        apply_lora(policy, rank=1000, alpha=16.0)


def test_finetune_cli_writes_loadable_checkpoint(pretrained, new_dataset, tmp_path, capsys):
    output = tmp_path / "finetuned"

    status = main([
        "finetune", "--from", str(pretrained), "--dataset", str(new_dataset), "--output",
        str(output), "--steps", "4", "--lora-rank", "2", "--batch-size", "4",
        "checkpoint_every=2", "tensorboard=false",
    ])

    assert status == 0, capsys.readouterr().err
    saved = json.loads((output / "config.json").read_text())
    assert saved["finetune"]["mode"] == "lora"
    assert saved["finetune"]["lora_merged"] is True
    assert saved["finetune"]["from"] == str(pretrained)
    assert 0 < saved["finetune"]["trainable_parameters"] < saved["finetune"]["total_parameters"]
    assert saved["stats_sha256"] == json.loads((pretrained / "config.json").read_text())["stats_sha256"]
    before = safetensors.torch.load_file(str(pretrained / "model.safetensors"))
    after = safetensors.torch.load_file(str(output / "model.safetensors"))
    assert set(after) == set(before)
    assert torch.equal(after["action_head.weight"], before["action_head.weight"])
    assert not torch.equal(after["encoder.0.attention.query.weight"], before["encoder.0.attention.query.weight"])
    assert load_checkpoint(output).config == load_checkpoint(pretrained).config

    result = export_bundle(output, tmp_path / "bundle")
    assert (result.bundle / "policy.onnx").is_file()
    assert result.parity_max_abs_error < 1e-4


def test_finetune_cli_resumes(pretrained, new_dataset, tmp_path):
    arguments = [
        "finetune", "--from", str(pretrained), "--dataset", str(new_dataset), "--output",
        str(tmp_path / "run"), "--batch-size", "4", "checkpoint_every=2", "tensorboard=false",
    ]

    first = main([*arguments, "--steps", "2"])
    resumed = main([*arguments, "--steps", "4", "--resume"])

    assert (first, resumed) == (0, 0)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_run"]["step"] == 4


def test_finetune_from_non_checkpoint(new_dataset, tmp_path, capsys):
    status = main([
        "finetune", "--from", str(new_dataset), "--dataset", str(new_dataset), "--output", str(tmp_path / "out"),
    ])

    assert status == 2
    error = capsys.readouterr().err
    assert f"cannot fine-tune from {new_dataset}: it is not a robota checkpoint" in error


def test_finetune_rejects_other_spec(pretrained, tmp_path):
    spec = make_arm_spec(UR5E, 10, {"wrist": (24, 24)})
    other = write_random_dataset(tmp_path / "other", spec, episodes=1, length=6)
    config = finetune_config(pretrained, other, tmp_path / "out", steps=1)

    with pytest.raises(SpecError, match="differ in 'observation.images.wrist'"):
        train(config)


def test_finetune_rejects_policy_settings(pretrained, new_dataset, tmp_path, capsys):
    status = main([
        "finetune", "--from", str(pretrained), "--dataset", str(new_dataset), "--output",
        str(tmp_path / "out"), "policy.dim_model=64",
    ])

    assert status == 2
    assert "takes ['policy'] from the checkpoint" in capsys.readouterr().err
    with pytest.raises(SpecError, match="chunk_size"):
        finetune_config(pretrained, new_dataset, tmp_path / "out", chunk_size=8)


def test_train_config_requires_checkpoint_policy(pretrained, new_dataset, tmp_path):
    from robota.train_config import TrainConfig

    with pytest.raises(SpecError, match="finetune_config"):
        TrainConfig(dataset=new_dataset, output=tmp_path / "out", init_from=pretrained, chunk_size=4)
    with pytest.raises(CheckpointError, match="not a robota checkpoint"):
        TrainConfig(dataset=new_dataset, output=tmp_path / "out", init_from=tmp_path / "missing")
