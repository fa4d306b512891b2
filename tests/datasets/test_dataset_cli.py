"""`robota dataset validate`, `stats` and `convert`, called through argparse."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_helpers import write_v21

from robota.dataset_cli import register
from robota.datasets import open_dataset
from robota.errors import DatasetError


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="robota")
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser("dataset")
    register(dataset.add_subparsers(dest="dataset_command", required=True))
    args = parser.parse_args(["dataset", *argv])
    return args.handler(args)


def test_validate_clean(recorded: Path, capsys) -> None:
    assert run(["validate", str(recorded)]) == 0
    assert capsys.readouterr().out == f"no problems found in {recorded}\n"


def test_validate_lists_problems(recorded: Path, tmp_path: Path, capsys) -> None:
    copy = Path(shutil.copytree(recorded, tmp_path / "copy"))
    video = "videos/observation.images.top/chunk-000/file-000.mp4"
    (copy / video).unlink()
    assert run(["validate", str(copy)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{video}, episode 0, observation.images.top: missing-file: video file is missing"
    assert lines[-1] == f"3 problems found in {copy}"


def test_stats_prints_and_writes(recorded: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "out" / "stats.json"
    assert run(["stats", str(recorded), "--no-images", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "action (26 frames)" in printed
    assert f"wrote {output}" in printed
    written = json.loads(output.read_text())
    expected = open_dataset(recorded).stats["action"]["mean"]
    np.testing.assert_allclose(written["action"]["mean"], expected, rtol=1e-9)
    assert "observation.images.wrist" not in written


def test_stats_rejects_output_in_dataset(recorded: Path) -> None:
    with pytest.raises(DatasetError, match=r"inside the dataset folder"):
        run(["stats", str(recorded), "--output", str(recorded / "meta" / "stats2.json")])
    assert not (recorded / "meta" / "stats2.json").exists()


def test_convert(recorded: Path, tmp_path: Path, capsys) -> None:
    source = write_v21(recorded, tmp_path / "v21")
    assert run(["convert", str(source), str(tmp_path / "v30")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'v30'} (LeRobot v3.0): 3 episodes, 26 frames\n"
    assert open_dataset(tmp_path / "v30").info["codebase_version"] == "v3.0"
