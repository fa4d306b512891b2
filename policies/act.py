"""ACT: a transformer that predicts a chunk of future actions from one observation.

The design follows Action Chunking with Transformers (Zhao et al., 2023,
https://arxiv.org/abs/2304.13705), sized to train from scratch on a CPU in minutes:

- each camera goes through its own small CNN to a coarse grid, one token per grid cell;
- each vector observation (`Spec.vector_keys`) becomes one token through a linear layer;
- the instruction's UTF-8 bytes are pooled into a few tokens;
- with `use_vae`, one more token carries a style latent `z` (see below);
- a transformer encoder mixes all tokens, and a decoder with `chunk_size` learned queries reads
  them and a linear head turns each query into one action.

Training is a conditional VAE, as in the paper. A CVAE encoder reads `[CLS, state, action
chunk]` and outputs the mean and log-variance of `z`. A sample of `z` goes to the decoder, and the
loss is the L1 distance to the normalised demonstrated actions plus `kl_weight` times the KL
divergence of `z` from a standard normal. The latent absorbs what varies between demonstrations
of the same observation, so the decoder is not pulled to one compromise chunk. At inference `z`
is 0, the prior's mean, so the policy is deterministic and the CVAE encoder is not part of the
exported graph. Padded steps past an episode's end count neither in the loss nor in the encoder.

The gripper element, when the spec has one, is a binary channel: the head outputs its logit,
trained with binary cross-entropy against the command mapped to [0, 1] by the dataset's range,
and `predict_action_chunk` returns exactly the open or closed value (see `ChunkPolicy`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robota.errors import SpecError
from robota.policies.base import ChunkPolicy, ChunkPolicyConfig, check_positive
from robota.policies.layers import (
    DecoderLayer,
    EncoderLayer,
    ImageEncoder,
    InstructionEncoder,
    padding_mask,
)
from robota.policies.normalize import MODES, Normalizer
from robota.spec import ACTION, OBS_STATE, TASK_TOKENS, Spec

ACTION_IS_PAD = "action_is_pad"


@dataclasses.dataclass
class ACTConfig(ChunkPolicyConfig):
    """Hyperparameters of `ACTPolicy`; the execution fields are those of `ChunkPolicyConfig`.

    Attributes:
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
        action_normalization: Normalisation mode of the arm's actions. The gripper is
            normalised on its own, by the dataset's range.
        use_vae: Train as a conditional VAE with a style latent; `False` trains a deterministic
            chunk regressor with the L1 loss alone.
        latent_dim: Size of the style latent `z`.
        n_vae_encoder_layers: Transformer layers of the CVAE encoder, used in training only.
        kl_weight: Weight of the KL term in the loss; the paper uses 10.
    """

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
    use_vae: bool = True
    latent_dim: int = 32
    n_vae_encoder_layers: int = 2
    kl_weight: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.image_channels = tuple(int(c) for c in self.image_channels)
        check_positive(self, "dim_model", "n_heads", "n_encoder_layers", "n_decoder_layers")
        check_positive(self, "dim_feedforward", "n_instruction_tokens")
        check_positive(self, "latent_dim", "n_vae_encoder_layers")
        if not self.image_channels or min(self.image_channels) < 1:
            raise SpecError(
                f"image_channels must be positive channel counts, got {self.image_channels}"
            )
        if self.dim_model % self.n_heads:
            raise SpecError(
                f"n_heads ({self.n_heads}) must divide dim_model ({self.dim_model}); "
                "for example use n_heads=4 with dim_model=128"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.use_vae, bool):
            raise SpecError(f"use_vae must be true or false, got {self.use_vae!r}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0.0):
            raise SpecError(f"kl_weight must be a finite number >= 0, got {self.kl_weight}")
        for field in ("state_normalization", "action_normalization"):
            if getattr(self, field) not in MODES:
                raise SpecError(f"{field} {getattr(self, field)!r} is not one of {MODES}")


class CVAEEncoder(nn.Module):
    """ACT's CVAE encoder: the posterior of the style latent given the state and the chunk.

    A transformer encoder over `[CLS, state, action_1 … action_chunk]` with learned positions.
    The CLS output gives the mean and log-variance of `z`. Only training uses it.

    Args:
        config: ACT hyperparameters.
        state_dim: Size of `observation.state`, or None when the spec has none.
        action_dim: Elements per action.
    """

    def __init__(self, config: ACTConfig, state_dim: int | None, action_dim: int) -> None:
        super().__init__()
        dim = config.dim_model
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.state_projection = None if state_dim is None else nn.Linear(state_dim, dim)
        self.action_projection = nn.Linear(action_dim, dim)
        self.n_prefix = 1 if state_dim is None else 2
        self.position = nn.Parameter(torch.randn(self.n_prefix + config.chunk_size, dim) * 0.02)
        self.layers = nn.ModuleList(
            EncoderLayer(dim, config.n_heads, config.dim_feedforward, config.dropout)
            for _ in range(config.n_vae_encoder_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.latent_head = nn.Linear(dim, 2 * config.latent_dim)

    def forward(
        self, state: torch.Tensor | None, actions: torch.Tensor, is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mean and log-variance `(batch, latent_dim)` of the style latent.

        Args:
            state: Normalised state `(batch, state_dim)`, or None without a state projection.
            actions: Normalised actions `(batch, chunk, action_dim)`.
            is_pad: bool `(batch, chunk)`, true for steps past the episode's end.
        """
        batch = actions.shape[0]
        tokens = [self.cls.expand(batch, -1, -1)]
        if self.state_projection is not None and state is not None:
            # (batch, state_dim) -> (batch, 1, dim)
            tokens.append(self.state_projection(state)[:, None])
        tokens.append(self.action_projection(actions))
        # (batch, n_prefix + chunk, dim)
        sequence = torch.cat(tokens, dim=1) + self.position

        prefix_pad = torch.zeros(batch, self.n_prefix, dtype=torch.bool, device=is_pad.device)
        # (batch, n_prefix + chunk)
        mask = padding_mask(torch.cat([prefix_pad, is_pad], dim=1), sequence.dtype)
        for layer in self.layers:
            sequence = layer(sequence, attn_mask=mask)

        mean, log_variance = self.latent_head(self.norm(sequence[:, 0])).chunk(2, dim=-1)
        return mean, log_variance


class ACTPolicy(ChunkPolicy):
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
        super().__init__(config, spec, stats)
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

        self.cvae_encoder: CVAEEncoder | None = None
        self.latent_projection: nn.Linear | None = None
        if config.use_vae:
            state_dim = spec.features[OBS_STATE].shape[0] if OBS_STATE in spec.vector_keys else None
            self.cvae_encoder = CVAEEncoder(config, state_dim, self.action_dim)
            self.latent_projection = nn.Linear(config.latent_dim, dim)

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

    def _encode(
        self, inputs: Mapping[str, torch.Tensor], latent_token: torch.Tensor | None
    ) -> torch.Tensor:
        """Turn raw inputs and the latent token `(batch, 1, dim_model)` into encoded tokens.

        Returns:
            `(batch, n_tokens, dim_model)`.
        """
        tokens: list[torch.Tensor] = [] if latent_token is None else [latent_token]
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

        # (batch, n_latent + n_image_tokens + n_vectors + n_instruction_tokens, dim_model)
        memory = torch.cat(tokens, dim=1)
        for layer in self.encoder:
            memory = layer(memory)
        return self.encoder_norm(memory)

    def _decode(self, memory: torch.Tensor) -> torch.Tensor:
        """Read the head's output `(batch, chunk, action_dim)` from the tokens.

        The arm's elements are normalised actions and the gripper's element is a logit.
        """
        queries = self.action_queries.expand(memory.shape[0], -1, -1)
        for layer in self.decoder:
            queries = layer(queries, memory)
        return self.action_head(self.decoder_norm(queries))

    def _prior_latent_token(self, batch: int) -> torch.Tensor | None:
        """Return the latent token of `z = 0`, `(batch, 1, dim_model)`, or None without the VAE."""
        if self.latent_projection is None:
            return None
        # A linear layer maps z = 0 to its bias, so the export needs no zero tensor of the batch.
        return self.latent_projection.bias.expand(batch, 1, -1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute the training loss on a batch.

        In training mode with `use_vae`, `z` is sampled from the CVAE encoder's posterior. In
        eval mode `z` is 0 as at inference, so a validation loss measures what a rollout runs.

        Args:
            batch: Raw inputs named by `policy_input_names(spec)` (images uint8
                `(batch, height, width, 3)`, vectors float32 `(batch, dim)`, `task_tokens` int64
                `(batch, 64)`), `action` float32 `(batch, chunk, action_dim)` in physical units and
                `action_is_pad` bool `(batch, chunk)`, true for steps past the episode's end.

        Returns:
            `loss` (the scalar to minimise) and its terms: `l1` (mean absolute error of the
            normalised arm actions over the steps that are not padding), `gripper_bce` (binary
            cross-entropy of the gripper, with a gripper) and `kl` (the KL divergence of `z`,
            0 in eval mode, with `use_vae`).
        """
        self._check_batch(batch)
        is_pad = batch[ACTION_IS_PAD]
        target = self._training_target(batch[ACTION])

        latent_token = self._prior_latent_token(is_pad.shape[0])
        kl = None
        if self.cvae_encoder is not None and self.latent_projection is not None:
            kl = target.new_zeros(())
            if self.training:
                latent, kl = self._sample_latent(batch, target, is_pad)
                # (batch, latent_dim) -> (batch, 1, dim_model)
                latent_token = self.latent_projection(latent)[:, None]

        predicted = self._decode(self._encode(batch, latent_token))
        losses = self._reconstruction_losses(predicted, target, is_pad)
        if kl is not None:
            losses["kl"] = kl
            losses["loss"] = losses["loss"] + self.config.kl_weight * kl
        return losses

    def _training_target(self, actions: torch.Tensor) -> torch.Tensor:
        """Map physical actions `(batch, chunk, action_dim)` to the head's target space.

        The arm's elements are normalised, and the gripper's element goes to [0, 1].
        """
        target = self.normalizer.normalize(ACTION, actions)
        if self.gripper is None:
            return target
        index = self.gripper_index
        gripper = self.gripper.to_unit(actions[..., index])
        # (batch, chunk) -> (batch, chunk, 1), joined back in the gripper's place
        return torch.cat([target[..., :index], gripper[..., None], target[..., index + 1 :]], -1)

    def _sample_latent(
        self, batch: Mapping[str, torch.Tensor], target: torch.Tensor, is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample `z` `(batch, latent_dim)` by reparameterisation; return it and the mean KL."""
        state = None
        if OBS_STATE in self.spec.vector_keys:
            state = self.normalizer.normalize(OBS_STATE, batch[OBS_STATE])
        mean, log_variance = self.cvae_encoder(state, target, is_pad)
        latent = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)
        # KL(N(mean, var) || N(0, 1)), summed over the latent and averaged over the batch.
        kl = -0.5 * (1.0 + log_variance - mean.pow(2) - log_variance.exp())
        return latent, kl.sum(dim=-1).mean()

    def _reconstruction_losses(
        self, predicted: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Return the arm's L1 and the gripper's BCE over the steps that are not padding."""
        valid = (~is_pad).to(predicted.dtype)
        n_valid = valid.sum().clamp_min(1.0)
        arm = slice(0, self.gripper_index)  # All elements when there is no gripper.
        arm_dim = predicted[..., arm].shape[-1]

        # (batch, chunk) -> (batch, chunk, 1), broadcast over the arm's elements
        errors = (predicted[..., arm] - target[..., arm]).abs() * valid[..., None]
        l1 = errors.sum() / (n_valid * arm_dim).clamp_min(1.0)
        losses = {"l1": l1, "loss": l1}
        if self.gripper_index is not None:
            index = self.gripper_index
            bce = F.binary_cross_entropy_with_logits(
                predicted[..., index].float(), target[..., index].float(), reduction="none"
            )
            losses["gripper_bce"] = (bce * valid).sum() / n_valid
            losses["loss"] = l1 + losses["gripper_bce"]
        return losses

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
        """Predict actions in physical units from raw inputs, with `z = 0`.

        Args:
            inputs: Tensors named by `policy_input_names(spec)`: images uint8
                `(batch, height, width, 3)`, vectors float32 `(batch, dim)`, `task_tokens` int64
                `(batch, 64)`.

        Returns:
            float32 `(batch, chunk, action_dim)`: joint position targets in rad, then the gripper
            command, exactly the dataset's open (`min`) or closed (`max`) value.
        """
        self.check_inputs(inputs)
        batch = inputs[TASK_TOKENS].shape[0]
        output = self._decode(self._encode(inputs, self._prior_latent_token(batch)))
        actions = self.normalizer.unnormalize(ACTION, output)
        if self.gripper is None:
            return actions

        # sigmoid(logit) >= threshold, compared on the logit so no sigmoid enters the graph.
        threshold = self.config.gripper_threshold
        index = self.gripper_index
        closed = output[..., index] >= math.log(threshold / (1.0 - threshold))
        gripper = self.gripper.from_closed(closed)
        # (batch, chunk) -> (batch, chunk, 1), joined back in the gripper's place
        return torch.cat([actions[..., :index], gripper[..., None], actions[..., index + 1 :]], -1)


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
