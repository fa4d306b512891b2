"""A flow-matching policy: an action expert that denoises action chunks over a transformer trunk.

The design follows pi0 (Black et al., 2024, https://arxiv.org/abs/2410.24164), sized to train
from scratch on a CPU:

- the trunk is a transformer encoder over one sequence of tokens. Each camera gives a grid of
  tokens from a small CNN, each vector observation one token, the robot one token, and each
  UTF-8 byte of the instruction one token, with padding bytes masked out of attention;
- the action expert is a smaller transformer over the noisy action chunk, one token per step,
  conditioned on the flow time and cross-attending to the trunk's output;
- training is rectified flow: with noise `eps ~ N(0, I)`, data `a` and `t` in [0, 1],
  `x_t = t * a + (1 - t) * eps` and the expert regresses the velocity `a - eps`;
- inference integrates `dx/dt = v(x, t)` from `t = 0` to 1 with `num_inference_steps` Euler
  steps, starting from zeros, so torch and ONNX Runtime give the same actions.

Joint-indexed vectors (the joint state, joint velocities and the action) are padded to a
width shared by all robots: arm joints first, the gripper always in the last slot. The gripper
has its own normalisation: the state's opening as a fraction of the robot's maximum opening, and
the action's command as open (-1) or closed (+1) by the dataset's gripper range. Predicted
chunks carry the gripper as exactly the open or the closed value, cut at `gripper_threshold`.

One policy can train on several robots (embodiments). Each robot has its own normalisation,
joint layouts, gripper channel and robot token. The image encoders, the vector projections (over
the padded widths), the trunk and the action expert are shared. A training batch holds one robot
and names it in its `robot` entry. Inference and export run the primary robot, the one whose
spec the policy was built with; `robota.policies.load_checkpoint(path, robot=NAME)` makes any
of the robots the primary one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from robota.errors import SpecError, check_choice
from robota.policies.act import ACTION_IS_PAD
from robota.policies.base import ChunkPolicy, ChunkPolicyConfig, check_positive
from robota.policies.flow_layers import ExpertLayer, TimeEmbedding
from robota.policies.flow_robots import (
    ROBOT,
    add_robot_parts,
    batch_robot,
    build_embodiments,
    vector_input,
)
from robota.policies.layers import EncoderLayer, ImageEncoder, padding_mask
from robota.policies.normalize import MODES
from robota.spec import (
    ACTION,
    INSTRUCTION_MAX_BYTES,
    INSTRUCTION_VOCAB_SIZE,
    TASK_TOKENS,
    Spec,
)

INTEGRATION_MODES = ("unrolled", "loop")
TIME_SAMPLINGS = ("beta", "uniform")
OTHER_ROBOT = "other"


@dataclasses.dataclass
class FlowMatchingConfig(ChunkPolicyConfig):
    """Hyperparameters of `FlowMatchingPolicy`, on top of those of `ChunkPolicyConfig`.

    Attributes:
        dim_model: Token width of the trunk and the action expert.
        n_heads: Attention heads; must divide `dim_model`.
        n_layers: Transformer layers of the trunk.
        n_expert_layers: Layers of the action expert.
        dim_feedforward: Hidden width of the feed-forward layers.
        dropout: Dropout in the transformer layers during training.
        image_channels: Output channels of each stride-2 convolution of the camera CNNs; five
            layers turn a 96×96 image into a 3×3 grid of tokens.
        max_state_dim: Width every joint-indexed observation is padded to, gripper slot
            included; 9 holds up to 8 arm joints.
        max_action_dim: Width the action is padded to, gripper slot included.
        num_inference_steps: Euler steps from noise to actions at inference.
        noise_samples: Noise and time draws per observation in a training step. The trunk runs
            once per observation, so extra draws cost only the action expert.
        time_sampling: `beta` draws `t = 1 - s` with `s ~ Beta(1.5, 1)`, which favours the noisy
            end as in pi0; `uniform` draws `t ~ U(0, 1)`.
        robot_vocabulary: Robot names with an embedding; the last entry is for every robot not
            listed. Changing it changes the model's weights.
        state_normalization: Normalisation mode of vector observations (gripper excepted).
        action_normalization: Normalisation mode of the arm's actions.
    """

    dim_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    n_expert_layers: int = 2
    dim_feedforward: int = 256
    dropout: float = 0.1
    image_channels: tuple[int, ...] = (16, 32, 32, 64, 64)
    max_state_dim: int = 9
    max_action_dim: int = 9
    num_inference_steps: int = 10
    noise_samples: int = 1
    time_sampling: str = "beta"
    robot_vocabulary: tuple[str, ...] = ("ur5e", "panda", OTHER_ROBOT)
    state_normalization: str = "mean_std"
    action_normalization: str = "mean_std"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.image_channels = tuple(int(c) for c in self.image_channels)
        self.robot_vocabulary = tuple(str(name) for name in self.robot_vocabulary)
        check_positive(self, "dim_model", "n_heads", "n_layers", "n_expert_layers")
        check_positive(self, "dim_feedforward", "max_state_dim", "max_action_dim")
        check_positive(self, "num_inference_steps", "noise_samples")
        if not self.image_channels or min(self.image_channels) < 1:
            raise SpecError(
                f"image_channels must be positive channel counts, got {self.image_channels}"
            )
        if self.dim_model % self.n_heads or self.dim_model % 2:
            raise SpecError(
                f"dim_model ({self.dim_model}) must be even and divisible by n_heads "
                f"({self.n_heads}); for example use n_heads=4 with dim_model=128"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"dropout must be in [0, 1), got {self.dropout}")
        check_choice("time_sampling", self.time_sampling, TIME_SAMPLINGS)
        for field in ("state_normalization", "action_normalization"):
            check_choice(field, getattr(self, field), MODES)
        vocabulary = self.robot_vocabulary
        if not vocabulary or vocabulary[-1] != OTHER_ROBOT or len(set(vocabulary)) < len(vocabulary):
            raise SpecError(
                f"robot_vocabulary must be distinct names ending with {OTHER_ROBOT!r}, "
                f"got {list(vocabulary)}"
            )


class FlowMatchingPolicy(ChunkPolicy):
    """Flow-matching action expert over a transformer trunk of camera, vector, robot and byte tokens.

    Args:
        config: Hyperparameters.
        spec: Feature spec of the primary robot; fixes the cameras, vector observations, robot
            and action size.
        stats: Dataset statistics in LeRobot's `stats.json` form, with every image key, every
            `spec.vector_keys` entry and `action` (with `min` and `max` for the gripper).
        embodiments: Other robots the policy also drives, robot name to `(spec, stats)` as
            above. Their specs may differ from `spec` only in the robot and the width of the
            features indexed by its joints.

    Attributes:
        embodiments: Each other robot's `Embodiment`, keyed by robot name. The primary robot's
            parts are attributes of the policy itself (`normalizer`, `gripper`, ...), so a
            one-robot policy's weights keep their names.

    Raises:
        SpecError: The statistics lack a feature the policy uses, a robot has more joints than
            `max_state_dim` or `max_action_dim` hold, or another robot's spec differs in more
            than its joints.
    """

    name = "flow"
    config_class = FlowMatchingConfig
    # The constructor takes `embodiments`, so training may mix robots.
    multi_robot = True

    def __init__(
        self,
        config: FlowMatchingConfig,
        spec: Spec,
        stats: Mapping[str, Any],
        embodiments: Mapping[str, tuple[Spec, Mapping[str, Any]]] | None = None,
    ) -> None:
        super().__init__(config, spec, stats)
        dim = config.dim_model
        add_robot_parts(self, config, spec, stats)
        self.embodiments = build_embodiments(config, spec, embodiments or {})

        self.image_encoders = nn.ModuleDict(
            {
                _module_name(key): ImageEncoder(
                    spec.features[key].shape[:2], config.image_channels, dim
                )
                for key in spec.image_keys
            }
        )
        self.vector_projections = nn.ModuleDict(
            {
                _module_name(key): nn.Linear(self._vector_width(key), dim)
                for key in spec.vector_keys
            }
        )
        self.vector_position = nn.Parameter(torch.randn(len(spec.vector_keys), dim) * 0.02)
        self.robot_embedding = nn.Embedding(len(config.robot_vocabulary), dim)
        self.byte_embedding = nn.Embedding(INSTRUCTION_VOCAB_SIZE, dim, padding_idx=0)
        self.byte_position = nn.Parameter(torch.randn(INSTRUCTION_MAX_BYTES, dim) * 0.02)
        self.trunk = nn.ModuleList(
            [
                EncoderLayer(dim, config.n_heads, config.dim_feedforward, config.dropout)
                for _ in range(config.n_layers)
            ]
        )
        self.trunk_norm = nn.LayerNorm(dim)

        self.action_input = nn.Linear(config.max_action_dim, dim)
        self.action_position = nn.Parameter(torch.randn(config.chunk_size, dim) * 0.02)
        self.time_embedding = TimeEmbedding(dim)
        self.expert = nn.ModuleList(
            [
                ExpertLayer(dim, config.n_heads, config.dim_feedforward, config.dropout)
                for _ in range(config.n_expert_layers)
            ]
        )
        self.expert_norm = nn.LayerNorm(dim)
        self.action_output = nn.Linear(dim, config.max_action_dim)

    @property
    def robot_names(self) -> tuple[str, ...]:
        """The robots this policy drives: the primary one first, then `embodiments` in order."""
        return (self.spec.robot.name, *self.embodiments)

    def embodiment(self, robot: str | int) -> nn.Module:
        """Return one robot's parts by name or by index into `robot_names`.

        The result has `spec`, `stats`, `normalizer`, `gripper`, `action_layout`,
        `joint_layouts`, `robot_id` and `action_valid`; for the primary robot it is the policy.

        Raises:
            UnknownNameError: The name is not one of `robot_names`.
            SpecError: The index is out of range.
        """
        names = self.robot_names
        if isinstance(robot, str):
            robot = names.index(check_choice("robot of this policy", robot, names))
        if not 0 <= robot < len(names):
            raise SpecError(f"robot index {robot} is out of range for the robots {list(names)}")
        return self if robot == 0 else self.embodiments[names[robot]]

    @property
    def n_context_tokens(self) -> int:
        """Trunk tokens before the instruction bytes: camera grids, vectors and the robot."""
        image_tokens = sum(encoder.n_tokens for encoder in self.image_encoders.values())
        return image_tokens + len(self.spec.vector_keys) + 1

    def _vector_width(self, key: str) -> int:
        layout = self.joint_layouts.get(key)
        return self.spec.features[key].shape[0] if layout is None else layout.width

    def encode(
        self, inputs: Mapping[str, torch.Tensor], robot: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the trunk over the raw inputs of robot `robot`, an index into `robot_names`.

        Returns:
            The trunk tokens `(batch, n_tokens, dim_model)` and their additive key mask
            `(batch, 1, 1, n_tokens)`, which hides the instruction's padding bytes.
        """
        parts = self.embodiment(robot)
        task_tokens = _trim_padding(inputs[TASK_TOKENS])
        batch = task_tokens.shape[0]
        tokens: list[torch.Tensor] = []
        for key in self.spec.image_keys:
            # (batch, height, width, 3) uint8 -> (batch, 3, height, width)
            images = inputs[key].permute(0, 3, 1, 2)
            images = parts.normalizer.normalize(key, images)
            tokens.append(self.image_encoders[_module_name(key)](images))
        if self.spec.vector_keys:
            vectors = [
                self.vector_projections[_module_name(key)](vector_input(parts, key, inputs[key]))
                for key in self.spec.vector_keys
            ]
            # n_vectors x (batch, dim_model) -> (batch, n_vectors, dim_model)
            tokens.append(torch.stack(vectors, dim=1) + self.vector_position)
        # (dim_model,) -> (batch, 1, dim_model)
        tokens.append(self.robot_embedding(parts.robot_id).expand(batch, 1, -1))
        n_bytes = task_tokens.shape[1]
        tokens.append(self.byte_embedding(task_tokens) + self.byte_position[:n_bytes])

        # (batch, n_context + n_bytes, dim_model)
        memory = torch.cat(tokens, dim=1)
        # (batch, n_bytes) -> (batch, n_context + n_bytes): only padding bytes are masked
        is_pad = nn.functional.pad(task_tokens == 0, (self.n_context_tokens, 0), value=False)
        key_mask = padding_mask(is_pad, memory.dtype)  # (batch, 1, 1, n_tokens)
        for layer in self.trunk:
            memory = layer(memory, key_mask)
        return self.trunk_norm(memory), key_mask

    def velocity(
        self,
        noisy: torch.Tensor,
        time: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the flow velocity of padded, normalised action chunks.

        Args:
            noisy: `x_t` `(batch, chunk, max_action_dim)`.
            time: `t` `(batch,)`, or `(1,)` for one time shared by the batch.
            memory: Trunk tokens `(batch, n_tokens, dim_model)`.
            memory_mask: Key mask of `memory`, `(batch, 1, 1, n_tokens)`.

        Returns:
            `(batch, chunk, max_action_dim)`.
        """
        # (batch, chunk, dim) + (chunk, dim) + (batch or 1, 1, dim)
        tokens = self.action_input(noisy) + self.action_position
        tokens = tokens + self.time_embedding(time)[:, None, :]
        for layer in self.expert:
            tokens = layer(tokens, memory, memory_mask)
        return self.action_output(self.expert_norm(tokens))

    def integrate(
        self, memory: torch.Tensor, memory_mask: torch.Tensor, start: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Integrate the flow with `num_inference_steps` Euler steps from `t = 0` to 1.

        Args:
            memory: Trunk tokens `(batch, n_tokens, dim_model)`.
            memory_mask: Key mask of `memory`.
            start: `x_0` `(batch, chunk, max_action_dim)`; `None` starts from zeros, the mode
                of the training noise, which makes the policy deterministic.

        Returns:
            Padded, normalised actions `(batch, chunk, max_action_dim)`.
        """
        x = self.start_chunk(memory) if start is None else start
        steps = self.config.num_inference_steps
        dt = 1.0 / steps
        for step in range(steps):
            # One time for the whole batch: `(1,)` keeps the graph free of batch-sized constants.
            time = torch.full((1,), step * dt, dtype=x.dtype, device=x.device)
            x = x + dt * self.velocity(x, time, memory, memory_mask)
        return x

    def start_chunk(self, memory: torch.Tensor) -> torch.Tensor:
        """Return the zeros `x_0` `(batch, chunk, max_action_dim)` that inference starts from."""
        batch = memory.shape[0]
        return memory.new_zeros(batch, self.config.chunk_size, self.config.max_action_dim)

    def normalize_action(self, action: torch.Tensor, robot: int = 0) -> torch.Tensor:
        """Map physical actions `(..., action_dim)` of robot `robot` (an index into
        `robot_names`) to padded, normalised `(..., max_action_dim)`."""
        parts = self.embodiment(robot)
        normalized = parts.normalizer.normalize(ACTION, action)
        gripper = None
        if parts.gripper is not None:
            # Open -1, closed +1 by the dataset's gripper range.
            gripper = 2.0 * parts.gripper.to_unit(action[..., -1]) - 1.0
        return parts.action_layout.pad(normalized[..., : parts.action_layout.n_arm], gripper)

    def unnormalize_action(self, padded: torch.Tensor, robot: int = 0) -> torch.Tensor:
        """Map padded, normalised actions back to physical `(..., action_dim)` of robot `robot`.

        The gripper comes out as exactly the open or the closed value.
        """
        parts = self.embodiment(robot)
        arm, gripper = parts.action_layout.unpad(padded)
        if gripper is None:
            return parts.normalizer.unnormalize(ACTION, arm)
        # (..., n_arm) + (..., 1) -> (..., action_dim); the gripper element is replaced below.
        physical = parts.normalizer.unnormalize(ACTION, torch.cat([arm, gripper[..., None]], -1))
        closed = (gripper + 1.0) / 2.0 >= self.config.gripper_threshold
        snapped = parts.gripper.from_closed(closed)
        # (..., n_arm) + (..., 1) -> (..., action_dim)
        return torch.cat([physical[..., :-1], snapped[..., None]], dim=-1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute the flow-matching loss on a batch.

        Args:
            batch: Raw inputs named by `policy_input_names(spec)`, `action` float32
                `(batch, chunk, action_dim)` in physical units and `action_is_pad` bool
                `(batch, chunk)`, true for steps past the episode's end. An optional `robot`
                entry, int64 `(batch,)` with one index into `robot_names` in every row,
                selects the robot; without it the batch is the primary robot's.

        Returns:
            `loss` (scalar to minimise) and `mse`, both the mean squared velocity error over
            the steps that are not padding and the action elements the robot has.
        """
        robot = self._check_batch(batch)
        memory, memory_mask = self.encode(batch, robot)
        target = self.normalize_action(batch[ACTION], robot)  # (batch, chunk, max_action_dim)
        valid_steps = (~batch[ACTION_IS_PAD]).to(target.dtype)  # (batch, chunk)

        draws = self.config.noise_samples
        if draws > 1:
            # (batch, ...) -> (batch * draws, ...), each observation's draws side by side
            memory = memory.repeat_interleave(draws, dim=0)
            memory_mask = memory_mask.repeat_interleave(draws, dim=0)
            target = target.repeat_interleave(draws, dim=0)
            valid_steps = valid_steps.repeat_interleave(draws, dim=0)
        noise = torch.randn_like(target)
        time = self._sample_time(target.shape[0], target.device)
        # (batch,) -> (batch, 1, 1), broadcast over steps and action elements
        t = time[:, None, None]
        noisy = t * target + (1.0 - t) * noise
        predicted = self.velocity(noisy, time, memory, memory_mask)

        # (batch, chunk, 1) * (max_action_dim,): only real steps and real action elements count
        weights = valid_steps[..., None] * self.embodiment(robot).action_valid
        squared = (predicted - (target - noise)) ** 2 * weights
        mse = squared.sum() / weights.sum().clamp_min(1.0)
        return {"loss": mse, "mse": mse}

    def _sample_time(self, count: int, device: torch.device) -> torch.Tensor:
        if self.config.time_sampling == "uniform":
            return torch.rand(count, device=device)
        concentration = torch.tensor([1.5, 1.0], device=device)
        beta = torch.distributions.Beta(concentration[0], concentration[1])
        return 1.0 - beta.sample((count,))

    def _check_batch(self, batch: Mapping[str, torch.Tensor]) -> int:
        """Check a training batch; return the index of its robot in `robot_names`."""
        missing = [key for key in (*self.input_names, ACTION, ACTION_IS_PAD) if key not in batch]
        if missing:
            raise SpecError(f"training batch is missing {missing}; it has {sorted(batch)}")
        chunk = batch[ACTION].shape[1]
        if chunk != self.config.chunk_size:
            raise SpecError(
                f"batch actions have {chunk} steps but the policy's chunk_size is "
                f"{self.config.chunk_size}; build the dataset with "
                f"chunk_size={self.config.chunk_size}"
            )
        robot = batch_robot(batch.get(ROBOT), self.robot_names)
        width = self.embodiment(robot).spec.features[ACTION].shape[0]
        if batch[ACTION].shape[-1] != width:
            raise SpecError(
                f"batch actions have {batch[ACTION].shape[-1]} elements, but robot "
                f"{self.robot_names[robot]!r} has {width}; set the batch's {ROBOT!r} entry to "
                "the index of its robot in robot_names"
            )
        return robot

    def predict_action_chunk(
        self, inputs: Mapping[str, torch.Tensor], start: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict actions in physical units from raw inputs.

        Args:
            inputs: Tensors named by `policy_input_names(spec)`: images uint8
                `(batch, height, width, 3)`, vectors float32 `(batch, dim)`, `task_tokens` int64
                `(batch, 64)`.
            start: `x_0` `(batch, chunk, max_action_dim)`, for example Gaussian noise to sample
                varied chunks; `None` starts from zeros, as the exported model does.

        Returns:
            float32 `(batch, chunk, action_dim)` of the primary robot: joint position targets
            in rad, then the gripper command, exactly the dataset's open or closed value.
        """
        self.check_inputs(inputs)
        memory, memory_mask = self.encode(inputs)
        return self.unnormalize_action(self.integrate(memory, memory_mask, start))

    def inference_module(self, integration: str = "unrolled") -> nn.Module:
        """Return a module for ONNX export that shares this policy's weights.

        Its `forward` takes the raw inputs positionally in `policy_input_names(spec)` order and
        returns the chunk `(batch, chunk, action_dim)` in physical units.

        Args:
            integration: `unrolled` repeats the action expert once per Euler step in the graph;
                `loop` puts one copy of it in an ONNX `Loop` node. Either starts from zeros.

        Raises:
            UnknownNameError: `integration` is not one of `INTEGRATION_MODES`.
        """
        check_choice("integration", integration, INTEGRATION_MODES)
        if integration == "loop":
            from robota.policies.flow_export import loop_inference_module

            return loop_inference_module(self)
        return super().inference_module()


def _trim_padding(task_tokens: torch.Tensor) -> torch.Tensor:
    """Drop the trailing byte columns that are padding in every row of `(batch, n_bytes)`.

    Padding keys get zero attention weight and padding queries feed only masked keys, so the
    result is the same as with all 64 columns up to float rounding. The trunk over all 64 bytes
    took about 60% of a training step on a 2-core CPU. A traced, compiled or exported graph keeps
    all columns, because the kept width depends on the input's values.
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return task_tokens
    used = (task_tokens != 0).any(dim=0).nonzero()
    width = int(used.max()) + 1 if used.numel() else 1
    return task_tokens[:, :width]


def _module_name(key: str) -> str:
    # Module names cannot contain dots, which every feature key has.
    return key.replace(".", "__")
