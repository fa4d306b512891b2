"""summarise, format_summary and fingerprint, as `robota dataset info` shows them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from robota.datasets import fingerprint, format_summary, summarise


def test_summary_of_recorded(recorded: Path) -> None:
    summary = summarise(recorded)
    assert summary["episodes"] == 3
    assert summary["frames"] == 26
    assert summary["fps"] == 10
    assert summary["duration_s"] == 2.6
    assert summary["robot"] == "ur5e"
    assert summary["tasks"] == ["pick the part", "place it"]
    assert summary["features"]["observation.images.top"] == {"dtype": "video", "shape": (24, 40, 3)}
    assert summary["features"]["action"] == {"dtype": "float32", "shape": (7,)}
    assert summary["size_bytes"] > 0
    json.dumps(summary)  # `robota dataset info --json` prints it


def test_format_summary_lines(recorded: Path) -> None:
    text = format_summary(summarise(recorded))
    assert "episodes  3" in text
    assert "frames    26 at 10 Hz (2.6 s)" in text
    assert "  - place it" in text
    assert "observation.images.top" in text
    assert "24x40x3" in text


def test_summary_of_so101(so101: Path) -> None:
    summary = summarise(so101)
    assert (summary["episodes"], summary["frames"], summary["fps"]) == (6, 1782, 30)
    assert summary["robot"] == "so101_follower"
    assert summary["features"]["observation.images.wrist"]["shape"] == (360, 640, 3)
    assert "no robota spec" in format_summary(summary)


def test_fingerprint_stable_across_copies(tmp_path: Path, recorded: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(recorded, copy)
    (copy / "README.md").write_text("notes outside the dataset content")
    assert fingerprint(copy) == fingerprint(recorded)
    assert len(fingerprint(recorded)) == 64


def test_fingerprint_changes_with_content(tmp_path: Path, recorded: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(recorded, copy)
    video = next((copy / "videos").rglob("*.mp4"))
    data = bytearray(video.read_bytes())
    data[-1] ^= 0xFF
    video.write_bytes(bytes(data))
    assert fingerprint(copy) != fingerprint(recorded)
