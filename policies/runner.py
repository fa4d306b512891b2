"""Run a torch policy in a rollout: one observation in, one action out, re-planning by chunks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robota.policies.base import ChunkExecutor, ChunkPolicy
from robota.policies.checkpoint import load_checkpoint
from robota.spec import build_policy_inputs

# Default of `TorchPolicyRunner`'s `temporal_ensemble_coeff`: take the policy config's value.
FROM_CONFIG: Any = object()


class TorchPolicyRunner:
    """Callable that maps one raw observation to one action, for twins and scripts.

    It executes chunks as `ChunkPolicy.select_action` does: the first `n_action_steps` actions
    of a chunk one per call and then a new prediction, or, with `temporal_ensemble_coeff`, a
    prediction every call blended with the earlier chunks that cover the step. Both settings
    default to the policy config's. Call `reset()` at the start of every episode.

    Args:
        policy: A `ChunkPolicy`.
        n_action_steps: Actions executed per chunk, between 1 and the chunk size. `None` takes
            the config's value, or 1 when this runner ensembles and the config does not.
        temporal_ensemble_coeff: `m` of the ensembling weights `exp(-m * i)`, `i = 0` the oldest
            chunk; `None` executes from a queue. By default the config's value.
        device: Torch device to run on.

    Raises:
        SpecError: `n_action_steps` is out of range, or is not 1 with temporal ensembling.
    """

    def __init__(
        self,
        policy: ChunkPolicy,
        *,
        n_action_steps: int | None = None,
        temporal_ensemble_coeff: float | None = FROM_CONFIG,
        device: str = "cpu",
    ) -> None:
        config = policy.config
        if temporal_ensemble_coeff is FROM_CONFIG:
            temporal_ensemble_coeff = config.temporal_ensemble_coeff
        if n_action_steps is None:
            n_action_steps = config.n_action_steps
            if temporal_ensemble_coeff is not None and config.temporal_ensemble_coeff is None:
                n_action_steps = 1
        self._executor = ChunkExecutor(config.chunk_size, n_action_steps, temporal_ensemble_coeff)
        self.device = torch.device(device)
        self.policy = policy.to(self.device).eval()
        self.spec = policy.spec

    @property
    def n_action_steps(self) -> int:
        """Actions executed from each chunk before planning again."""
        return self._executor.n_action_steps

    @property
    def temporal_ensemble_coeff(self) -> float | None:
        """`m` of the ensembling weights, or None when chunks run from a queue."""
        return self._executor.temporal_ensemble_coeff

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs: Any) -> TorchPolicyRunner:
        """Load a checkpoint folder and wrap it; `kwargs` go to the constructor."""
        return cls(load_checkpoint(path), **kwargs)

    def reset(self) -> None:
        """Forget the queued and ensembled actions, so the next call plans from its observation."""
        self._executor.reset()

    def _inputs(self, observation: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        arrays = build_policy_inputs(self.spec, [observation])
        return {key: torch.from_numpy(value).to(self.device) for key, value in arrays.items()}

    def predict_action_chunk(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Predict a whole chunk from one raw observation keyed by the spec's feature keys.

        Returns:
            float32 `(chunk, action_dim)` in physical units.

        Raises:
            SpecError: The observation lacks a feature or has the wrong shape.
        """
        with torch.inference_mode():
            chunk = self.policy.predict_action_chunk(self._inputs(observation))
        return chunk[0].cpu().numpy()

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Return the next action `(action_dim,)` in physical units."""
        with torch.inference_mode():
            action = self._executor.step(self.policy, self._inputs(observation))
        return action[0].cpu().numpy()
