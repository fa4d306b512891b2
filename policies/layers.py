"""Building blocks of the policies: a small image encoder, an instruction encoder and transformer
layers.

Everything here is written with plain tensor ops and `scaled_dot_product_attention`, so it traces
into ONNX with a dynamic batch. `nn.TransformerEncoderLayer` is avoided because in eval mode it
can switch to a fused fast-path op, and plain ops keep the exported graph the same as in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robota.spec import INSTRUCTION_MAX_BYTES, INSTRUCTION_VOCAB_SIZE

# Attention scores of padding bytes; finite so that an all-padding instruction gives a uniform
# weighting instead of NaN.
_MASKED_SCORE = -1e4


def conv_output_size(size: int, n_layers: int) -> int:
    """Return the side length after `n_layers` convolutions with kernel 3, stride 2, padding 1."""
    for _ in range(n_layers):
        size = (size - 1) // 2 + 1
    return size


class Attention(nn.Module):
    """Multi-head attention of queries `(batch, n_queries, dim)` over a context.

    Args:
        dim: Model width.
        n_heads: Number of heads; must divide `dim`.
        dropout: Dropout on the output, in training only. The attention weights get none: on a
            CPU it disables the fused attention kernel and drawing its mask cost about a fifth of
            a training step.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        # (batch, length, dim) -> (batch, n_heads, length, head_dim)
        return x.reshape(batch, length, self.n_heads, dim // self.n_heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from `x` `(batch, n_queries, dim)` to `context` `(batch, n_keys, dim)`.

        `context` defaults to `x` (self-attention). `attn_mask`, if given, is a float mask
        `(batch, 1, n_queries, n_keys)` added to the scores.
        """
        context = x if context is None else context
        query = self._split_heads(self.query(x))
        key, value = self.key_value(context).chunk(2, dim=-1)
        key, value = self._split_heads(key), self._split_heads(value)
        mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        batch, _, length, _ = mixed.shape
        # (batch, n_heads, n_queries, head_dim) -> (batch, n_queries, dim)
        mixed = mixed.transpose(1, 2).reshape(batch, length, -1)
        return F.dropout(self.out(mixed), self.dropout, self.training)


def padding_mask(is_pad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a bool padding flag `(batch, n_keys)` into an additive mask `(batch, 1, 1, n_keys)`."""
    # (batch, n_keys) -> (batch, 1, 1, n_keys), broadcast over heads and queries
    return (is_pad.to(dtype) * _MASKED_SCORE)[:, None, None, :]


class FeedForward(nn.Sequential):
    """Two linear layers with a GELU between them, `(..., dim) -> (..., dim)`."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer over tokens `(batch, n_tokens, dim)`."""

    def __init__(self, dim: int, n_heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(dim)
        self.attention = Attention(dim, n_heads, dropout)
        self.norm_feed_forward = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, hidden, dropout)

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Update `tokens`; `attn_mask` is as in `Attention.forward`, e.g. from `padding_mask`."""
        tokens = tokens + self.attention(self.norm_attention(tokens), attn_mask=attn_mask)
        return tokens + self.feed_forward(self.norm_feed_forward(tokens))


class DecoderLayer(nn.Module):
    """Pre-norm transformer decoder layer: queries attend to each other, then to the memory."""

    def __init__(self, dim: int, n_heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = Attention(dim, n_heads, dropout)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attention = Attention(dim, n_heads, dropout)
        self.norm_feed_forward = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, hidden, dropout)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Update `queries` `(batch, n_queries, dim)` from `memory` `(batch, n_tokens, dim)`."""
        queries = queries + self.self_attention(self.norm_self(queries))
        queries = queries + self.cross_attention(self.norm_cross(queries), memory)
        return queries + self.feed_forward(self.norm_feed_forward(queries))


class ImageEncoder(nn.Module):
    """A small CNN trained from scratch that turns one camera's image into a grid of tokens.

    Each convolution has kernel 3 and stride 2, so a 96×96 image with five layers becomes a 3×3
    grid, each cell one token with a learned 2D position embedding. GroupNorm rather than
    BatchNorm keeps training and inference identical at any batch size.

    Args:
        image_size: `(height, width)` of the camera.
        channels: Output channels of each stride-2 convolution.
        dim: Token width.
    """

    def __init__(self, image_size: tuple[int, int], channels: Sequence[int], dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for index, out_channels in enumerate(channels):
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1))
            # The first layer's input is already normalised per channel, and a GroupNorm on its
            # large map took about a quarter of the CNN's training time on a 2-core CPU.
            if index > 0:
                layers.append(nn.GroupNorm(min(8, out_channels), out_channels))
            layers.append(nn.ReLU())
            in_channels = out_channels
        self.convolutions = nn.Sequential(*layers)
        self.projection = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.grid = tuple(conv_output_size(size, len(channels)) for size in image_size)
        self.position = nn.Parameter(torch.randn(self.grid[0] * self.grid[1], dim) * 0.02)

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode normalised images `(batch, 3, height, width)` to `(batch, n_tokens, dim)`."""
        features = self.projection(self.convolutions(images))
        # (batch, dim, grid_h, grid_w) -> (batch, grid_h * grid_w, dim)
        tokens = features.flatten(2).transpose(1, 2)
        return tokens + self.position


class InstructionEncoder(nn.Module):
    """Pool an instruction's UTF-8 byte tokens into a few tokens by attention.

    Learned queries attend over the byte embeddings (with their positions), ignoring padding, so
    the transformer gets a fixed number of instruction tokens whatever the instruction's length.

    Args:
        dim: Token width.
        n_tokens: Number of output tokens.
        n_heads: Attention heads of the pooling.
    """

    def __init__(self, dim: int, n_tokens: int, n_heads: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(INSTRUCTION_VOCAB_SIZE, dim, padding_idx=0)
        self.position = nn.Parameter(torch.randn(INSTRUCTION_MAX_BYTES, dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.pool = Attention(dim, n_heads, dropout=0.0)

    def forward(self, task_tokens: torch.Tensor) -> torch.Tensor:
        """Encode int64 byte tokens `(batch, INSTRUCTION_MAX_BYTES)` to `(batch, n_tokens, dim)`."""
        batch = task_tokens.shape[0]
        bytes_embedded = self.norm(self.embedding(task_tokens) + self.position)
        mask = padding_mask(task_tokens == 0, bytes_embedded.dtype)
        queries = self.queries.expand(batch, -1, -1)
        return self.pool(queries, bytes_embedded, attn_mask=mask)
