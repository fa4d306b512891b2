"""Synthetic specs, statistics, observations and batches for the policy and training tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robota.edge.synthetic import synthesize_stats
from robota.spec import ACTION, TASK, Spec, encode_instruction

# Small enough that a training step takes milliseconds.
TINY_ACT = {
    "chunk_size": 4,
    "dim_model": 32,
    "n_heads": 2,
    "dim_feedforward": 64,
    "image_channels": (8, 16, 16),
    "dropout": 0.0,
}
INSTRUCTIONS = ("pick the part and place it in the bin", "Lege das Teil in die Kiste")


def make_stats(spec: Spec, seed: int = 0) -> dict[str, Any]:
    """Statistics in LeRobot's stats.json form with random, well-conditioned values."""
    return synthesize_stats(spec, seed)


def make_observation(spec: Spec, rng: np.random.Generator) -> dict[str, Any]:
    """One raw observation keyed by feature key, as a twin returns it."""
    observation: dict[str, Any] = {}
    for key in spec.image_keys:
        observation[key] = rng.integers(0, 256, spec.features[key].shape, dtype=np.uint8)
    for key in spec.vector_keys:
        observation[key] = rng.normal(0.0, 1.0, spec.features[key].shape).astype(np.float32)
    observation[TASK] = INSTRUCTIONS[int(rng.integers(len(INSTRUCTIONS)))]
    return observation


def make_batch(
    spec: Spec, batch_size: int, chunk_size: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A training batch of raw inputs with actions that depend on the state, and no padding."""
    generator = torch.Generator().manual_seed(seed)
    batch: dict[str, torch.Tensor] = {}
    for key in spec.image_keys:
        batch[key] = torch.randint(
            0, 256, (batch_size, *spec.features[key].shape), dtype=torch.uint8, generator=generator
        )
    for key in spec.vector_keys:
        batch[key] = torch.randn(batch_size, spec.features[key].shape[0], generator=generator)
    tokens = [encode_instruction(INSTRUCTIONS[i % len(INSTRUCTIONS)]) for i in range(batch_size)]
    batch["task_tokens"] = torch.from_numpy(np.stack(tokens))
    action_dim = spec.features[ACTION].shape[0]
    steps = torch.arange(chunk_size, dtype=torch.float32)[None, :, None]
    # (batch, 1, action_dim) + (1, chunk, 1) -> (batch, chunk, action_dim)
    batch[ACTION] = batch["observation.state"][:, None, :action_dim] + 0.1 * steps
    batch["action_is_pad"] = torch.zeros(batch_size, chunk_size, dtype=torch.bool)
    return batch
