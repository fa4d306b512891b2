"""train(): a short run on an in-memory dataset writes a loadable, reproducible checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from robota.errors import CheckpointError, SpecError, UnknownNameError
from robota.policies import checkpoint_sha256, load_checkpoint
from robota.spec import ACTION, UR5E, Spec, encode_instruction, make_arm_spec
from robota.train import TrainConfig, train

CHUNK = 4
TINY_ACT = {
    "dim_model": 32,
    "n_heads": 2,
    "dim_feedforward": 64,
    "image_channels": (8, 16),
    "dropout": 0.0,
}


class InMemoryChunkDataset(Dataset):
    """Samples in ChunkDataset's contract whose actions follow the part pose."""

    fingerprint = "in-memory-test-dataset"

    def __init__(self, n_samples: int = 48, seed: int = 0) -> None:
        self.spec: Spec = make_arm_spec(UR5E, 10, {"wrist": (16, 16)})
        rng = np.random.default_rng(seed)
        self.samples = [self._sample(rng) for _ in range(n_samples)]
        self.stats = self._stats()

    def _sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        sample: dict[str, torch.Tensor] = {
            "observation.images.wrist": torch.from_numpy(
                rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            ),
            "task_tokens": torch.from_numpy(encode_instruction("pick the part")),
        }
        for key in self.spec.vector_keys:
            sample[key] = torch.from_numpy(
                rng.normal(0, 1, self.spec.features[key].shape).astype(np.float32)
            )
        target = torch.cat(
            [sample["observation.part_pose"], sample["observation.part_pose"], torch.zeros(1)]
        )
        # (1, action_dim) + (chunk, 1) -> (chunk, action_dim)
        sample[ACTION] = target[None, :] + 0.05 * torch.arange(CHUNK, dtype=torch.float32)[:, None]
        sample["action_is_pad"] = torch.zeros(CHUNK, dtype=torch.bool)
        return sample

    def _stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "observation.images.wrist": {"mean": [[[0.5]]] * 3, "std": [[[0.29]]] * 3},
        }
        for key in [*self.spec.vector_keys, ACTION]:
            values = torch.stack(
                [s[key].reshape(-1, self.spec.features[key].shape[0]) for s in self.samples]
            )
            values = values.reshape(-1, values.shape[-1]).numpy()
            stats[key] = {
                "mean": values.mean(0).tolist(),
                "std": values.std(0).tolist(),
                "min": values.min(0).tolist(),
                "max": values.max(0).tolist(),
            }
        return stats

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]


def _config(tmp_path: Path, **changes: Any) -> TrainConfig:
    settings = dict(
        dataset=tmp_path / "unused-dataset",
        output=tmp_path / "checkpoint",
        steps=40,
        batch_size=8,
        lr=3e-3,
        warmup_steps=5,
        log_every=10,
        chunk_size=CHUNK,
        policy_overrides=TINY_ACT,
    )
    settings.update(changes)
    return TrainConfig(**settings)


def _train(config: TrainConfig, reports: list | None = None) -> Path:
    torch.set_num_threads(1)  # Tiny model; see tests/policies/conftest.py.
    progress = None if reports is None else (lambda step, metrics: reports.append((step, metrics)))
    return train(config, progress=progress, dataset_factory=lambda _: InMemoryChunkDataset())


def test_writes_loadable_checkpoint(tmp_path):
    reports: list = []

    path = _train(_config(tmp_path), reports)

    policy = load_checkpoint(path)
    config = json.loads((path / "config.json").read_text())
    assert path == tmp_path / "checkpoint"
    assert policy.config.chunk_size == CHUNK
    assert config["dataset_fingerprint"] == "in-memory-test-dataset"
    assert config["train_config"]["lr"] == 3e-3
    assert config["train_config"]["steps"] == 40


def test_progress_every_log_every(tmp_path):
    reports: list = []

    _train(_config(tmp_path, steps=25), reports)

    assert [step for step, _ in reports] == [10, 20, 25]
    assert {"loss", "l1", "lr", "grad_norm", "step_s", "samples_per_s"} <= set(reports[0][1])


def test_loss_falls(tmp_path):
    reports: list = []

    _train(_config(tmp_path, steps=60), reports)

    assert reports[-1][1]["loss"] < 0.6 * reports[0][1]["loss"], [m["loss"] for _, m in reports]


def test_same_seed_same_weights(tmp_path):
    first = _train(_config(tmp_path, steps=10, output=tmp_path / "a"))
    second = _train(_config(tmp_path, steps=10, output=tmp_path / "b"))

    assert checkpoint_sha256(first) == checkpoint_sha256(second)


def test_lr_defaults_to_policy_hint(tmp_path):
    path = _train(_config(tmp_path, steps=2, lr=None))

    config = json.loads((path / "config.json").read_text())
    assert config["train_config"]["lr"] == config["policy_config"]["optimizer_lr"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"policy_overrides": {"chunk_size": 5}}, "TrainConfig.chunk_size"),
    ],
)
def test_config_rejects_invalid(tmp_path, changes, message):
    with pytest.raises(SpecError, match=message):
        _config(tmp_path, **changes)


def test_config_rejects_unknown_device(tmp_path):
    with pytest.raises(SpecError, match="device 'gpu0' is invalid"):
        _config(tmp_path, device="gpu0")


def test_occupied_output_fails_before_training(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "notes.txt").write_text("keep me")
    reports: list = []

    with pytest.raises(CheckpointError, match="notes.txt"):
        _train(_config(tmp_path), reports)
    assert reports == []


def test_config_rejects_unknown_override(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'dim_model'"):
        _config(tmp_path, policy_overrides={"dim_modle": 64})


def test_config_rejects_unknown_policy(tmp_path):
    with pytest.raises(UnknownNameError, match="policy"):
        _config(tmp_path, policy="diffusion")
