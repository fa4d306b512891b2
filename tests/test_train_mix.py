"""Training on a weighted mix of datasets: entries, sampling frequencies, pooled statistics, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robota.datasets.stats import vector_stats
from robota.datasets.synthetic import write_random_dataset
from robota.datasets.torch_loader import ChunkDataset, ChunkMixture, MixtureSampler
from robota.errors import SpecError
from robota.policies import load_checkpoint
from robota.spec import ACTION, PANDA, make_arm_spec
from robota.train_cli import main
from robota.train_config import DatasetSource, parse_dataset_entry
from robota.train_data import mixture_weights
from test_train_helpers import write_tiny_config, write_tiny_dataset


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mix")
    first = write_tiny_dataset(root / "first", episodes=3, length=10, seed=0)
    second = write_tiny_dataset(root / "second", episodes=2, length=7, seed=1)
    return first, second


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "frames"


def test_entry_with_weight():
    assert parse_dataset_entry("runs/a:0.3") == DatasetSource(Path("runs/a"), 0.3)
    assert parse_dataset_entry("runs/a") == DatasetSource(Path("runs/a"), None)
    assert parse_dataset_entry({"path": "runs/a", "weight": 2}) == DatasetSource(Path("runs/a"), 2.0)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("runs/a:0", "positive"),
        ("runs/a:-1", "positive"),
        ("runs/a:inf", "positive"),
        ("runs/a:x3", "not a number"),
        ("runs/a:", "not a number"),
        (":0.3", "no path"),
    ],
)
def test_entry_rejects_bad_weight(entry, message):
    with pytest.raises(SpecError, match=message) as raised:
        parse_dataset_entry(entry)

    assert repr(entry) in str(raised.value)


def test_mix_weights_default_and_partial():
    unweighted = [DatasetSource(Path("a")), DatasetSource(Path("b"))]
    partial = [DatasetSource(Path("a")), DatasetSource(Path("b"), 0.3)]

    assert mixture_weights(unweighted, "frames") is None
    assert mixture_weights(unweighted, "equal") == [1.0, 1.0]
    assert mixture_weights(partial, "frames") == [1.0, 0.3]


def test_sampler_frequencies_follow_weights():
    sampler = MixtureSampler([50, 500], [0.8, 0.2], seed=3, num_samples=10_000)

    indices = np.fromiter(sampler, dtype=np.int64)
    share_first = float(np.mean(indices < 50))

    # The binomial standard deviation is 0.004, so 0.02 is five of them.
    assert abs(share_first - 0.8) < 0.02
    assert indices.min() >= 0
    assert indices.max() < 550


def test_sampler_hands_out_all_before_repeating():
    sampler = MixtureSampler([50, 500], [0.8, 0.2], seed=3, num_samples=10_000)

    indices = sampler.draw()
    counts_small = np.bincount(indices[indices < 50], minlength=50)
    counts_large = np.bincount(indices[indices >= 50] - 50, minlength=500)

    assert counts_small.max() - counts_small.min() <= 1
    assert counts_large.max() - counts_large.min() <= 1


def test_sampler_resumes_inside_epoch():
    sampler = MixtureSampler([5, 9], [1.0, 3.0], seed=0, num_samples=40)
    sampler.set_epoch(1)
    whole = list(sampler)
    sampler.set_epoch(1, skip=13)
    resumed = list(sampler)
    sampler.set_epoch(0)
    other_epoch = list(sampler)

    assert resumed == whole[13:]
    assert len(sampler) == 40
    assert other_epoch != whole


def test_pooled_stats_equal_concatenated_data(two_datasets, cache):
    parts = [ChunkDataset(root, chunk_size=2, cache_dir=cache) for root in two_datasets]
    mixture = ChunkMixture(parts, names=[str(root) for root in two_datasets])

    for key in ("observation.state", ACTION):
        frames = np.concatenate(
            [np.stack([part[i][key].numpy() for i in range(len(part))]) for part in parts]
        )
        if key == ACTION:
            frames = frames[:, 0]  # (frames, chunk, action_dim) -> the action of each frame
        expected = vector_stats(frames)
        for name in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(mixture.stats[key][name], expected[name], rtol=1e-5, atol=1e-6)
        assert mixture.stats[key]["count"] == [44]


def test_default_weights_follow_sample_counts(two_datasets, cache):
    parts = [ChunkDataset(root, chunk_size=2, cache_dir=cache) for root in two_datasets]

    mixture = ChunkMixture(parts)

    assert mixture.weights == pytest.approx([30 / 44, 14 / 44])
    assert mixture.spec == parts[0].spec


def test_mix_rejects_other_robot_cameras(two_datasets, cache, tmp_path):
    panda = write_random_dataset(
        tmp_path / "panda", make_arm_spec(PANDA, 10, {"wrist": (32, 32)}), episodes=1, length=6
    )
    parts = [ChunkDataset(root, chunk_size=2, cache_dir=cache) for root in (two_datasets[0], panda)]

    with pytest.raises(SpecError) as raised:
        ChunkMixture(parts, names=[str(two_datasets[0]), str(panda)])

    message = str(raised.value)
    assert str(two_datasets[0]) in message
    assert str(panda) in message
    assert "robot ur5e" in message
    assert "robot panda" in message
    assert "'observation.images.wrist'" in message


def test_train_cli_on_weighted_mix(two_datasets, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOTA_CACHE_DIR", str(tmp_path / "cache"))
    config = write_tiny_config(tmp_path / "tiny.toml", steps=4, checkpoint_every=0)
    first, second = two_datasets

    status = main([
        "train", "--config", str(config), "--dataset", str(first), "--dataset", f"{second}:0.3",
        "--output", str(tmp_path / "run"), "val_fraction=0.34",
    ])

    assert status == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    mix = saved["dataset_mix"]
    assert [entry["path"] for entry in mix] == [str(first), str(second)]
    assert [entry["weight"] for entry in mix] == pytest.approx([1 / 1.3, 0.3 / 1.3])
    assert all(len(entry["fingerprint"]) == 64 for entry in mix)
    assert saved["train_config"]["dataset"] == [str(first), f"{second}:0.3"]
    assert load_checkpoint(tmp_path / "run").config.chunk_size == 4


def test_train_cli_rejects_malformed_weight(two_datasets, tmp_path, capsys):
    status = main([
        "train", "--dataset", f"{two_datasets[0]}:heavy", "--dataset", str(two_datasets[1]),
        "--output", str(tmp_path / "run"),
    ])

    assert status == 2
    assert "is malformed" in capsys.readouterr().err
