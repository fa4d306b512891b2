"""validate(): each kind of damage is reported with its episode, frame and file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robota.datasets.validate import Problem, validate

DATA = "data/chunk-000/file-000.parquet"
WRIST_VIDEO = "videos/observation.images.wrist/chunk-000/file-000.mp4"
TOP_VIDEO = "videos/observation.images.top/chunk-000/file-000.mp4"


@pytest.fixture()
def copy(tmp_path: Path, recorded: Path) -> Path:
    """A writable copy of the recorded dataset: episodes of 12, 5 and 9 frames at 10 fps."""
    return Path(shutil.copytree(recorded, tmp_path / "copy"))


def set_value(root: Path, key: str, row: int, value) -> None:
    """Overwrite one value of the data file's column `key` at global row `row`."""
    path = root / DATA
    table = pq.read_table(path)
    column = table[key].combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        values = column.flatten().to_numpy().copy()
        width = column.type.list_size
        values[row * width:(row + 1) * width] = value
        array = pa.FixedSizeListArray.from_arrays(pa.array(values), width)
    else:
        values = column.to_numpy().copy()
        values[row] = value
        array = pa.array(values)
    table = table.set_column(table.schema.get_field_index(key), key, array)
    pq.write_table(table, path)


def only(problems: list[Problem], kind: str) -> list[Problem]:
    return [p for p in problems if p.kind == kind]


def test_clean_dataset_has_no_problems(recorded: Path) -> None:
    assert validate(recorded) == []


def test_timestamp_backwards(copy: Path) -> None:
    set_value(copy, "timestamp", 12 + 3, 0.1)  # episode 1, frame 3: 0.1 s after 0.2 s
    problems = only(validate(copy), "timestamp")
    assert problems[0].episode == 1
    assert problems[0].frame == 3
    assert problems[0].file == DATA
    assert "does not increase" in problems[0].message


def test_timestamp_breaks_fps(copy: Path) -> None:
    set_value(copy, "timestamp", 17 + 4, 0.45)  # episode 2, frame 4: a step of 0.15 s at 10 fps
    problems = validate(copy)
    assert [(p.kind, p.episode, p.frame) for p in problems] == [
        ("timestamp", 2, 4),
        ("missing-frames", 2, 4),  # no frame of either camera is shown at 0.45 s
        ("missing-frames", 2, 4),
    ]
    assert "breaks 10 fps" in problems[0].message
    assert str(problems[0]).startswith(f"{DATA}, episode 2, frame 4, timestamp: timestamp: step of 0.150000 s")


def test_nan_value(copy: Path) -> None:
    set_value(copy, "action", 17 + 6, np.nan)
    problems = validate(copy)
    assert len(problems) == 1
    assert (problems[0].kind, problems[0].episode, problems[0].frame) == ("non-finite", 2, 6)
    assert (problems[0].key, problems[0].file) == ("action", DATA)


def test_infinite_value(copy: Path) -> None:
    set_value(copy, "observation.state", 4, np.inf)
    problems = only(validate(copy), "non-finite")
    assert [(p.episode, p.frame, p.key) for p in problems] == [(0, 4, "observation.state")]


def test_shape_disagrees_with_info(copy: Path) -> None:
    info = json.loads((copy / "meta/info.json").read_text())
    info["features"]["observation.state"]["shape"] = [9]
    (copy / "meta/info.json").write_text(json.dumps(info))
    problems = only(validate(copy), "shape")
    assert [(p.file, p.key) for p in problems] == [(DATA, "observation.state")]
    assert "declares shape [9]" in problems[0].message


def test_missing_video_file(copy: Path) -> None:
    (copy / TOP_VIDEO).unlink()
    problems = validate(copy)
    assert [(p.kind, p.episode, p.file) for p in problems] == [
        ("missing-file", 0, TOP_VIDEO), ("missing-file", 1, TOP_VIDEO), ("missing-file", 2, TOP_VIDEO)
    ]


def test_video_shorter_than_episode(copy: Path) -> None:
    """Keep the first 20 of 26 frames: episode 2 (frames 17..25 of the file) loses frames 3..8."""
    path = copy / WRIST_VIDEO
    short = path.with_name("short.mp4")
    with av.open(str(path)) as source, av.open(str(short), "w") as target:
        stream = source.streams.video[0]
        output = target.add_stream_from_template(stream, opaque=True)
        for packet in source.demux(stream):
            if packet.dts is None or packet.pts * stream.time_base >= 2.0 - 1e-6:
                continue
            packet.stream = output
            target.mux(packet)
    short.replace(path)
    problems = validate(copy)
    assert len(problems) == 1
    assert (problems[0].kind, problems[0].episode, problems[0].frame) == ("missing-frames", 2, 3)
    assert (problems[0].file, problems[0].key) == (WRIST_VIDEO, "observation.images.wrist")
    assert "6 of 9 frames missing" in problems[0].message


def test_stats_missing_feature(copy: Path) -> None:
    stats = json.loads((copy / "meta/stats.json").read_text())
    del stats["action"]
    del stats["observation.images.top"]["std"]
    (copy / "meta/stats.json").write_text(json.dumps(stats))
    problems = validate(copy)
    assert [(p.kind, p.file, p.key) for p in problems] == [
        ("stats", "meta/stats.json", "observation.images.top"),
        ("stats", "meta/stats.json", "action"),
    ]
    assert "lack ['std']" in problems[0].message


def test_truncated_parquet_is_unreadable(copy: Path) -> None:
    path = copy / DATA
    path.write_bytes(path.read_bytes()[:200])
    problems = validate(copy)
    assert problems[0].kind == "unreadable"
    assert problems[0].file == DATA
    assert {p.episode for p in problems[1:]} == {0, 1, 2}


def test_unknown_version_is_unreadable(copy: Path) -> None:
    info = json.loads((copy / "meta/info.json").read_text())
    info["codebase_version"] = "v9.9"
    (copy / "meta/info.json").write_text(json.dumps(info))
    problems = validate(copy)
    assert [(p.kind, p.file) for p in problems] == [("unreadable", "meta/info.json")]


def test_so101_has_no_problems(so101: Path) -> None:
    assert validate(so101) == []


def test_image_shape_disagrees_with_video(copy: Path) -> None:
    info = json.loads((copy / "meta/info.json").read_text())
    info["features"]["observation.images.top"]["shape"] = [48, 40, 3]
    (copy / "meta/info.json").write_text(json.dumps(info))
    problems = validate(copy)
    assert [(p.kind, p.file, p.key) for p in problems] == [("shape", TOP_VIDEO, "observation.images.top")]
    assert "video frames are 24x40 (height x width), but info.json declares 48x40" in problems[0].message
