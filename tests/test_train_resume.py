"""Resuming: a run killed with SIGKILL and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import csv
import random
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import safetensors.torch
import torch

from robota.policies import checkpoint_sha256, load_checkpoint
from robota.train_state import best_checkpoint, list_step_folders
from test_train_helpers import cli_env, run_to_end, train_command, write_tiny_config, write_tiny_dataset

STEPS = 40


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    return {
        "dataset": write_tiny_dataset(root / "dataset"),
        "config": write_tiny_config(root / "train.toml", steps=STEPS, checkpoint_every=4),
        "cache": root / "cache",
        "root": root,
    }


def _kill_at_step(command: list[str], env: dict[str, str], step: int, timeout_s: float = 180) -> int:
    """Start training, SIGKILL it by PID once it logs `step`, and return its exit status."""
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    try:
        for line in process.stderr:
            if f" step {step}/{STEPS} " in line:
                process.send_signal(signal.SIGKILL)
                break
        process.stderr.close()
        return process.wait(timeout=timeout_s)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_killed_run_resumes_bit_identical(tiny_run):
    env = cli_env(tiny_run["cache"])
    reference = tiny_run["root"] / "reference"
    interrupted = tiny_run["root"] / "interrupted"
    base = ["--config", tiny_run["config"], "--dataset", tiny_run["dataset"]]
    kill_step = random.Random(20261204).randint(2, STEPS // 2)

    finished = run_to_end(train_command(*base, "--output", reference), env)
    status = _kill_at_step(train_command(*base, "--output", interrupted), env, kill_step)
    resumed = run_to_end(train_command(*base, "--output", interrupted, "--resume"), env)

    assert finished.returncode == 0, finished.stderr[-3000:]
    assert status == -signal.SIGKILL, f"training ended before the kill at step {kill_step}"
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr or kill_step < 4
    assert checkpoint_sha256(interrupted) == checkpoint_sha256(reference)
    weights = safetensors.torch.load_file(str(interrupted / "model.safetensors"))
    expected = safetensors.torch.load_file(str(reference / "model.safetensors"))
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name


def test_metrics_rows_not_repeated_after_resume(tiny_run):
    interrupted = tiny_run["root"] / "interrupted"
    if not (interrupted / "metrics.csv").is_file():
        pytest.skip("the resume test did not run")

    with (interrupted / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row["loss"]]

    assert [int(row["step"]) for row in rows] == list(range(1, STEPS + 1))


def test_keeps_last_and_best_checkpoints(tiny_run):
    reference = tiny_run["root"] / "reference"
    if not reference.is_dir():
        pytest.skip("the resume test did not run")

    steps = [step for step, _ in list_step_folders(reference)]
    best = best_checkpoint(reference)

    assert steps[-2:] == [STEPS - 4, STEPS]
    assert len(steps) in (2, 3)
    assert best is not None
    assert int(best.name.removeprefix("step-")) in steps
    assert (best / "train_config.toml").is_file()
    assert load_checkpoint(best).config.chunk_size == 4
