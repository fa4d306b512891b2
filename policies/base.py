"""The interface every policy implements, and the per-step execution of action chunks.

A policy predicts a chunk of future actions from one observation. Training calls `forward` on
a batch and minimises its `loss`. Inference has two calls, as in LeRobot:

- `predict_action_chunk(inputs)` returns the whole chunk `(batch, chunk, action_dim)` in
  physical units. Export and the edge runtime use this one, through `inference_module()`.
- `select_action(inputs)` returns the single action to execute now, `(batch, action_dim)`.
  It either executes the first `n_action_steps` actions of a chunk from a queue and then plans
  again, or, with `temporal_ensemble_coeff` set, plans every step and blends all chunks that
  cover the step. Call `reset()` at the start of every episode.

Every policy config has the fields of `ChunkPolicyConfig` (subclassing it is the simplest way).
The gripper is its own action channel when the spec's last action element is named `gripper`.
The policy predicts it as open or closed and returns exactly the dataset's minimum (open) or
maximum (closed) gripper value, never a value in between.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from robota.errors import CheckpointError, SpecError
from robota.policies.normalize import GripperChannel
from robota.spec import ACTION, GRIPPER_NAME, Spec, policy_input_names


@dataclasses.dataclass
class ChunkPolicyConfig:
    """Fields every policy config has; policy configs subclass this dataclass.

    Attributes:
        chunk_size: Actions predicted per call, one per control period.
        n_action_steps: Actions of each chunk executed before planning again, between 1 and
            `chunk_size`. `None` means `chunk_size`, or 1 when `temporal_ensemble_coeff` is set.
        temporal_ensemble_coeff: With a value `m`, `select_action` plans every step and
            averages the actions that all live chunks hold for the step, weighted by
            `exp(-m * i)` with `i = 0` for the oldest chunk (ACT, Zhao et al. 2023,
            https://arxiv.org/abs/2304.13705, uses m = 0.01). `None` executes chunks from a
            queue instead.
        gripper_threshold: Probability in (0, 1) at or above which the gripper channel is
            closed. After temporal ensembling it applies to the weighted share of chunks that
            close the gripper.
        optimizer_lr: Suggested AdamW learning rate for training from scratch.
        optimizer_weight_decay: Suggested AdamW weight decay.
    """

    chunk_size: int = 10
    n_action_steps: int | None = None
    temporal_ensemble_coeff: float | None = None
    gripper_threshold: float = 0.5
    optimizer_lr: float = 1e-3
    optimizer_weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if self.n_action_steps is None:
            self.n_action_steps = 1 if self.temporal_ensemble_coeff is not None else self.chunk_size
        check_positive(self, "chunk_size", "n_action_steps")
        check_execution(self.chunk_size, self.n_action_steps, self.temporal_ensemble_coeff)
        if not 0.0 < self.gripper_threshold < 1.0:
            raise SpecError(
                f"gripper_threshold must be a probability in (0, 1), got {self.gripper_threshold}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }


def check_positive(config: Any, *fields: str) -> None:
    """Raise SpecError unless each named field of `config` is a positive integer."""
    for field in fields:
        value = getattr(config, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(
                f"{type(config).__name__} field {field} must be a positive integer, got {value!r}"
            )


def check_execution(
    chunk_size: int, n_action_steps: int, temporal_ensemble_coeff: float | None
) -> None:
    """Raise SpecError unless the execution horizon fits the chunk and the ensembling setting."""
    if not 1 <= n_action_steps <= chunk_size:
        raise SpecError(
            f"n_action_steps must be between 1 and the chunk size {chunk_size}, "
            f"got {n_action_steps}"
        )
    if temporal_ensemble_coeff is None:
        return
    if not (math.isfinite(temporal_ensemble_coeff) and temporal_ensemble_coeff >= 0.0):
        raise SpecError(
            f"temporal_ensemble_coeff must be a finite number >= 0 or None, "
            f"got {temporal_ensemble_coeff}"
        )
    if n_action_steps != 1:
        raise SpecError(
            f"temporal ensembling plans a chunk every step, so n_action_steps must be 1, "
            f"got {n_action_steps}; set n_action_steps=1 or temporal_ensemble_coeff=None"
        )


def gripper_index_of(spec: Spec) -> int | None:
    """Return the index of the gripper in the action, or None when the last one is not named so."""
    names = spec.features[ACTION].names
    if names and names[-1] == GRIPPER_NAME:
        return len(names) - 1
    return None


class ChunkPolicy(nn.Module, abc.ABC):
    """Base class of every policy: chunk prediction, per-step execution and the gripper channel.

    Subclasses set the class attributes `name` (the registry and checkpoint name) and
    `config_class` (a `ChunkPolicyConfig` subclass), call `super().__init__(config, spec, stats)`
    first, and implement `forward` and `predict_action_chunk`.

    Args:
        config: Hyperparameters, an instance of `config_class`.
        spec: Feature spec; fixes the inputs and the action size.
        stats: Dataset statistics in LeRobot's `stats.json` form. With a gripper, `action` must
            have `min` and `max`.

    Attributes:
        input_names: Model input names in `policy_input_names(spec)` order.
        action_dim: Elements per action.
        gripper_index: Index of the gripper in the action, or None without one.
        gripper: The gripper's normalisation, or None without one.

    Raises:
        SpecError: The statistics lack the gripper's range.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[ChunkPolicyConfig]]

    def __init__(self, config: ChunkPolicyConfig, spec: Spec, stats: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self.stats = stats
        self.input_names = policy_input_names(spec)
        self.action_dim = spec.features[ACTION].shape[0]
        self.gripper_index = gripper_index_of(spec)
        self.gripper: GripperChannel | None = None
        if self.gripper_index is not None:
            self.gripper = GripperChannel(stats, self.gripper_index, self.action_dim)
        self._executor = ChunkExecutor(
            config.chunk_size, config.n_action_steps, config.temporal_ensemble_coeff
        )

    @abc.abstractmethod
    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute the training loss on a batch; the result has a scalar `loss` to minimise."""

    @abc.abstractmethod
    def predict_action_chunk(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Predict a chunk `(batch, chunk, action_dim)` in physical units from raw inputs.

        The gripper element, when the spec has one, is exactly its open or closed value.
        """

    def inference_module(self) -> nn.Module:
        """Return a module for export that shares this policy's weights.

        Its `forward` takes the raw inputs positionally in `policy_input_names(spec)` order and
        returns `predict_action_chunk`'s chunk; `robota.export` traces it to ONNX. Put the
        policy in eval mode before exporting; the module starts in the policy's mode.
        """
        module = ChunkInferenceModule(self)
        module.training = self.training  # Only the wrapper's own flag; the policy keeps its mode.
        return module

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        # Weights saved before the gripper became its own channel lack its range, and their head
        # regressed the gripper with the arm, so they would load but close the gripper wrongly.
        if self.gripper is not None and f"{prefix}gripper.low" not in state_dict:
            raise CheckpointError(
                f"the {self.name} weights have no gripper channel (no {prefix}gripper.low tensor, "
                "and their config has no gripper_threshold): they were saved by a robota version "
                "that predicted the gripper with the arm; train the policy again"
            )
        super()._load_from_state_dict(state_dict, prefix, *args)

    def check_inputs(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Raise SpecError when an input named by `policy_input_names(spec)` is missing."""
        missing = [key for key in self.input_names if key not in inputs]
        if missing:
            raise SpecError(f"policy inputs are missing {missing}; expected {self.input_names}")

    def threshold_gripper(self, chunk: torch.Tensor) -> torch.Tensor:
        """Snap the gripper element of physical actions `(..., action_dim)` to open or closed.

        The element is mapped to [0, 1] by the dataset's gripper range and compared with
        `config.gripper_threshold`. Without a gripper the actions are returned unchanged.
        """
        if self.gripper is None:
            return chunk
        index = self.gripper_index
        closed = self.gripper.to_unit(chunk[..., index]) >= self.config.gripper_threshold
        snapped = self.gripper.from_closed(closed)
        # (...,) -> (..., 1), then joined back in the gripper's place
        return torch.cat([chunk[..., :index], snapped[..., None], chunk[..., index + 1 :]], dim=-1)

    def reset(self) -> None:
        """Forget queued and ensembled actions; call it at the start of every episode."""
        self._executor.reset()

    @torch.no_grad()
    def select_action(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return the action to execute now, `(batch, action_dim)` in physical units.

        Plans a new chunk when the queue is empty, or every step with temporal ensembling. The
        batch size must stay the same until `reset()`.
        """
        return self._executor.step(self, inputs)


class ChunkExecutor:
    """Per-step actions from chunks: a queue, or ACT's temporal ensembling.

    Args:
        chunk_size: Actions per chunk.
        n_action_steps: Actions executed from each chunk before planning again.
        temporal_ensemble_coeff: `m` of the weights `exp(-m * i)`, `i = 0` the oldest chunk;
            `None` executes from a queue.

    Raises:
        SpecError: The settings do not fit (see `check_execution`).
    """

    def __init__(
        self, chunk_size: int, n_action_steps: int, temporal_ensemble_coeff: float | None
    ) -> None:
        check_execution(chunk_size, n_action_steps, temporal_ensemble_coeff)
        self.chunk_size = chunk_size
        self.n_action_steps = n_action_steps
        self.temporal_ensemble_coeff = temporal_ensemble_coeff
        self._queue: collections.deque[torch.Tensor] = collections.deque()
        # Chunks `(batch, chunk, action_dim)` with the step of their first action, oldest first.
        self._chunks: collections.deque[tuple[int, torch.Tensor]] = collections.deque()
        self._step = 0

    def reset(self) -> None:
        """Forget queued and ensembled actions."""
        self._queue.clear()
        self._chunks.clear()
        self._step = 0

    def step(self, policy: ChunkPolicy, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return the action `(batch, action_dim)` for this step, predicting with `policy`."""
        if self.temporal_ensemble_coeff is None:
            if not self._queue:
                chunk = policy.predict_action_chunk(inputs)
                # (batch, chunk, action_dim) -> n_action_steps x (batch, action_dim)
                self._queue.extend(chunk[:, : self.n_action_steps].unbind(dim=1))
            return self._queue.popleft()

        self._chunks.append((self._step, policy.predict_action_chunk(inputs)))
        action = policy.threshold_gripper(self._blend(self._step))
        self._step += 1
        return action

    def _blend(self, step: int) -> torch.Tensor:
        while self._chunks[0][0] + self.chunk_size <= step:
            self._chunks.popleft()
        # Oldest first: n_chunks x (batch, action_dim) -> (n_chunks, batch, action_dim)
        covering = torch.stack([chunk[:, step - start] for start, chunk in self._chunks])
        order = torch.arange(len(covering), dtype=covering.dtype, device=covering.device)
        weights = torch.exp(-self.temporal_ensemble_coeff * order)
        # (n_chunks,) x (n_chunks, batch, action_dim) -> (batch, action_dim)
        return torch.einsum("n,nba->ba", weights, covering) / weights.sum()


class ChunkInferenceModule(nn.Module):
    """Positional-input wrapper of `ChunkPolicy.predict_action_chunk` for ONNX export.

    `forward` takes `*inputs`, so `torch.onnx.export(..., dynamo=True)` needs the dynamic shapes
    nested one level deeper than the inputs; `dynamic_batch_shapes` builds them. The legacy
    exporter (`dynamo=False`) takes `dynamic_axes` keyed by input name as usual.
    """

    def __init__(self, policy: ChunkPolicy) -> None:
        super().__init__()
        self.policy = policy

    def dynamic_batch_shapes(self, batch: Any) -> tuple[tuple[dict[int, Any], ...]]:
        """Return `dynamic_shapes` for `torch.onnx.export` that make axis 0 of every input `batch`.

        Args:
            batch: A `torch.export.Dim`, for example `torch.export.Dim("batch", min=1)`.
        """
        return (tuple({0: batch} for _ in self.policy.input_names),)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        names = self.policy.input_names
        if len(inputs) != len(names):
            raise SpecError(f"expected {len(names)} inputs in the order {names}, got {len(inputs)}")
        return self.policy.predict_action_chunk(dict(zip(names, inputs, strict=True)))
