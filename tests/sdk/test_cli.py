"""The robota CLI: help for every subcommand, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robota.cli import build_parser, main

SUBCOMMANDS = [["record"], ["dataset", "info"], ["train"], ["eval"], ["export"], ["demo"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w))
def test_help_for_every_subcommand(words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    assert "usage: robota" in capsys.readouterr().out


def test_console_script_help_runs():
    completed = subprocess.run(
        [sys.executable, "-m", "robota.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0
    for command in ("record", "dataset", "train", "eval", "export", "demo"):
        assert command in completed.stdout


def test_import_robota_loads_no_torch_or_mujoco():
    code = "import sys, robota, robota.cli; print('torch' in sys.modules, 'mujoco' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert completed.stdout.split() == ["False", "False"]


def _error_lines(capsys) -> list[str]:
    # Log lines from other tests' background threads may land here too; errors start "error:".
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_missing_dataset_folder_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no-such-dataset"
    status = main(["dataset", "info", str(missing)])
    errors = _error_lines(capsys)
    assert status == 2
    assert len(errors) == 1
    assert str(missing) in errors[0]


def test_eval_missing_policy_folder_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no-such-policy"
    status = main(["eval", "--policy", str(missing), "--episodes", "1"])
    errors = _error_lines(capsys)
    assert status == 2
    assert len(errors) == 1
    assert str(missing) in errors[0]


def test_parser_rejects_unknown_subcommand():
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["recrod"])
    assert exit_info.value.code == 2
