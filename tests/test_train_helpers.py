"""Helpers of the training tests: a tiny recorded dataset, a tiny config and CLI subprocesses.

This module contains no tests; the training test modules import it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


from robota.datasets.synthetic import write_random_dataset
from robota.spec import UR5E, make_arm_spec

# A policy small enough that a CPU step takes milliseconds. Dropout draws from the torch RNG, so
# a resumed run only matches if that state was restored.
TINY_CONFIG = """\
steps = {steps}
batch_size = 8
lr = 3e-3
warmup_steps = 3
log_every = 1
chunk_size = 4
checkpoint_every = {checkpoint_every}
keep_last = 2
val_fraction = 0.25
ema_decay = 0.9
tensorboard = false

[policy]
type = "act"
dim_model = 32
n_heads = 2
dim_feedforward = 64
image_channels = [8, 16]
dropout = 0.1
"""


def write_tiny_dataset(root: Path, episodes: int = 4, length: int = 12, seed: int = 0) -> Path:
    """Record `episodes` episodes of random 16x16 frames and vectors with DatasetWriter."""
    spec = make_arm_spec(UR5E, 10, {"wrist": (16, 16)})
    return write_random_dataset(root, spec, episodes=episodes, length=length, seed=seed)


def write_tiny_config(path: Path, steps: int = 24, checkpoint_every: int = 4) -> Path:
    """Write the tiny TOML config; dataset and output come from the command line."""
    path.write_text(TINY_CONFIG.format(steps=steps, checkpoint_every=checkpoint_every))
    return path


def cli_env(cache_dir: Path) -> dict[str, str]:
    """Environment of a training subprocess: one thread, a private frame cache, no launcher."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", ROBOTA_CACHE_DIR=str(cache_dir), PYTHONUNBUFFERED="1")
    return env


def train_command(*arguments: str | Path) -> list[str]:
    """The command line of `robota train` run through `python -m robota.train_cli`."""
    return [sys.executable, "-m", "robota.train_cli", "train", *map(str, arguments)]


def run_to_end(command: list[str], env: dict[str, str], timeout_s: float = 180) -> subprocess.CompletedProcess:
    """Run a command to its end, killing it by PID past the deadline."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"{command} timed out after {timeout_s} s:\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
