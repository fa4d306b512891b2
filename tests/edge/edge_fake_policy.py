"""A tiny torch policy with the checkpoint contract of `robota.policies`, for export tests.

It has `.spec`, `.config` (with `chunk_size` and `n_action_steps`) and `inference_module()`,
whose forward takes raw inputs positionally in `policy_input_names(spec)` order and returns
the action chunk `(batch, chunk, action_dim)` in physical units, normalisation inside.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from robota import spec as spec_lib

FAKE_CAMERAS = {"wrist": (32, 32)}


@dataclasses.dataclass
class FakeConfig:
    chunk_size: int = 10
    n_action_steps: int = 4
    hidden_dim: int = 32


class FakePolicy(nn.Module):
    """Image features, vector features and instruction tokens through an MLP to a chunk."""

    def __init__(self, spec: spec_lib.Spec, config: FakeConfig, *, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.spec = spec
        self.config = config
        hidden = config.hidden_dim
        action_dim = spec.robot.action_dim
        self.image_keys = spec.image_keys
        self.vector_keys = spec.vector_keys
        vector_dim = sum(spec.features[k].shape[0] for k in self.vector_keys)

        self.conv = nn.Conv2d(3, 8, kernel_size=5, stride=4)
        self.image_proj = nn.Linear(8 * len(self.image_keys), hidden)
        self.register_buffer("vector_mean", torch.randn(vector_dim) * 0.1)
        self.register_buffer("vector_std", torch.rand(vector_dim) + 0.5)
        self.vector_proj = nn.Linear(vector_dim, hidden)
        self.token_embedding = nn.Embedding(spec_lib.INSTRUCTION_VOCAB_SIZE, hidden, padding_idx=0)
        self.head = nn.Sequential(
            nn.Linear(3 * hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, config.chunk_size * action_dim),
        )
        self.register_buffer("action_mean", torch.randn(action_dim))
        self.register_buffer("action_std", torch.rand(action_dim) + 0.5)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        n_images = len(self.image_keys)
        images, vectors, tokens = inputs[:n_images], inputs[n_images:-1], inputs[-1]
        batch = tokens.shape[0]

        pooled = []
        for image in images:
            x = image.permute(0, 3, 1, 2).float() / 255.0  # (batch, 3, height, width)
            pooled.append(torch.relu(self.conv(x)).mean(dim=(2, 3)))  # (batch, 8)
        image_features = self.image_proj(torch.cat(pooled, dim=-1))  # (batch, hidden)

        vector = torch.cat(vectors, dim=-1)  # (batch, vector_dim)
        vector_features = self.vector_proj((vector - self.vector_mean) / self.vector_std)

        mask = (tokens > 0).unsqueeze(-1).float()  # (batch, 64, 1)
        summed = (self.token_embedding(tokens) * mask).sum(dim=1)
        token_features = summed / mask.sum(dim=1).clamp(min=1.0)  # (batch, hidden)

        features = torch.cat([image_features, vector_features, token_features], dim=-1)
        normalised = self.head(features).reshape(batch, self.config.chunk_size, -1)
        return normalised * self.action_std + self.action_mean  # (batch, chunk, action_dim)

    def inference_module(self) -> nn.Module:
        return self


def make_fake_policy(*, chunk_size: int = 10, n_action_steps: int = 4, seed: int = 0) -> FakePolicy:
    """Build a fake policy in eval mode for a UR5e at 10 Hz with one 32x32 wrist camera."""
    spec = spec_lib.make_arm_spec(spec_lib.UR5E, 10, FAKE_CAMERAS)
    config = FakeConfig(chunk_size=chunk_size, n_action_steps=n_action_steps)
    return FakePolicy(spec, config, seed=seed).eval()


def build_inputs(spec: spec_lib.Spec, observations: list[dict]) -> dict:
    """Model inputs in `policy_input_names(spec)` order, as the exported graph takes them."""
    inputs = spec_lib.build_policy_inputs(spec, observations)
    return {name: inputs[name] for name in spec_lib.policy_input_names(spec)}
