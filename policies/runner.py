"""Run a torch policy in a rollout: one observation in, one action out, re-planning by chunks."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robota.errors import SpecError
from robota.policies.checkpoint import load_checkpoint
from robota.spec import build_policy_inputs


class TorchPolicyRunner:
    """Callable that maps one raw observation to one action, for twins and scripts.

    It predicts a chunk, executes its first `n_action_steps` actions one per call, and predicts
    again when they are used up. Call `reset()` at the start of every episode.

    Args:
        policy: A policy with `spec`, `config.n_action_steps` and `predict_action_chunk`.
        n_action_steps: Actions executed per chunk; defaults to the policy config's value and must
            be between 1 and the chunk size.
        device: Torch device to run on.

    Raises:
        SpecError: `n_action_steps` is out of range.
    """

    def __init__(
        self, policy: nn.Module, *, n_action_steps: int | None = None, device: str = "cpu"
    ) -> None:
        chunk_size = policy.config.chunk_size
        n_action_steps = policy.config.n_action_steps if n_action_steps is None else n_action_steps
        if not 1 <= n_action_steps <= chunk_size:
            raise SpecError(
                f"n_action_steps must be between 1 and the chunk size {chunk_size}, "
                f"got {n_action_steps}"
            )
        self.device = torch.device(device)
        self.policy = policy.to(self.device).eval()
        self.spec = policy.spec
        self.n_action_steps = n_action_steps
        self._queue: collections.deque[np.ndarray] = collections.deque()

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs: Any) -> TorchPolicyRunner:
        """Load a checkpoint folder and wrap it; `kwargs` go to the constructor."""
        return cls(load_checkpoint(path), **kwargs)

    def reset(self) -> None:
        """Forget the queued actions, so the next call plans from its observation."""
        self._queue.clear()

    def predict_action_chunk(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Predict a whole chunk from one raw observation keyed by the spec's feature keys.

        Returns:
            float32 `(chunk, action_dim)` in physical units.

        Raises:
            SpecError: The observation lacks a feature or has the wrong shape.
        """
        arrays = build_policy_inputs(self.spec, [observation])
        inputs = {key: torch.from_numpy(value).to(self.device) for key, value in arrays.items()}
        with torch.inference_mode():
            chunk = self.policy.predict_action_chunk(inputs)
        return chunk[0].cpu().numpy()

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Return the next action `(action_dim,)`, planning a new chunk when the queue is empty."""
        if not self._queue:
            chunk = self.predict_action_chunk(observation)
            self._queue.extend(chunk[: self.n_action_steps])
        return self._queue.popleft()
