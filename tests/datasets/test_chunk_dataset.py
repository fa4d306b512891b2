"""ChunkDataset: action chunks with end-of-episode padding, and the decoded-frame cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_helpers import make_frame, record, set_read_only, smooth_image, snapshot
from torch.utils.data import DataLoader

from robota.datasets import fingerprint, open_dataset
from robota.datasets.torch_loader import ChunkDataset
from robota.errors import DatasetError
from robota.spec import encode_instruction

WRIST = "observation.images.wrist"


@pytest.fixture()
def read_only_dataset(tmp_path: Path, small_spec) -> Path:
    """Episodes of 6 and 4 frames in a folder that is read-only during the test."""
    root = record(tmp_path / "data" / "d", small_spec, [6, 4], tasks=["pick", "place"])
    set_read_only(root, True)
    yield root
    set_read_only(root, False)


def test_item_keys_and_dtypes(read_only_dataset: Path, tmp_path: Path, small_spec) -> None:
    item = ChunkDataset(read_only_dataset, 3, cache_dir=tmp_path / "cache")[0]
    assert item[WRIST].dtype == torch.uint8
    assert item[WRIST].shape == (32, 32, 3)
    for key in small_spec.vector_keys:
        assert item[key].dtype == torch.float32, key
    assert item["task_tokens"].dtype == torch.int64
    assert item["task_tokens"].shape == (64,)
    assert item["action"].shape == (3, 7)
    assert item["action_is_pad"].dtype == torch.bool


def test_chunk_padding_at_episode_end(read_only_dataset: Path, tmp_path: Path, small_spec) -> None:
    dataset = ChunkDataset(read_only_dataset, 4, cache_dir=tmp_path / "cache")
    assert len(dataset) == 10

    item = dataset[4]  # frame 4 of episode 0, which has 6 frames
    actions = np.stack([make_frame(small_spec, 0, step)["action"] for step in (4, 5, 5, 5)])
    np.testing.assert_array_equal(item["action"].numpy(), actions)
    assert item["action_is_pad"].tolist() == [False, False, True, True]

    item = dataset[6]  # first frame of episode 1: the chunk stays inside episode 1
    np.testing.assert_array_equal(item["action"][:, 0].numpy(), [1000, 1001, 1002, 1003])
    assert not item["action_is_pad"].any()
    np.testing.assert_array_equal(item["task_tokens"].numpy(), encode_instruction("place"))


def test_cached_frames_match_video(read_only_dataset: Path, tmp_path: Path) -> None:
    dataset = ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache")
    decoded = open_dataset(read_only_dataset).decode_images(1, WRIST)
    np.testing.assert_array_equal(dataset[8][WRIST].numpy(), decoded[2])
    error = np.abs(decoded[2].astype(np.int16) - smooth_image(32, 32, 2 + 7)).mean()
    assert error < 3.0


def test_cache_outside_read_only_dataset(read_only_dataset: Path, tmp_path: Path) -> None:
    before = snapshot(read_only_dataset)
    dataset = ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache")
    assert dataset.cache_path == tmp_path / "cache" / fingerprint(read_only_dataset)
    assert sorted(p.name for p in (dataset.cache_path / WRIST).iterdir()) == [
        "episode_000000.npy",
        "episode_000001.npy",
    ]
    assert snapshot(read_only_dataset) == before


def test_cache_reused_without_decoding(read_only_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("video decoded although the cache is complete")

    monkeypatch.setattr("robota.datasets.reader.DatasetReader.decode_images", fail)
    assert ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache")[9][WRIST].shape == (32, 32, 3)


def test_cache_dir_from_environment(read_only_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ROBOTA_CACHE_DIR", str(tmp_path / "env-cache"))
    dataset = ChunkDataset(read_only_dataset, 2)
    assert dataset.cache_path.parent == tmp_path / "env-cache" / "frames"


def test_cache_dir_inside_dataset_rejected(recorded: Path) -> None:
    with pytest.raises(DatasetError, match="inside the dataset folder"):
        ChunkDataset(recorded, 2, cache_dir=recorded / "cache")


def test_episode_selection(read_only_dataset: Path, tmp_path: Path) -> None:
    dataset = ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache", episodes=[1])
    assert len(dataset) == 4
    assert dataset[0]["action"][0, 0].item() == 1000
    with pytest.raises(DatasetError, match="episode 2 does not exist"):
        ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache", episodes=[2])


def test_dataloader_with_workers(read_only_dataset: Path, tmp_path: Path) -> None:
    dataset = ChunkDataset(read_only_dataset, 3, cache_dir=tmp_path / "cache")
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(len(batch["action"]) for batch in batches) == 10
    assert batches[0][WRIST].shape == (4, 32, 32, 3)
    assert batches[0]["action"].shape == (4, 3, 7)


def test_passthrough_attributes(read_only_dataset: Path, tmp_path: Path, small_spec) -> None:
    dataset = ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache")
    assert dataset.spec == small_spec
    assert set(dataset.stats["action"]) >= {"mean", "std", "q01", "q99"}
    assert dataset.fingerprint == fingerprint(read_only_dataset)


def test_so101_subset(so101: Path, tmp_path: Path) -> None:
    dataset = ChunkDataset(so101, 10, cache_dir=tmp_path / "cache", episodes=[4])
    assert len(dataset) == 90
    item = dataset[85]
    assert item[WRIST].shape == (360, 640, 3)
    assert item["observation.state"].shape == (6,)
    assert item["action"].shape == (10, 6)
    assert item["action_is_pad"].tolist() == [False] * 5 + [True] * 5
    assert dataset.spec is None


def test_corrupt_cache_file_rebuilt(read_only_dataset: Path, tmp_path: Path) -> None:
    dataset = ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache")
    cached = dataset.cache_path / WRIST / "episode_000001.npy"
    cached.write_bytes(cached.read_bytes()[:100])
    rebuilt = ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(rebuilt[9][WRIST].numpy(), dataset[9][WRIST].numpy())
    assert np.load(cached).shape == (4, 32, 32, 3)


def test_observation_history_padding(read_only_dataset: Path, tmp_path: Path, small_spec) -> None:
    dataset = ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache", n_obs_steps=3)
    single = ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache")

    item = dataset[1]  # frame 1 of episode 0: the history starts one frame before the episode
    states = np.stack([make_frame(small_spec, 0, step)["observation.state"] for step in (0, 0, 1)])
    np.testing.assert_array_equal(item["observation.state"].numpy(), states)
    assert item["observation_is_pad"].tolist() == [True, False, False]
    assert item[WRIST].shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(item[WRIST][0].numpy(), single[0][WRIST].numpy())
    np.testing.assert_array_equal(item[WRIST][2].numpy(), single[1][WRIST].numpy())
    np.testing.assert_array_equal(item["action"].numpy(), single[1]["action"].numpy())

    item = dataset[7]  # frame 1 of episode 1: the history stays inside episode 1
    np.testing.assert_array_equal(item["observation.state"][:, 0].numpy(), [1000, 1000, 1001])
    assert item["observation_is_pad"].tolist() == [True, False, False]
    assert not dataset[9]["observation_is_pad"].any()


def test_single_step_contract_unchanged(read_only_dataset: Path, tmp_path: Path) -> None:
    item = ChunkDataset(read_only_dataset, 2, cache_dir=tmp_path / "cache", n_obs_steps=1)[3]
    assert "observation_is_pad" not in item
    assert item["observation.state"].shape == (7,)
    assert item[WRIST].shape == (32, 32, 3)


def test_history_with_two_workers(read_only_dataset: Path, tmp_path: Path) -> None:
    dataset = ChunkDataset(read_only_dataset, 3, cache_dir=tmp_path / "cache", n_obs_steps=2)
    in_workers = list(DataLoader(dataset, batch_size=4, num_workers=2, shuffle=False))
    in_process = list(DataLoader(dataset, batch_size=4, num_workers=0, shuffle=False))
    assert in_workers[0][WRIST].shape == (4, 2, 32, 32, 3)
    assert in_workers[0]["observation_is_pad"].shape == (4, 2)
    for batch, expected in zip(in_workers, in_process, strict=True):
        for key in expected:
            torch.testing.assert_close(batch[key], expected[key], msg=key)


def test_fingerprint_reused_until_a_file_changes(recorded: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    root = Path(shutil.copytree(recorded, tmp_path / "copy"))
    first = ChunkDataset(root, 2, cache_dir=tmp_path / "cache").fingerprint
    assert first == fingerprint(root)

    def fail(*args, **kwargs):
        raise AssertionError("fingerprint recomputed although no file changed")

    monkeypatch.setattr("robota.datasets.summary.fingerprint", fail)
    assert ChunkDataset(root, 2, cache_dir=tmp_path / "cache").fingerprint == first
    monkeypatch.undo()

    stats = root / "meta/stats.json"
    stats.write_text(stats.read_text().replace("[", "[ ", 1))  # same data, other bytes
    changed = ChunkDataset(root, 2, cache_dir=tmp_path / "cache").fingerprint
    assert changed != first
    assert changed == fingerprint(root)
