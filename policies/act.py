"""ACT: a transformer that predicts a chunk of future actions from one observation.

The design follows Action Chunking with Transformers (Zhao et al., 2023,
https://arxiv.org/abs/2304.13705), sized to train from scratch on a CPU in minutes:

- each camera goes through its own small CNN to a coarse grid, one token per grid cell;
- each vector observation (`Spec.vector_keys`) becomes one token through a linear layer;
- the instruction's UTF-8 bytes are pooled into a few tokens;
- a transformer encoder mixes all tokens, and a decoder with `chunk_size` learned queries reads
  them and a linear head turns each query into one action.

Training minimises the L1 distance to the normalised demonstrated actions, ignoring the padded
steps past an episode's end. The policy is deterministic.

TODO: the paper's conditional-VAE objective (a style latent from an action encoder, with a KL
term) is not implemented, so where demonstrations disagree the policy predicts one compromise
chunk. The objective would add one latent token to the encoder input in `_encode` and a `kl`
entry to the loss dict of `forward`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from robota.errors import SpecError
from robota.policies.layers import DecoderLayer, EncoderLayer, ImageEncoder, InstructionEncoder
from robota.policies.normalize import MODES, Normalizer
from robota.spec import ACTION, TASK_TOKENS, Spec, policy_input_names

ACTION_IS_PAD = "action_is_pad"


@dataclasses.dataclass
class ACTConfig:
    """Hyperparameters of `ACTPolicy`.

    Attributes:
        chunk_size: Actions predicted per call, one per control period.
        n_action_steps: Actions of each chunk executed before planning again; at most
            `chunk_size`. `None` means `chunk_size`.
        dim_model: Token width of the transformer.
        n_heads: Attention heads; must divide `dim_model`.
        n_encoder_layers: Transformer encoder layers over the observation tokens.
        n_decoder_layers: Transformer decoder layers over the action queries.
        dim_feedforward: Hidden width of the feed-forward layers.
        dropout: Dropout in the transformer layers during training.
        image_channels: Output channels of each stride-2 convolution of the camera CNNs; five
            layers turn a 96×96 image into a 3×3 grid of tokens. A 6×6 grid (four layers) made
            a training step about 60% slower on a 2-core CPU.
        n_instruction_tokens: Tokens the instruction bytes are pooled into.
        state_normalization: Normalisation mode of vector observations.
        action_normalization: Normalisation mode of actions.
        optimizer_lr: Suggested AdamW learning rate for training from scratch.
        optimizer_weight_decay: Suggested AdamW weight decay.
    """

    chunk_size: int = 10
    n_action_steps: int | None = None
    dim_model: int = 128
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 1
    dim_feedforward: int = 256
    dropout: float = 0.1
    image_channels: tuple[int, ...] = (16, 32, 32, 64, 64)
    n_instruction_tokens: int = 2
    state_normalization: str = "mean_std"
    action_normalization: str = "mean_std"
    optimizer_lr: float = 1e-3
    optimizer_weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        self.image_channels = tuple(int(c) for c in self.image_channels)
        if self.n_action_steps is None:
            self.n_action_steps = self.chunk_size
        _check_positive(self, "chunk_size", "n_action_steps", "dim_model", "n_heads")
        _check_positive(self, "n_encoder_layers", "n_decoder_layers", "dim_feedforward")
        _check_positive(self, "n_instruction_tokens")
        if not self.image_channels or min(self.image_channels) < 1:
            raise SpecError(
                f"image_channels must be positive channel counts, got {self.image_channels}"
            )
        if self.n_action_steps > self.chunk_size:
            raise SpecError(
                f"n_action_steps ({self.n_action_steps}) cannot exceed chunk_size "
                f"({self.chunk_size}); lower n_action_steps or raise chunk_size"
            )
        if self.dim_model % self.n_heads:
            raise SpecError(
                f"n_heads ({self.n_heads}) must divide dim_model ({self.dim_model}); "
                "for example use n_heads=4 with dim_model=128"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"dropout must be in [0, 1), got {self.dropout}")
        for field in ("state_normalization", "action_normalization"):
            if getattr(self, field) not in MODES:
                raise SpecError(f"{field} {getattr(self, field)!r} is not one of {MODES}")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values."""
        data = dataclasses.asdict(self)
        data["image_channels"] = list(self.image_channels)
        return data


def _check_positive(config: ACTConfig, *fields: str) -> None:
    for field in fields:
        value = getattr(config, field)
        if not isinstance(value, int) or value < 1:
            raise SpecError(f"ACT config {field} must be a positive integer, got {value!r}")


class ACTPolicy(nn.Module):
    """Action-chunking transformer over camera, vector and instruction tokens.

    Args:
        config: Hyperparameters.
        spec: Feature spec; fixes the cameras, vector observations and action size.
        stats: Dataset statistics in LeRobot's `stats.json` form, with every image key, every
            `spec.vector_keys` entry and `action`.

    Raises:
        SpecError: The statistics lack a feature the policy uses or have the wrong shape.
    """

    name = "act"
    config_class = ACTConfig

    def __init__(self, config: ACTConfig, spec: Spec, stats: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self.stats = stats
        self.input_names = policy_input_names(spec)
        self.action_dim = spec.features[ACTION].shape[0]
        dim = config.dim_model

        self.normalizer = Normalizer(stats, _normalized_features(config, spec))
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
                _module_name(key): nn.Linear(spec.features[key].shape[0], dim)
                for key in spec.vector_keys
            }
        )
        self.vector_position = nn.Parameter(torch.randn(len(spec.vector_keys), dim) * 0.02)
        self.instruction_encoder = InstructionEncoder(
            dim, config.n_instruction_tokens, config.n_heads
        )

        def encoder_layer() -> EncoderLayer:
            return EncoderLayer(dim, config.n_heads, config.dim_feedforward, config.dropout)

        def decoder_layer() -> DecoderLayer:
            return DecoderLayer(dim, config.n_heads, config.dim_feedforward, config.dropout)

        self.encoder = nn.ModuleList([encoder_layer() for _ in range(config.n_encoder_layers)])
        self.encoder_norm = nn.LayerNorm(dim)
        self.action_queries = nn.Parameter(torch.randn(config.chunk_size, dim) * 0.02)
        self.decoder = nn.ModuleList([decoder_layer() for _ in range(config.n_decoder_layers)])
        self.decoder_norm = nn.LayerNorm(dim)
        self.action_head = nn.Linear(dim, self.action_dim)

    def _encode(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Turn raw inputs into normalised, encoded tokens `(batch, n_tokens, dim_model)`."""
        tokens: list[torch.Tensor] = []
        for key in self.spec.image_keys:
            # (batch, height, width, 3) uint8 -> (batch, 3, height, width)
            images = inputs[key].permute(0, 3, 1, 2)
            images = self.normalizer.normalize(key, images)
            tokens.append(self.image_encoders[_module_name(key)](images))

        vectors = [
            self.vector_projections[_module_name(key)](self.normalizer.normalize(key, inputs[key]))
            for key in self.spec.vector_keys
        ]
        # n_vectors x (batch, dim_model) -> (batch, n_vectors, dim_model)
        tokens.append(torch.stack(vectors, dim=1) + self.vector_position)
        tokens.append(self.instruction_encoder(inputs[TASK_TOKENS]))

        # (batch, n_image_tokens + n_vectors + n_instruction_tokens, dim_model)
        memory = torch.cat(tokens, dim=1)
        for layer in self.encoder:
            memory = layer(memory)
        return self.encoder_norm(memory)

    def _decode(self, memory: torch.Tensor) -> torch.Tensor:
        """Read a normalised action chunk `(batch, chunk, action_dim)` from the tokens."""
        queries = self.action_queries.expand(memory.shape[0], -1, -1)
        for layer in self.decoder:
            queries = layer(queries, memory)
        return self.action_head(self.decoder_norm(queries))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute the training loss on a batch.

        Args:
            batch: Raw inputs named by `policy_input_names(spec)` (images uint8
                `(batch, height, width, 3)`, vectors float32 `(batch, dim)`, `task_tokens` int64
                `(batch, 64)`), `action` float32 `(batch, chunk, action_dim)` in physical units and
                `action_is_pad` bool `(batch, chunk)`, true for steps past the episode's end.

        Returns:
            `loss` (scalar to minimise) and `l1` (mean absolute error of the normalised actions
            over the steps that are not padding).
        """
        self._check_batch(batch)
        predicted = self._decode(self._encode(batch))
        target = self.normalizer.normalize(ACTION, batch[ACTION])
        valid = (~batch[ACTION_IS_PAD]).to(predicted.dtype)
        # (batch, chunk) -> (batch, chunk, 1), broadcast over action_dim
        errors = (predicted - target).abs() * valid[..., None]
        l1 = errors.sum() / (valid.sum() * self.action_dim).clamp_min(1.0)
        return {"loss": l1, "l1": l1}

    def _check_batch(self, batch: Mapping[str, torch.Tensor]) -> None:
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

    def predict_action_chunk(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Predict actions in physical units from raw inputs.

        Args:
            inputs: Tensors named by `policy_input_names(spec)`: images uint8
                `(batch, height, width, 3)`, vectors float32 `(batch, dim)`, `task_tokens` int64
                `(batch, 64)`.

        Returns:
            float32 `(batch, chunk, action_dim)`: joint position targets in rad, then the gripper
            command in [0, 1] (not clipped).
        """
        missing = [key for key in self.input_names if key not in inputs]
        if missing:
            raise SpecError(f"policy inputs are missing {missing}; expected {self.input_names}")
        normalized = self._decode(self._encode(inputs))
        return self.normalizer.unnormalize(ACTION, normalized)

    def inference_module(self) -> nn.Module:
        """Return a module for export that shares this policy's weights.

        Its `forward` takes the raw inputs positionally in `policy_input_names(spec)` order and
        returns the chunk `(batch, chunk, action_dim)` in physical units. Put the policy in eval
        mode before exporting; the module starts in the policy's mode.
        """
        module = ACTInferenceModule(self)
        module.training = self.training  # Only the wrapper's own flag; the policy keeps its mode.
        return module


class ACTInferenceModule(nn.Module):
    """Positional-input wrapper of `ACTPolicy.predict_action_chunk` for ONNX export.

    `forward` takes `*inputs`, so `torch.onnx.export(..., dynamo=True)` needs the dynamic shapes
    nested one level deeper than the inputs; `dynamic_batch_shapes` builds them. The legacy
    exporter (`dynamo=False`) takes `dynamic_axes` keyed by input name as usual.
    """

    def __init__(self, policy: ACTPolicy) -> None:
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


def _module_name(key: str) -> str:
    # Module names cannot contain dots, which every feature key has.
    return key.replace(".", "__")


def _normalized_features(config: ACTConfig, spec: Spec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Return the normalisation mode and shape of every feature the policy reads or predicts."""
    features = {key: ("mean_std", spec.features[key].shape) for key in spec.image_keys}
    for key in spec.vector_keys:
        features[key] = (config.state_normalization, spec.features[key].shape)
    features[ACTION] = (config.action_normalization, spec.features[ACTION].shape)
    return features
