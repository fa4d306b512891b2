"""LeRobot v2.1 datasets: reading them through DatasetReader and converting them to v3.0."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_helpers import record, write_v21

from robota.datasets import convert_v21_to_v30, open_dataset
from robota.datasets.torch_loader import ChunkDataset
from robota.datasets.v21 import V21DatasetReader
from robota.datasets.validate import validate
from robota.errors import DatasetError

NUMERIC = ("observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index")


@pytest.fixture(scope="module")
def v21(tmp_path_factory: pytest.TempPathFactory, recorded: Path) -> Path:
    return write_v21(recorded, tmp_path_factory.mktemp("v21") / "pick")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, v21: Path) -> Path:
    return convert_v21_to_v30(v21, tmp_path_factory.mktemp("v30") / "pick")


def test_v21_reader_matches_source(v21: Path, recorded: Path) -> None:
    reader = open_dataset(v21)
    source = open_dataset(recorded)
    assert isinstance(reader, V21DatasetReader)
    assert reader.episode_lengths == [12, 5, 9]
    assert reader.tasks == source.tasks
    for index in range(3):
        episode, expected = reader.episode(index), source.episode(index)
        for key in NUMERIC:
            np.testing.assert_array_equal(episode[key], expected[key], err_msg=key)
        assert episode["task"] == expected["task"]
        for key in source.video_keys:
            error = np.abs(episode[key].astype(np.int16) - expected[key]).mean()
            assert error < 3.0, key


def test_v21_stats_merged_from_episodes(v21: Path, recorded: Path) -> None:
    stats = open_dataset(v21).stats
    expected = open_dataset(recorded).stats["action"]
    np.testing.assert_allclose(stats["action"]["mean"], expected["mean"], rtol=1e-9)
    np.testing.assert_allclose(stats["action"]["std"], expected["std"], rtol=1e-6)
    np.testing.assert_array_equal(stats["action"]["min"], expected["min"])
    assert stats["action"]["count"].tolist() == [26]


def test_convert_round_trip_exact(converted: Path, v21: Path, recorded: Path) -> None:
    result = open_dataset(converted)
    source = open_dataset(v21)
    original = open_dataset(recorded)
    assert result.info["codebase_version"] == "v3.0"
    assert result.info["total_episodes"] == 3
    assert result.episode_lengths == [12, 5, 9]
    assert result.tasks == original.tasks
    for index in range(3):
        episode = result.episode(index)
        for key in NUMERIC:
            np.testing.assert_array_equal(episode[key], original.episode(index)[key], err_msg=key)
        for key in original.video_keys:
            # Packets are copied, so the frames equal the v2.1 frames bit for bit.
            np.testing.assert_array_equal(episode[key], source.decode_images(index, key), err_msg=key)


def test_convert_layout_and_stats(converted: Path, recorded: Path) -> None:
    files = sorted(p.relative_to(converted).as_posix() for p in converted.rglob("*") if p.is_file())
    assert files == [
        "data/chunk-000/file-000.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        "videos/observation.images.top/chunk-000/file-000.mp4",
        "videos/observation.images.wrist/chunk-000/file-000.mp4",
    ]
    stats = open_dataset(converted).stats
    expected = open_dataset(recorded).stats
    for name in ("mean", "std", "min", "max", "q01", "q99"):
        np.testing.assert_allclose(stats["action"][name], expected["action"][name], rtol=1e-9, err_msg=name)
    assert stats["observation.images.wrist"]["mean"].shape == (3, 1, 1)
    row = open_dataset(converted).episode_metadata(2)
    assert row["videos/observation.images.wrist/from_timestamp"] == pytest.approx(17 / 10)
    assert row["dataset_from_index"] == 17


def test_convert_rejects_non_empty_target(v21: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"not empty; choose a new folder"):
        convert_v21_to_v30(v21, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_convert_rejects_v30_source(recorded: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"v3.0 dataset, not v2.1"):
        convert_v21_to_v30(recorded, tmp_path / "out")


def test_v21_missing_video_names_file(v21: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(v21, copy)
    missing = copy / "videos/chunk-000/observation.images.top/episode_000001.mp4"
    missing.unlink()
    with pytest.raises(DatasetError, match=r"episode_000001.mp4 of the v2.1 dataset .* is missing"):
        convert_v21_to_v30(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DatasetError, match=r"video file .*episode_000001.mp4 of episode 1 is missing"):
        open_dataset(copy).episode(1)
    info = json.loads((copy / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1"


def test_validate_v21_and_converted(v21: Path, converted: Path) -> None:
    assert validate(v21) == []
    assert validate(converted) == []


def test_validate_v21_missing_data_file(v21: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(v21, tmp_path / "copy"))
    (copy / "data/chunk-000/episode_000002.parquet").unlink()
    problems = validate(copy)
    assert [(p.kind, p.episode, p.file) for p in problems] == [
        ("missing-file", 2, "data/chunk-000/episode_000002.parquet")
    ]


def test_chunk_dataset_reads_v21(v21: Path, recorded: Path, tmp_path: Path) -> None:
    item = ChunkDataset(v21, 4, cache_dir=tmp_path / "cache")[14]  # episode 1, frame 2
    expected = ChunkDataset(recorded, 4, cache_dir=tmp_path / "cache")[14]
    np.testing.assert_array_equal(item["action"].numpy(), expected["action"].numpy())
    assert item["action_is_pad"].tolist() == [False, False, False, True]
    assert item["observation.images.wrist"].shape == (32, 32, 3)


def test_convert_av1_without_reencoding(tmp_path: Path, small_spec) -> None:
    """LeRobot's default codec is AV1; episodes encoded one by one still join into one file."""
    source = write_v21(record(tmp_path / "v30", small_spec, [4, 3]), tmp_path / "v21", codec="libsvtav1")
    result = open_dataset(convert_v21_to_v30(source, tmp_path / "out"))
    assert result.features["observation.images.wrist"]["info"]["video.codec"] == "av1"
    assert len(list((tmp_path / "out/videos").rglob("*.mp4"))) == 1
    for index in range(2):
        np.testing.assert_array_equal(
            result.decode_images(index, "observation.images.wrist"),
            open_dataset(source).decode_images(index, "observation.images.wrist"),
        )
