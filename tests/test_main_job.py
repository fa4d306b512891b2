"""The main job end to end at toy size: record, train, export, evaluate checkpoint and bundle.

The chain is built once per module. The bad-input tests then damage copies of its artifacts
and check that each CLI command fails with one line that names the file and the fix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from robota.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("main-job")
    dataset = root / "dataset"
    checkpoint = root / "checkpoint"
    bundle = root / "bundle"
    commands = [
        ["record", "--episodes", "2", "--image-size", "32", "--output", str(dataset)],
        [
            "train",
            "--dataset",
            str(dataset),
            "--output",
            str(checkpoint),
            "--steps",
            "20",
            "--batch-size",
            "4",
        ],
        ["export", str(checkpoint), "--dataset", str(dataset), "--output", str(bundle)],
    ]
    for command in commands:
        assert main(command) == 0, command
    return {"root": root, "dataset": dataset, "checkpoint": checkpoint, "bundle": bundle}


def test_record_writes_lerobot_layout(chain):
    dataset = chain["dataset"]
    for relative in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet"):
        assert (dataset / relative).is_file(), relative
    info = json.loads((dataset / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["total_episodes"] == 2
    for camera in ("wrist", "overhead"):
        videos = list((dataset / "videos" / f"observation.images.{camera}").rglob("*.mp4"))
        assert len(videos) == 1, camera


def test_dataset_info_summarises(chain, capsys):
    assert main(["dataset", "info", str(chain["dataset"])]) == 0
    out = capsys.readouterr().out
    assert "ur5e" in out
    assert "observation.images.wrist" in out


def test_checkpoint_folder_contents(chain):
    names = {p.name for p in chain["checkpoint"].iterdir()}
    assert {"config.json", "model.safetensors", "stats.json"} <= names


def test_bundle_manifest_records_provenance(chain):
    manifest = json.loads((chain["bundle"] / "manifest.json").read_text())
    assert manifest["fps"] == 10
    assert manifest["provenance"]["dataset_fingerprint"]
    assert manifest["provenance"]["checkpoint_sha256"]
    assert manifest["validation"]["parity_max_abs_error"] <= 1e-4


@pytest.fixture(scope="module")
def reports(chain) -> dict[str, dict]:
    results = {}
    for kind in ("checkpoint", "bundle"):
        path = chain["root"] / f"eval-{kind}.json"
        command = ["eval", "--policy", str(chain[kind]), "--episodes", "2", "--output", str(path)]
        assert main(command) == 0, command
        results[kind] = json.loads(path.read_text())
    return results


@pytest.mark.parametrize("kind", ["checkpoint", "bundle"])
def test_eval_writes_report(reports, kind):
    report = reports[kind]
    assert report["policy_kind"] == kind
    assert [row["seed"] for row in report["rows"]] == [1_000_000, 1_000_001]
    assert set(report["rows"][0]) >= {"seed", "success", "steps", "instruction"}
    low, high = report["success_interval_95"]
    assert 0.0 <= low <= report["success_rate"] <= high <= 1.0


def test_eval_bundle_matches_checkpoint(reports):
    for checkpoint_row, bundle_row in zip(reports["checkpoint"]["rows"], reports["bundle"]["rows"]):
        assert checkpoint_row["instruction"] == bundle_row["instruction"]
        assert checkpoint_row["success"] == bundle_row["success"]


def _one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, lines
    assert lines[-1] == errors[0]
    return errors[0]


def test_unknown_task_suggests_name(chain, capsys):
    status = main(["eval", "--policy", str(chain["bundle"]), "--task", "pick-plac"])
    assert status == 2
    assert "Did you mean 'pick-place'" in _one_line_error(capsys)


def test_unknown_policy_suggests_name(chain, capsys, tmp_path):
    status = main(
        [
            "train",
            "--dataset",
            str(chain["dataset"]),
            "--policy",
            "atc",
            "--output",
            str(tmp_path / "ckpt"),
        ]
    )
    assert status == 2
    assert "Did you mean 'act'" in _one_line_error(capsys)


def test_corrupted_checkpoint_names_file(chain, capsys, tmp_path):
    damaged = tmp_path / "checkpoint"
    shutil.copytree(chain["checkpoint"], damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    status = main(["export", str(damaged), "--output", str(tmp_path / "bundle")])
    assert status == 2
    assert "model.safetensors" in _one_line_error(capsys)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_tampered_bundle_names_file(chain, capsys, tmp_path, workers):
    damaged = tmp_path / "bundle"
    shutil.copytree(chain["bundle"], damaged)
    model = damaged / "policy.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    status = main(["eval", "--policy", str(damaged), "--episodes", "2", "--workers", workers])
    assert status == 2
    error = _one_line_error(capsys)
    assert "policy.onnx" in error
    assert "robota export" in error
