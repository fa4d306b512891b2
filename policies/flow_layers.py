"""Building blocks of the flow-matching policy: the action expert's layer, the time embedding
and the per-robot padding of joint-indexed vectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robota.errors import SpecError
from robota.policies.layers import Attention, FeedForward
from robota.spec import GRIPPER_NAME, FeatureSpec


class ExpertLayer(nn.Module):
    """Pre-norm layer of the action expert: action tokens attend to each other, then to the trunk.

    Self-attention is not causal, because every step of a chunk is denoised together. Unlike
    `robota.policies.layers.DecoderLayer`, the cross-attention takes a key mask, so the
    instruction's padding bytes in the trunk output receive no attention.
    """

    def __init__(self, dim: int, n_heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = Attention(dim, n_heads, dropout)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attention = Attention(dim, n_heads, dropout)
        self.norm_feed_forward = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, hidden, dropout)

    def forward(
        self, actions: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """Update `actions` `(batch, chunk, dim)` from the trunk output `memory`.

        Args:
            actions: Action tokens `(batch, chunk, dim)`.
            memory: Trunk tokens `(batch, n_tokens, dim)`.
            memory_mask: Additive key mask `(batch, 1, 1, n_tokens)`.
        """
        actions = actions + self.self_attention(self.norm_self(actions))
        actions = actions + self.cross_attention(
            self.norm_cross(actions), memory, attn_mask=memory_mask
        )
        return actions + self.feed_forward(self.norm_feed_forward(actions))


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the flow time `t` in [0, 1] followed by a two-layer MLP.

    Periods run geometrically from 4e-3 to 4, as in pi0 (Black et al., 2024,
    https://arxiv.org/abs/2410.24164), so both coarse and fine changes of `t` are visible.
    """

    def __init__(self, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> None:
        super().__init__()
        if dim % 2:
            raise SpecError(f"the time embedding needs an even dim_model, got {dim}")
        fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64)
        period = min_period * (max_period / min_period) ** fraction
        # Recomputed from the config at construction, so it need not be saved in checkpoints.
        self.register_buffer(
            "angular_frequency", (2 * math.pi / period).to(torch.float32), persistent=False
        )
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        """Embed `time` `(batch,)` as `(batch, dim)`."""
        # (batch, 1) * (dim / 2,) -> (batch, dim / 2)
        angle = time[:, None] * self.angular_frequency
        return self.mlp(torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1))


class JointLayout:
    """Slot assignment of a joint-indexed feature in a vector padded to `width`.

    Arm joints take the first slots in the robot's order, and the gripper, when the feature's
    last element is named `gripper`, takes the last slot. Every robot therefore shares the
    gripper slot, and the slots between the arm and the gripper stay zero.

    Args:
        key: Feature key, for messages.
        feature: The feature; its `names` decide which element is the gripper.
        width: Padded width.

    Raises:
        SpecError: The feature has more elements than `width` allows.
    """

    def __init__(self, key: str, feature: FeatureSpec, width: int) -> None:
        size = feature.shape[0]
        names = feature.names or ()
        self.has_gripper = bool(names) and names[-1] == GRIPPER_NAME
        self.n_arm = size - 1 if self.has_gripper else size
        self.width = width
        slots_needed = self.n_arm + 1  # The gripper slot is reserved even without a gripper.
        if slots_needed > width:
            raise SpecError(
                f"feature {key!r} has {self.n_arm} arm joints, but the padded width {width} "
                f"has room for {width - 1} arm joints and the gripper; raise max_state_dim and "
                f"max_action_dim to at least {slots_needed}"
            )

    @property
    def valid(self) -> torch.Tensor:
        """float32 `(width,)`: 1 in the slots this feature fills, 0 in the padding."""
        valid = torch.zeros(self.width)
        valid[: self.n_arm] = 1.0
        if self.has_gripper:
            valid[-1] = 1.0
        return valid

    def pad(self, arm: torch.Tensor, gripper: torch.Tensor | None) -> torch.Tensor:
        """Place arm values `(..., n_arm)` and gripper values `(...,)` into `(..., width)`."""
        # (..., n_arm) -> (..., width - 1): zeros after the arm joints
        padded = F.pad(arm, (0, self.width - 1 - self.n_arm))
        last = torch.zeros_like(padded[..., :1]) if gripper is None else gripper[..., None]
        # (..., width - 1) + (..., 1) -> (..., width)
        return torch.cat([padded, last], dim=-1)

    def unpad(self, padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split `(..., width)` into arm values `(..., n_arm)` and gripper values `(...,)` or None."""
        gripper = padded[..., -1] if self.has_gripper else None
        return padded[..., : self.n_arm], gripper


def robot_index(name: str, vocabulary: Sequence[str]) -> int:
    """Return the index of robot `name` in `vocabulary`; unknown names get the last entry."""
    known = list(vocabulary[:-1])
    return known.index(name) if name in known else len(vocabulary) - 1
