"""Data-parallel training: torchrun with two gloo processes writes one checkpoint, logs on rank 0."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from robota.policies import load_checkpoint
from robota.train_state import list_step_folders
from test_train_helpers import cli_env, free_port, write_tiny_config, write_tiny_dataset

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
STEPS = 8


def _torchrun() -> str:
    path = Path(sys.executable).with_name("torchrun")
    if not path.is_file():
        found = shutil.which("torchrun")
        if found is None:
            pytest.skip("torchrun not found beside the Python interpreter or on PATH")
        return found
    return str(path)


def _run_torchrun(command: list[str], env: dict[str, str], timeout_s: float) -> int:
    """Run torchrun, stopping it by PID past the deadline (SIGTERM reaches its workers)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        raise AssertionError(f"torchrun timed out after {timeout_s} s:\n{output[-3000:]}") from None
    assert process.returncode == 0, output[-3000:]
    return process.returncode


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    dataset = write_tiny_dataset(root / "dataset")
    config = write_tiny_config(root / "train.toml", steps=STEPS, checkpoint_every=4)
    output, logs = root / "run", root / "logs"
    command = [
        _torchrun(),
        "--nnodes", "1",
        "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()),
        "--log-dir", str(logs),
        "--redirects", "3",
        "-m", "robota.train_cli", "train",
        "--config", str(config),
        "--dataset", str(dataset),
        "--output", str(output),
        "dist_timeout_s=60",
    ]
    _run_torchrun(command, cli_env(root / "cache"), timeout_s=240)
    return {"output": output, "logs": logs}


def _rank_log(logs: Path, rank: int, name: str) -> str:
    files = sorted(logs.glob(f"*/attempt_0/{rank}/{name}"))
    assert files, f"no {name} of rank {rank} under {logs}"
    return files[0].read_text()


def test_writes_one_loadable_checkpoint(ddp_run):
    output = ddp_run["output"]

    config = json.loads((output / "config.json").read_text())

    assert load_checkpoint(output).config.chunk_size == 4
    assert config["train_run"]["world_size"] == 2
    assert config["train_run"]["effective_batch_size"] == 16
    assert config["train_run"]["peak_lr"] == pytest.approx(2 * 3e-3)
    assert [step for step, _ in list_step_folders(output)] == [4, 8]


def test_only_rank_zero_logs(ddp_run):
    rank0 = _rank_log(ddp_run["logs"], 0, "stderr.log")
    rank1 = _rank_log(ddp_run["logs"], 1, "stderr.log") + _rank_log(ddp_run["logs"], 1, "stdout.log")

    assert "effective batch size 16 = 8 per process x 1 accumulation step(s) x 2 process(es)" in rank0
    assert "linear scaling rule" in rank0
    assert f"step {STEPS}/{STEPS}" in rank0
    assert rank1 == ""


def test_metrics_written_once(ddp_run):
    lines = (ddp_run["output"] / "metrics.csv").read_text().splitlines()

    steps = [line.split(",")[0] for line in lines[1:]]

    assert steps.count(str(STEPS)) == 2  # the training row and the validation row
    assert len(set(steps)) == STEPS
