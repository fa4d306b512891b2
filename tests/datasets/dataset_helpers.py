"""Synthetic frames and recordings shared by the dataset tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robota.datasets import DatasetWriter
from robota.spec import Spec

FPS = 10
SO101 = "lerobot_v3_so101_sim"


def smooth_image(height: int, width: int, step: int) -> np.ndarray:
    """A smooth RGB gradient that moves with `step`; H.264 keeps it within a few levels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 128 + 40 * np.sin(2 * np.pi * (x / width + step / 40))
    green = 128 + 40 * np.cos(2 * np.pi * (y / height + step / 50))
    blue = np.full_like(x, 60 + 2 * (step % 50))
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def make_frame(spec: Spec, episode: int, step: int, task: str = "pick the part") -> dict:
    """One frame with deterministic values: vector element j is episode*1000 + step + j/10."""
    frame: dict = {}
    for key, feature in spec.features.items():
        if feature.is_image:
            frame[key] = smooth_image(feature.shape[0], feature.shape[1], step + 7 * episode)
        elif feature.dtype == "string":
            frame[key] = task
        else:
            base = episode * 1000 + step
            frame[key] = (base + np.arange(feature.shape[0]) / 10).astype(np.float32)
    return frame


def record(
    root: Path,
    spec: Spec,
    lengths: Sequence[int],
    tasks: Sequence[str] | None = None,
    **writer_options,
) -> Path:
    """Record one episode per length, with metadata {"seed": 100 + episode}."""
    with DatasetWriter(root, spec, robot_type="ur5e", **writer_options) as writer:
        for episode, length in enumerate(lengths):
            task = tasks[episode] if tasks else "pick the part"
            for step in range(length):
                writer.add_frame(make_frame(spec, episode, step, task))
            writer.save_episode({"seed": 100 + episode})
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Map every path under `root` to (size, mtime_ns), to show that a folder was not touched."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }


def set_read_only(root: Path, read_only: bool) -> None:
    """Make a folder tree read-only, or writable again. Root ignores these bits, hence `snapshot`."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555 if read_only else 0o755)
        else:
            path.chmod(0o444 if read_only else 0o644)
