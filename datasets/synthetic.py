"""Write datasets of random frames, for tests and benchmarks that need a dataset but no twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robota.datasets.writer import DatasetWriter
from robota.spec import Spec

SYNTHETIC_TASK = "pick the part"


def write_random_dataset(
    root: str | Path, spec: Spec, *, episodes: int, length: int, seed: int = 0
) -> Path:
    """Write `episodes` episodes of `length` frames with random values for every feature.

    Images are uniform uint8 noise, vectors standard normal float32, and the task is one fixed
    instruction. The values carry no behaviour to learn: use them for speed, format and
    plumbing checks.

    Returns:
        The dataset folder.
    """
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, spec, robot_type=spec.robot.name) as writer:
        for _ in range(episodes):
            for _ in range(length):
                writer.add_frame(_random_frame(spec, rng))
            writer.save_episode()
    return Path(root)


def _random_frame(spec: Spec, rng: np.random.Generator) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    for key, feature in spec.features.items():
        if feature.is_image:
            frame[key] = rng.integers(0, 256, feature.shape, dtype=np.uint8)
        elif feature.dtype == "string":
            frame[key] = SYNTHETIC_TASK
        else:
            frame[key] = rng.normal(0.0, 1.0, feature.shape).astype(np.float32)
    return frame
