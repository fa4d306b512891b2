"""train() features in one process: run folder, metrics, plots, accumulation, average, resume checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from robota.errors import CheckpointError
from robota.plot import plot_run
from robota.policies import load_checkpoint
from robota.train import train
from robota.train_cli import main
from robota.train_state import best_checkpoint, list_step_folders, load_training_state
from robota.spec import encode_instruction
from test_train import InMemoryChunkDataset, _config


def _train(config, reports=None):
    torch.set_num_threads(1)
    progress = None if reports is None else (lambda step, metrics: reports.append((step, metrics)))
    return train(config, progress=progress, dataset_factory=lambda _: InMemoryChunkDataset())


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("features")
    config = _config(
        tmp_path, output=tmp_path / "run", steps=20, log_every=5, checkpoint_every=5,
        keep_last=1, val_fraction=0.25, tensorboard=True,
    )
    return _train(config)


def test_run_folder_layout(run_folder):
    names = {path.name for path in run_folder.iterdir()}

    assert {"config.json", "model.safetensors", "stats.json", "train_config.toml", "metrics.csv", "checkpoints"} <= names
    assert load_checkpoint(run_folder).config.chunk_size == 4
    assert "ema_decay" not in (run_folder / "train_config.toml").read_text()


def test_keeps_last_and_best(run_folder):
    steps = [step for step, _ in list_step_folders(run_folder)]
    best = best_checkpoint(run_folder)
    losses = {
        int(folder.name[5:]): json.loads((folder / "trainer_state.json").read_text())["val_loss"]
        for _, folder in list_step_folders(run_folder)
    }

    assert steps[-1] == 20
    assert len(steps) <= 2
    assert best is not None
    assert losses[int(best.name[5:])] == min(losses.values())


def test_state_holds_every_part(run_folder):
    state = load_training_state(list_step_folders(run_folder)[-1][1])

    assert state["step"] == 20
    assert {"model", "optimizer", "scheduler", "average", "scaler", "rng", "epoch", "batches_done"} <= set(state)
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"}


def test_metrics_csv_columns(run_folder):
    with (run_folder / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    training = [row for row in rows if row["loss"]]
    validation = [row for row in rows if row["val_loss"]]

    assert [int(row["step"]) for row in training] == [5, 10, 15, 20]
    assert [int(row["step"]) for row in validation] == [5, 10, 15, 20]
    for column in ("l1", "lr", "grad_norm", "data_s", "update_s", "samples_per_s", "data_share"):
        assert training[0][column], column


def test_tensorboard_events_written(run_folder):
    pytest.importorskip("tensorboard")

    events = list((run_folder / "tensorboard").glob("events.out.tfevents.*"))

    assert events
    assert events[0].stat().st_size > 0


def test_plot_writes_png(run_folder, tmp_path):
    pytest.importorskip("matplotlib")

    path = plot_run(run_folder, tmp_path / "curves.png")

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_command_writes_curves(run_folder, capsys):
    pytest.importorskip("matplotlib")

    status = main(["plot", str(run_folder)])

    assert status == 0
    assert (run_folder / "curves.png").is_file()
    assert "curves.png" in capsys.readouterr().out


def test_plot_without_metrics_fails(tmp_path, capsys):
    status = main(["plot", str(tmp_path)])

    assert status == 2
    assert "metrics.csv not found" in capsys.readouterr().err


def test_accumulation_matches_larger_batch(tmp_path):
    large: list = []
    accumulated: list = []

    _train(_config(tmp_path, output=tmp_path / "large", steps=3, batch_size=8, log_every=1), large)
    _train(
        _config(
            tmp_path, output=tmp_path / "acc", steps=3, batch_size=4, grad_accum_steps=2,
            lr_scaling="none", log_every=1,
        ),
        accumulated,
    )

    # Same samples per step, so the same gradient; Adam turns rounding in near-zero gradient
    # elements into full-size updates, so later steps agree only roughly.
    assert accumulated[0][1]["grad_norm"] == pytest.approx(large[0][1]["grad_norm"], rel=1e-5)
    assert accumulated[0][1]["loss"] == pytest.approx(large[0][1]["loss"], rel=1e-6)
    assert accumulated[2][1]["loss"] == pytest.approx(large[2][1]["loss"], rel=1e-2)


def test_average_differs_from_last_weights(tmp_path):
    plain = _train(_config(tmp_path, output=tmp_path / "plain", steps=10))
    averaged = _train(_config(tmp_path, output=tmp_path / "ema", steps=10, ema_decay=0.9))

    differing = [name for name, t in _weights(plain).items() if not torch.equal(t, _weights(averaged)[name])]

    assert differing
    assert json.loads((averaged / "config.json").read_text())["train_run"]["ema"] is True


def test_existing_run_needs_resume(run_folder, tmp_path):
    with pytest.raises(CheckpointError, match="pass --resume"):
        _train(_config(tmp_path, output=run_folder, steps=20, checkpoint_every=5))


def test_resume_rejects_changed_batch_size(run_folder, tmp_path):
    with pytest.raises(CheckpointError, match="batch_size"):
        _train(_config(tmp_path, output=run_folder, steps=25, batch_size=4, resume=True))


def test_resume_after_end_rewrites_final(run_folder, tmp_path):
    before = _weights(run_folder)

    _train(_config(tmp_path, output=run_folder, steps=20, log_every=5, checkpoint_every=5,
                   keep_last=1, val_fraction=0.25, resume=True))

    for name, tensor in before.items():
        assert torch.equal(_weights(run_folder)[name], tensor), name


class TwinSpecDataset(torch.utils.data.Dataset):
    """Random samples in the pick-place twin's spec with 16x16 cameras, so rollouts can run."""

    fingerprint = "twin-spec-test-dataset"

    def __init__(self, n_samples: int = 16):
        from robota.spec import UR5E, make_arm_spec
        from test_train import CHUNK

        self.spec = make_arm_spec(UR5E, 10, {"wrist": (16, 16), "overhead": (16, 16)})
        generator = torch.Generator().manual_seed(0)
        self.samples = []
        for _ in range(n_samples):
            sample = {key: torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=generator) for key in self.spec.image_keys}
            for key in self.spec.vector_keys:
                sample[key] = torch.randn(self.spec.features[key].shape, generator=generator)
            sample["task_tokens"] = torch.from_numpy(encode_instruction("pick the part"))
            sample["action"] = torch.randn(CHUNK, self.spec.features["action"].shape[0], generator=generator)
            sample["action_is_pad"] = torch.zeros(CHUNK, dtype=torch.bool)
            self.samples.append(sample)
        self.stats = {key: {"mean": [[[0.5]]] * 3, "std": [[[0.3]]] * 3} for key in self.spec.image_keys}
        for key in [*self.spec.vector_keys, "action"]:
            dim = self.spec.features[key].shape[0]
            self.stats[key] = {"mean": [0.0] * dim, "std": [1.0] * dim, "min": [-1.0] * dim, "max": [1.0] * dim}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]


@pytest.mark.slow
def test_twin_evaluation_records_success_rate(tmp_path, monkeypatch):
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)  # An unstable rollout of random weights writes MUJOCO_LOG.TXT here.
    torch.set_num_threads(1)
    config = _config(tmp_path, output=tmp_path / "run", steps=4, log_every=2, eval_every=4, eval_episodes=1)

    train(config, dataset_factory=lambda _: TwinSpecDataset())

    with (tmp_path / "run" / "metrics.csv").open() as file:
        rates = [row["eval_success_rate"] for row in csv.DictReader(file) if row.get("eval_success_rate")]
    assert len(rates) == 1
    assert 0.0 <= float(rates[0]) <= 1.0


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_mixed_precision_on_gpu(tmp_path, mode):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    reports: list = []

    path = _train(_config(tmp_path, device="cuda", mixed_precision=mode, steps=6, log_every=3), reports)

    assert json.loads((path / "config.json").read_text())["train_run"]["mixed_precision"] == mode
    assert all(torch.isfinite(torch.tensor(metrics["loss"])) for _, metrics in reports)
    assert load_checkpoint(path).config.chunk_size == 4
