"""robota-edge inspect and bench on an exported bundle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from robota.edge.cli import main
from robota.edge.manifest import MODEL_FILE


def test_inspect_prints_summary_and_ok(exported_bundle: Path, capsys) -> None:
    status = main(["inspect", str(exported_bundle)])

    out = capsys.readouterr().out
    assert status == 0
    assert "ur5e" in out
    assert "10 Hz" in out
    assert "10 actions per chunk, 4 executed" in out
    assert "verification: OK" in out


def test_inspect_reports_modified_model(bundle_copy: Path, capsys) -> None:
    model = bundle_copy / MODEL_FILE
    model.write_bytes(model.read_bytes() + b"\0")

    status = main(["inspect", str(bundle_copy)])

    out = capsys.readouterr().out
    assert status == 1
    assert "verification: FAILED" in out
    assert "policy.onnx: sha256" in out


def test_bench_prints_percentiles(exported_bundle: Path, capsys) -> None:
    status = main(["bench", "--bundle", str(exported_bundle), "--iterations", "5", "--warmup", "1"])

    out = capsys.readouterr().out
    assert status == 0
    assert "p50" in out
    assert "p99" in out


def test_bench_missing_bundle_fails(tmp_path: Path, capsys) -> None:
    status = main(["bench", "--bundle", str(tmp_path / "missing")])

    assert status == 1
    assert "bundle folder not found" in capsys.readouterr().err


def test_console_script_runs(exported_bundle: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "robota.edge.cli", "inspect", str(exported_bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "verification: OK" in result.stdout


def test_unknown_command_is_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["deploy"])
    assert exit_info.value.code == 2
