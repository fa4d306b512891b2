"""DatasetReader on the real LeRobot v3.0 SO-101 dataset, and its errors on unusable folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dataset_helpers import record, set_read_only, snapshot

from robota.datasets import open_dataset
from robota.errors import DatasetError

SO101_LENGTHS = [383, 386, 379, 382, 90, 162]
WRIST = "observation.images.wrist"


def test_so101_metadata(so101: Path) -> None:
    reader = open_dataset(so101)
    assert reader.num_episodes == 6
    assert reader.num_frames == 1782
    assert reader.episode_lengths == SO101_LENGTHS
    assert reader.tasks == ["pick and place"]
    assert reader.fps == 30
    assert reader.spec is None
    assert reader.image_keys == [WRIST]
    assert reader.vector_keys == ["observation.state"]
    assert reader.image_shape(WRIST) == (360, 640, 3)
    assert reader.stats["action"]["mean"].shape == (6,)
    assert reader.stats[WRIST]["mean"].shape == (3, 1, 1)


def test_so101_episode_rows(so101: Path) -> None:
    episode = open_dataset(so101).episode(4)
    assert episode["observation.state"].shape == (90, 6)
    assert episode["observation.state"].dtype == np.float32
    assert episode["action"].shape == (90, 6)
    np.testing.assert_array_equal(episode["index"], np.arange(1530, 1620))
    assert episode["task"] == ["pick and place"] * 90
    assert episode[WRIST].shape == (90, 360, 640, 3)


def test_so101_frames_found_by_timestamp(so101: Path) -> None:
    """Frame k of episode 1 is frame 383 + k of the concatenated mp4, decoded in order."""
    reader = open_dataset(so101)
    requested = [0, 100, 385]
    decoded = reader.decode_images(1, WRIST, requested)
    assert decoded.shape == (3, 360, 640, 3)

    path = so101 / "videos" / WRIST / "chunk-000" / "file-000.mp4"
    sequential = {}
    with av.open(str(path)) as container:
        for position, frame in enumerate(container.decode(video=0)):
            if position - 383 in requested:
                sequential[position - 383] = frame.to_ndarray(format="rgb24")
            if position >= 383 + max(requested):
                break
    for row, k in enumerate(requested):
        np.testing.assert_array_equal(decoded[row], sequential[k])


@pytest.mark.slow
def test_so101_decodes_every_frame(so101: Path) -> None:
    # All 1782 AV1 frames at 360x640 decoded in 2.4 to 11 s on a shared 2-core CPU (PyAV 18
    # with dav1d), so this is `slow`. The default run decodes episode 4 whole instead.
    reader = open_dataset(so101)
    for index, length in enumerate(SO101_LENGTHS):
        assert reader.decode_images(index, WRIST).shape == (length, 360, 640, 3)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"not found.*robota record"):
        open_dataset(tmp_path / "nowhere")


def test_missing_info_json(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    with pytest.raises(DatasetError, match=r"meta/info.json is missing"):
        open_dataset(tmp_path)


def test_unsupported_version(tmp_path: Path, recorded: Path) -> None:
    copy = tmp_path / "old"
    shutil.copytree(recorded, copy)
    info = json.loads((copy / "meta/info.json").read_text())
    info["codebase_version"] = "v1.6"
    (copy / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"info.json has codebase_version 'v1.6'; robota reads v3.0 and v2.1\. Convert"):
        open_dataset(copy)


def test_episode_out_of_range(recorded: Path) -> None:
    with pytest.raises(DatasetError, match=r"episode 3 does not exist.*0..2"):
        open_dataset(recorded).episode(3)


def test_channel_first_shape_honours_names(tmp_path: Path, small_spec) -> None:
    root = record(tmp_path / "d", small_spec, [2])
    info = json.loads((root / "meta/info.json").read_text())
    info["features"][WRIST]["shape"] = [3, 32, 32]
    info["features"][WRIST]["names"] = ["channels", "height", "width"]
    (root / "meta/info.json").write_text(json.dumps(info))
    reader = open_dataset(root)
    assert reader.image_shape(WRIST) == (32, 32, 3)
    assert reader.episode(0)[WRIST].shape == (2, 32, 32, 3)


def test_reader_works_read_only(tmp_path: Path, small_spec) -> None:
    root = record(tmp_path / "d", small_spec, [3])
    before = snapshot(root)
    set_read_only(root, True)
    try:
        assert open_dataset(root).episode(0)["action"].shape == (3, 7)
    finally:
        set_read_only(root, False)
    assert snapshot(root) == before


def _png_bytes(image: np.ndarray) -> bytes:
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    packets = codec.encode(av.VideoFrame.from_ndarray(image, format="rgb24")) + codec.encode()
    return bytes(packets[0])


def test_image_feature_in_parquet(tmp_path: Path, small_spec) -> None:
    """A LeRobot `image` feature stores PNG bytes in the frame rows instead of a video."""
    root = record(tmp_path / "d", small_spec, [3])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 8, 12, 3), dtype=np.uint8)
    data_path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data_path)
    column = pa.array([{"bytes": _png_bytes(image), "path": None} for image in images])
    pq.write_table(table.append_column("observation.images.side", column), data_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.side"] = {
        "dtype": "image", "shape": [8, 12, 3], "names": ["height", "width", "channel"]
    }
    (root / "meta/info.json").write_text(json.dumps(info))

    episode = open_dataset(root).episode(0)
    np.testing.assert_array_equal(episode["observation.images.side"], images)
