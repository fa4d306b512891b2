"""Damaged dataset files raise DatasetError naming the file and the fix."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from robota.datasets import open_dataset
from robota.datasets.torch_loader import ChunkDataset
from robota.errors import DatasetError

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
WRIST_VIDEO = "videos/observation.images.wrist/chunk-000/file-000.mp4"


@pytest.fixture()
def copy(tmp_path: Path, recorded: Path) -> Path:
    return Path(shutil.copytree(recorded, tmp_path / "copy"))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_data_parquet(copy: Path, tmp_path: Path) -> None:
    truncate(copy / DATA)
    expected = rf"cannot read {re.escape(str(copy / DATA))}: .* damaged or truncated: copy it again"
    with pytest.raises(DatasetError, match=expected):
        open_dataset(copy).episode(0)
    with pytest.raises(DatasetError, match=expected):
        ChunkDataset(copy, 2, cache_dir=tmp_path / "cache")


def test_truncated_episode_table(copy: Path) -> None:
    truncate(copy / EPISODES)
    with pytest.raises(DatasetError, match=rf"cannot read {re.escape(str(copy / EPISODES))}: .*copy it again"):
        open_dataset(copy)


def test_missing_video(copy: Path, tmp_path: Path) -> None:
    (copy / WRIST_VIDEO).unlink()
    expected = rf"video file {re.escape(str(copy / WRIST_VIDEO))} of episode 0 is missing\. Copy"
    with pytest.raises(DatasetError, match=expected):
        open_dataset(copy).episode(0)
    with pytest.raises(DatasetError, match=expected):
        ChunkDataset(copy, 2, cache_dir=tmp_path / "cache")


def test_unknown_codebase_version(copy: Path) -> None:
    info = json.loads((copy / "meta/info.json").read_text())
    info["codebase_version"] = "v4.2"
    (copy / "meta/info.json").write_text(json.dumps(info))
    expected = (
        rf"{re.escape(str(copy / 'meta/info.json'))} has codebase_version 'v4.2'; robota reads "
        r"v3.0 and v2.1\. Convert the dataset to v3.0"
    )
    with pytest.raises(DatasetError, match=expected):
        open_dataset(copy)


def test_info_json_not_json(copy: Path) -> None:
    (copy / "meta/info.json").write_text("{ truncated")
    with pytest.raises(DatasetError, match=r"cannot read .*meta/info.json"):
        open_dataset(copy)
