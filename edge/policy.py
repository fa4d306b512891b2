"""Run a bundle as a policy: one action per control step from a queue of predicted chunks."""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robota.edge.bundle import Bundle, load_bundle
from robota.errors import SpecError
from robota.spec import Spec, build_policy_inputs

logger = logging.getLogger(__name__)


class BundlePolicy:
    """A bundle behind the per-step (`__call__`) and per-chunk (`predict_action_chunk`) calls.

    Each prediction returns a chunk of `chunk_size` actions, and the policy executes the first
    `n_action_steps` of them, one per call, before it predicts again from the latest
    observation. This is the queue semantics of the torch runner in `robota.policies`, so a
    checkpoint and its bundle act the same in a twin.

    Args:
        bundle: A loaded bundle.
        n_action_steps: Actions executed per chunk, from 1 to the chunk size; `None` uses the
            manifest's value.

    Raises:
        SpecError: `n_action_steps` is outside 1..chunk_size, as in the torch runner.
    """

    def __init__(self, bundle: Bundle, *, n_action_steps: int | None = None):
        self.bundle = bundle
        chunk_size = bundle.manifest.chunk_size
        steps = bundle.manifest.n_action_steps if n_action_steps is None else int(n_action_steps)
        if not 1 <= steps <= chunk_size:
            raise SpecError(
                f"{bundle.path}: n_action_steps {steps} is outside 1..{chunk_size}, "
                "the chunk size of this bundle; pass a value in that range"
            )
        self.n_action_steps = steps
        self._queue: collections.deque[np.ndarray] = collections.deque()

    @classmethod
    def from_path(
        cls,
        path: Path,
        *,
        n_action_steps: int | None = None,
        providers: Sequence[str] | None = None,
        variant: str | None = None,
        trusted_keys: Sequence | None = None,
        require_signature: bool = False,
    ) -> BundlePolicy:
        """Load the bundle at `path` (see `load_bundle`) and wrap it as a policy.

        `variant` picks a reduced-precision model that the bundle lists (`fp16` or `int8`);
        `None` runs `policy.onnx`. `trusted_keys` and `require_signature` go to `load_bundle`
        unchanged, so by default the signature is not checked.
        """
        bundle = load_bundle(
            path,
            providers=providers,
            variant=variant,
            trusted_keys=trusted_keys,
            require_signature=require_signature,
        )
        return cls(bundle, n_action_steps=n_action_steps)

    @property
    def spec(self) -> Spec:
        return self.bundle.spec

    @property
    def chunk_size(self) -> int:
        return self.bundle.manifest.chunk_size

    def reset(self) -> None:
        """Drop queued actions; call at the start of every episode."""
        self._queue.clear()

    def predict_action_chunk(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Predict a whole action chunk for one observation, leaving the queue untouched.

        Args:
            observation: Raw observation keyed by feature key, as the spec describes it.

        Returns:
            float32 actions `(chunk, action_dim)` in physical units.

        Raises:
            SpecError: The observation lacks a feature or has the wrong shape.
        """
        inputs = build_policy_inputs(self.spec, [observation])
        return self.bundle.run(inputs)[0]  # (chunk, action_dim)

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Return the next action, predicting a new chunk when the queue is empty.

        Args:
            observation: Raw observation of the current control step.

        Returns:
            float32 action `(action_dim,)`: joint position targets in rad, then the gripper
            command.
        """
        if not self._queue:
            chunk = self.predict_action_chunk(observation)
            self._queue.extend(chunk[: self.n_action_steps])
        return self._queue.popleft()
