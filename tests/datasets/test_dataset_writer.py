"""DatasetWriter: the LeRobot v3.0 files it writes and their round trip through the reader."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from robota.datasets import DatasetWriter, open_dataset
from robota.errors import DatasetError
from robota.spec import UR5E, make_arm_spec
from dataset_helpers import FPS, make_frame, record, smooth_image

INFO_KEYS = (
    "codebase_version", "robot_type", "fps", "total_episodes", "total_frames", "total_tasks",
    "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "data_path", "video_path",
    "splits", "features",
)
VIDEO_INFO_KEYS = (
    "video.height", "video.width", "video.codec", "video.pix_fmt", "video.fps", "video.channels",
    "has_audio",
)
STAT_KEYS = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")


def test_info_json_fields(recorded: Path, two_camera_spec) -> None:
    info = json.loads((recorded / "meta/info.json").read_text())
    for key in INFO_KEYS:
        assert key in info, key
    assert info["codebase_version"] == "v3.0"
    assert info["robot_type"] == "ur5e"
    assert info["fps"] == FPS
    assert info["total_episodes"] == 3
    assert info["total_frames"] == 26
    assert info["total_tasks"] == 2
    assert info["splits"] == {"train": "0:3"}
    assert info["robota"]["spec"] == two_camera_spec.to_dict()
    assert info["robota"]["episode_metadata_keys"] == ["seed"]


def test_info_features(recorded: Path) -> None:
    features = json.loads((recorded / "meta/info.json").read_text())["features"]
    top = features["observation.images.top"]
    assert top["dtype"] == "video"
    assert top["shape"] == [24, 40, 3]
    assert top["names"] == ["height", "width", "channels"]
    for key in VIDEO_INFO_KEYS:
        assert key in top["info"], key
    assert top["info"]["video.codec"] == "h264"
    assert top["info"]["video.pix_fmt"] == "yuv420p"
    assert (top["info"]["video.height"], top["info"]["video.width"]) == (24, 40)
    assert features["observation.state"]["shape"] == [7]
    assert features["observation.state"]["names"][-1] == "gripper"
    assert features["action"]["dtype"] == "float32"
    assert features["task_index"] == {"dtype": "int64", "shape": [1], "names": None}
    assert "task" not in features


def test_stats_json_keys(recorded: Path) -> None:
    stats = json.loads((recorded / "meta/stats.json").read_text())
    for key in ("observation.state", "action", "observation.images.wrist", "timestamp", "index"):
        assert set(stats[key]) == set(STAT_KEYS), key
    assert np.shape(stats["observation.images.wrist"]["mean"]) == (3, 1, 1)
    assert stats["action"]["count"] == [26]


def test_stats_values(recorded: Path) -> None:
    reader = open_dataset(recorded)
    actions = np.concatenate([reader.episode(i)["action"] for i in range(3)])
    stats = reader.stats["action"]
    np.testing.assert_allclose(stats["mean"], actions.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["q50"], np.quantile(actions, 0.5, axis=0), rtol=1e-6)
    image_stats = reader.stats["observation.images.wrist"]
    assert 0.0 <= image_stats["min"].min() <= image_stats["max"].max() <= 1.0


def test_episode_table(recorded: Path) -> None:
    rows = pq.read_table(recorded / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["length"] for r in rows] == [12, 5, 9]
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 12), (12, 17), (17, 26)]
    assert [r["tasks"] for r in rows] == [["pick the part"], ["place it"], ["pick the part"]]
    assert [r["seed"] for r in rows] == [100, 101, 102]
    for key in ("observation.images.wrist", "observation.images.top"):
        starts = [r[f"videos/{key}/from_timestamp"] for r in rows]
        ends = [r[f"videos/{key}/to_timestamp"] for r in rows]
        assert starts == pytest.approx([0.0, 1.2, 1.7])
        assert ends == pytest.approx([1.2, 1.7, 2.6])
    assert "stats/action/mean" in rows[0]


def test_frame_rows(recorded: Path) -> None:
    table = pq.read_table(recorded / "data/chunk-000/file-000.parquet")
    assert table.num_rows == 26
    assert table["index"].to_pylist() == list(range(26))
    assert table["frame_index"].to_pylist()[12:17] == [0, 1, 2, 3, 4]
    assert table["task_index"].to_pylist()[11:13] == [0, 1]
    assert table["timestamp"].to_pylist()[13] == pytest.approx(0.1)
    assert str(table.schema.field("timestamp").type) == "float"
    assert "observation.images.wrist" not in table.column_names


def test_tasks_parquet_index(recorded: Path) -> None:
    table = pq.read_table(recorded / "meta/tasks.parquet")
    assert table["task"].to_pylist() == ["pick the part", "place it"]
    assert table["task_index"].to_pylist() == [0, 1]
    pandas_metadata = json.loads(table.schema.metadata[b"pandas"])
    assert pandas_metadata["index_columns"] == ["task"]


def test_round_trip_numeric_exact(recorded: Path, two_camera_spec) -> None:
    reader = open_dataset(recorded)
    episode = reader.episode(1)
    expected = [make_frame(two_camera_spec, 1, step, "place it") for step in range(5)]
    for key in two_camera_spec.vector_keys + ["action"]:
        np.testing.assert_array_equal(episode[key], np.stack([f[key] for f in expected]))
    assert episode["task"] == ["place it"] * 5
    np.testing.assert_array_equal(episode["frame_index"], np.arange(5))
    np.testing.assert_array_equal(episode["index"], np.arange(12, 17))


def test_round_trip_video_within_codec_tolerance(recorded: Path) -> None:
    reader = open_dataset(recorded)
    for index, length in enumerate([12, 5, 9]):
        episode = reader.episode(index)
        for key, (height, width) in (("observation.images.wrist", (32, 32)), ("observation.images.top", (24, 40))):
            decoded = episode[key]
            assert decoded.shape == (length, height, width, 3)
            assert decoded.dtype == np.uint8
            expected = np.stack([smooth_image(height, width, step + 7 * index) for step in range(length)])
            error = np.abs(decoded.astype(np.int16) - expected).mean()
            assert error < 3.0, f"{key} episode {index}: mean abs error {error:.2f}"


def test_episode_metadata(recorded: Path) -> None:
    metadata = open_dataset(recorded).episode_metadata(2)
    assert metadata["seed"] == 102
    assert metadata["length"] == 9
    assert not any(key.startswith("stats/") for key in metadata)


def test_discard_episode(tmp_path: Path, small_spec) -> None:
    with DatasetWriter(tmp_path / "d", small_spec, robot_type="ur5e") as writer:
        for step in range(4):
            writer.add_frame(make_frame(small_spec, 0, step))
        writer.discard_episode()
        for step in range(3):
            writer.add_frame(make_frame(small_spec, 1, step))
        writer.save_episode()
    reader = open_dataset(tmp_path / "d")
    assert reader.episode_lengths == [3]
    np.testing.assert_array_equal(reader.episode(0)["action"][:, 0], [1000, 1001, 1002])


def test_new_file_past_size_limit(tmp_path: Path, small_spec) -> None:
    root = record(tmp_path / "d", small_spec, [4, 6, 3], data_files_size_in_mb=0, video_files_size_in_mb=0)
    assert len(list((root / "data").glob("*/*.parquet"))) == 3
    assert len(list((root / "videos/observation.images.wrist").glob("*/*.mp4"))) == 3
    reader = open_dataset(root)
    assert reader.episode_metadata(2)["data/file_index"] == 2
    assert reader.episode_metadata(2)["videos/observation.images.wrist/from_timestamp"] == 0.0
    episode = reader.episode(1)
    assert episode["observation.images.wrist"].shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(episode["index"], np.arange(4, 10))


def test_existing_folder_rejected(tmp_path: Path, small_spec) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(tmp_path / "d", small_spec, robot_type="ur5e")
    assert (tmp_path / "d" / "notes.txt").read_text() == "keep me"


def test_bad_frames_rejected(tmp_path: Path, small_spec) -> None:
    writer = DatasetWriter(tmp_path / "d", small_spec, robot_type="ur5e")
    frame = make_frame(small_spec, 0, 0)
    with pytest.raises(DatasetError, match="missing \\['action'\\]"):
        writer.add_frame({k: v for k, v in frame.items() if k != "action"})
    with pytest.raises(DatasetError, match="observation.images.wrist.*uint8"):
        writer.add_frame({**frame, "observation.images.wrist": frame["observation.images.wrist"] / 255.0})
    with pytest.raises(DatasetError, match="'observation.state' has shape \\(6,\\), expected \\(7,\\)"):
        writer.add_frame({**frame, "observation.state": np.zeros(6)})
    with pytest.raises(DatasetError, match="NaN"):
        writer.add_frame({**frame, "action": np.full(7, np.nan)})
    with pytest.raises(DatasetError, match="empty episode"):
        writer.save_episode()
    with pytest.raises(DatasetError, match="no episode was saved"):
        writer.close()
    assert not (tmp_path / "d").exists()


def test_metadata_validated(tmp_path: Path, small_spec) -> None:
    with DatasetWriter(tmp_path / "d", small_spec, robot_type="ur5e") as writer:
        writer.add_frame(make_frame(small_spec, 0, 0))
        with pytest.raises(DatasetError, match="reserved"):
            writer.save_episode({"length": 3})
        with pytest.raises(DatasetError, match="type dict"):
            writer.save_episode({"pose": {"x": 1}})
        writer.save_episode({"seed": np.int64(5), "success": True})
        writer.add_frame(make_frame(small_spec, 1, 0))
        with pytest.raises(DatasetError, match="one type per key"):
            writer.save_episode({"seed": "five"})
        writer.save_episode({"seed": 6})
    assert open_dataset(tmp_path / "d").episode_metadata(1)["success"] is None


def test_error_in_block_keeps_saved_episodes(tmp_path: Path, small_spec) -> None:
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "d", small_spec, robot_type="ur5e") as writer:
            writer.add_frame(make_frame(small_spec, 0, 0))
            writer.save_episode()
            writer.add_frame(make_frame(small_spec, 1, 0))
            raise RuntimeError("simulator crashed")
    assert open_dataset(tmp_path / "d").episode_lengths == [1]


def test_error_before_any_episode_leaves_nothing(tmp_path: Path, small_spec) -> None:
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "d", small_spec, robot_type="ur5e") as writer:
            writer.add_frame(make_frame(small_spec, 0, 0))
            raise RuntimeError("simulator crashed")
    assert not (tmp_path / "d").exists()


def test_resume_after_crash(tmp_path: Path, small_spec, caplog) -> None:
    root = tmp_path / "d"
    crashed = DatasetWriter(root, small_spec, robot_type="ur5e")
    for step in range(3):
        crashed.add_frame(make_frame(small_spec, 0, step))
    crashed.save_episode({"seed": 1})
    crashed.add_frame(make_frame(small_spec, 1, 0))  # the process dies here, never closing
    with pytest.raises(DatasetError, match="another process is recording"):
        open_dataset(root)
    # What the kernel does when the recording process dies: its open files are closed.
    crashed._lock.close()
    crashed._frame_counter.close()

    with caplog.at_level(logging.WARNING, logger="robota.datasets"):
        writer = DatasetWriter(root, small_spec, robot_type="ur5e", resume=True)
    assert "dropped 1 unsaved frames" in caplog.text
    with writer:
        assert writer.num_episodes == 1
        for step in range(2):
            writer.add_frame(make_frame(small_spec, 1, step))
        writer.save_episode({"seed": 2})
    reader = open_dataset(root)
    assert reader.episode_lengths == [3, 2]
    assert [reader.episode_metadata(i)["seed"] for i in range(2)] == [1, 2]
    assert reader.episode(1)["observation.images.wrist"].shape == (2, 32, 32, 3)
    assert not (root / ".recording").exists()


def test_odd_image_size_rejected(tmp_path: Path) -> None:
    spec = make_arm_spec(UR5E, FPS, {"wrist": (31, 32)})
    with pytest.raises(DatasetError, match="31x32.*even height and width"):
        DatasetWriter(tmp_path / "d", spec, robot_type="ur5e")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(("codec", "stream_codec"), [("libx264", "h264"), ("libsvtav1", "av1")])
def test_round_trip_per_codec(tmp_path: Path, small_spec, codec: str, stream_codec: str) -> None:
    root = record(tmp_path / "d", small_spec, [6, 4], video_codec=codec)
    reader = open_dataset(root)
    assert reader.features["observation.images.wrist"]["info"]["video.codec"] == stream_codec
    decoded = reader.episode(1)["observation.images.wrist"]
    expected = np.stack([smooth_image(32, 32, step + 7) for step in range(4)])
    assert np.abs(decoded.astype(np.int16) - expected).mean() < 3.0


def test_invalid_encoder_options(tmp_path: Path, small_spec) -> None:
    with pytest.raises(DatasetError, match="libx264.*video_options"):
        with DatasetWriter(tmp_path / "d", small_spec, robot_type="ur5e", video_options={"preset": "warp"}) as writer:
            writer.add_frame(make_frame(small_spec, 0, 0))
    assert not (tmp_path / "d").exists()


def test_flipped_image_view_accepted(tmp_path: Path, small_spec) -> None:
    """Renderers often return images flipped by a negative-stride view."""
    frame = make_frame(small_spec, 0, 0)
    flipped = frame["observation.images.wrist"][::-1]
    with DatasetWriter(tmp_path / "d", small_spec, robot_type="ur5e") as writer:
        writer.add_frame({**frame, "observation.images.wrist": flipped})
        writer.save_episode()
    decoded = open_dataset(tmp_path / "d").episode(0)["observation.images.wrist"][0]
    assert np.abs(decoded.astype(np.int16) - flipped).mean() < 3.0


def test_non_numeric_value_rejected(tmp_path: Path, small_spec) -> None:
    writer = DatasetWriter(tmp_path / "d", small_spec, robot_type="ur5e")
    with pytest.raises(DatasetError, match="'action' has value 'open'"):
        writer.add_frame({**make_frame(small_spec, 0, 0), "action": "open"})
    writer.discard_episode()
