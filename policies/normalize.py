"""Normalisation of policy inputs and actions from dataset statistics, inside the model.

The statistics live in buffers, so they are saved in `model.safetensors` and traced into the ONNX
graph: an exported policy takes raw sensor values and returns actions in physical units.

Statistics come in LeRobot's `stats.json` form: per feature a dict with `mean`, `std`, `min`,
`max`, `q01` and `q99` as (nested) lists. Image statistics are per channel, of shape `(3, 1, 1)`,
on frames scaled to [0, 1].

Modes:
    `mean_std`: `(x - mean) / std`.
    `min_max`: `min` to -1 and `max` to 1.
    `quantiles`: `q01` to -1 and `q99` to 1, robust to outliers.
    `identity`: unchanged.

A feature whose spread (`std`, `max - min` or `q99 - q01`) is below `eps` is only shifted, not
scaled: a joint that never moved in the demonstrations would otherwise turn sensor noise into huge
inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from robota.errors import SpecError, check_choice
from robota.spec import OBS_IMAGES

logger = logging.getLogger(__name__)

MODES = ("mean_std", "min_max", "quantiles", "identity")
# Statistics that each mode reads.
MODE_STATS: dict[str, tuple[str, str]] = {
    "mean_std": ("mean", "std"),
    "min_max": ("min", "max"),
    "quantiles": ("q01", "q99"),
}
IMAGE_STATS_SHAPE = (3, 1, 1)


def stat_shape(key: str, feature_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return the shape a statistic of feature `key` must have: `(3, 1, 1)` for images."""
    return IMAGE_STATS_SHAPE if key.startswith(OBS_IMAGES) else tuple(feature_shape)


def read_stat(
    stats: Mapping[str, Any], key: str, name: str, expected_shape: tuple[int, ...]
) -> np.ndarray:
    """Read one statistic as a float32 array and check its shape.

    Image statistics given flat as `(3,)` are accepted and reshaped to `(3, 1, 1)`.

    Raises:
        SpecError: The feature or the statistic is missing, or its shape is wrong.
    """
    if key not in stats:
        raise SpecError(
            f"statistics have no feature {key!r}, which the policy uses; recompute the dataset "
            f"statistics (features present: {sorted(stats)})"
        )
    if name not in stats[key]:
        raise SpecError(
            f"statistics of {key!r} have no {name!r}; recompute the dataset statistics "
            f"(present: {sorted(stats[key])})"
        )
    value = np.asarray(stats[key][name], dtype=np.float32)
    if expected_shape == IMAGE_STATS_SHAPE and value.shape == (3,):
        value = value.reshape(IMAGE_STATS_SHAPE)
    if value.shape != expected_shape:
        raise SpecError(
            f"statistic {name!r} of {key!r} has shape {value.shape}, expected {expected_shape}; "
            "the statistics belong to a dataset with a different feature layout"
        )
    if not np.all(np.isfinite(value)):
        raise SpecError(f"statistic {name!r} of {key!r} contains NaN or infinity: {value.tolist()}")
    return value


def _offset_and_scale(
    stats: Mapping[str, Any], key: str, mode: str, shape: tuple[int, ...], eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return `(offset, scale)` with `normalised = (x - offset) / scale` for one feature."""
    if mode == "identity":
        return np.zeros(shape, np.float32), np.ones(shape, np.float32)

    low_name, high_name = MODE_STATS[mode]
    low = read_stat(stats, key, low_name, shape)
    high = read_stat(stats, key, high_name, shape)
    if mode == "mean_std":
        offset, scale = low, high
    else:
        offset, scale = (high + low) / 2, (high - low) / 2

    flat = scale < eps
    if np.any(flat):
        logger.info(
            "feature %s: %d of %d elements have a spread below %g and are only shifted",
            key,
            int(flat.sum()),
            flat.size,
            eps,
        )
    scale = np.where(flat, np.float32(1.0), scale).astype(np.float32)
    return offset.astype(np.float32), scale


def _buffer_prefix(key: str) -> str:
    # Buffer names cannot contain dots, which every feature key has.
    return key.replace(".", "__")


class Normalizer(nn.Module):
    """Per-feature affine normalisation held in buffers.

    Args:
        stats: Dataset statistics in LeRobot's `stats.json` form.
        features: Feature key to `(mode, feature shape)`. Image keys (`observation.images.*`)
            always use per-channel statistics of shape `(3, 1, 1)`, and their values are scaled
            from uint8 to [0, 1] first.
        eps: Spreads below this are treated as zero (see the module docstring).

    Raises:
        SpecError: A mode is unknown, or a statistic is missing or has the wrong shape.
    """

    def __init__(
        self,
        stats: Mapping[str, Any],
        features: Mapping[str, tuple[str, tuple[int, ...]]],
        *,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.keys = list(features)
        for key, (mode, feature_shape) in features.items():
            check_choice("normalisation mode", mode, MODES)
            shape = stat_shape(key, feature_shape)
            offset, scale = _offset_and_scale(stats, key, mode, shape, eps)
            prefix = _buffer_prefix(key)
            self.register_buffer(f"{prefix}_offset", torch.from_numpy(offset))
            self.register_buffer(f"{prefix}_scale", torch.from_numpy(scale))

    def _buffers_of(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self.keys:
            raise SpecError(f"normaliser has no feature {key!r}; it has {self.keys}")
        prefix = _buffer_prefix(key)
        return getattr(self, f"{prefix}_offset"), getattr(self, f"{prefix}_scale")

    def normalize(self, key: str, value: torch.Tensor) -> torch.Tensor:
        """Normalise one feature.

        Args:
            key: Feature key.
            value: Vectors `(..., dim)`, or images `(batch, 3, height, width)` as uint8 or as
                floats on [0, 255].

        Returns:
            float32 tensor of the same shape.
        """
        offset, scale = self._buffers_of(key)
        value = value.to(torch.float32)
        if key.startswith(OBS_IMAGES):
            value = value / 255.0
        return (value - offset) / scale

    def unnormalize(self, key: str, value: torch.Tensor) -> torch.Tensor:
        """Map a normalised vector feature `(..., dim)` back to physical units."""
        offset, scale = self._buffers_of(key)
        return value * scale + offset


class GripperChannel(nn.Module):
    """The gripper element of the action, kept apart from the arm's normalisation.

    A gripper command is open or closed, so the policy predicts it as a binary outcome: the
    dataset's `min` (open) maps to 0 and its `max` (closed) to 1. Normalised with the arm's
    mean and std, a two-valued channel is centred on a mean that no demonstration ever
    commanded, and a regression onto it returns half-closed commands.

    Args:
        stats: Dataset statistics in LeRobot's `stats.json` form, with `min` and `max` of `action`.
        index: Index of the gripper in the action.
        action_dim: Elements per action.
        eps: A range below this counts as a gripper that never moved (see `to_unit`).

    Raises:
        SpecError: The action statistics lack `min` or `max` or have the wrong shape.
    """

    def __init__(
        self, stats: Mapping[str, Any], index: int, action_dim: int, *, eps: float = 1e-6
    ) -> None:
        super().__init__()
        low = read_stat(stats, "action", "min", (action_dim,))[index]
        high = read_stat(stats, "action", "max", (action_dim,))[index]
        self.register_buffer("low", torch.tensor(float(low)))
        self.register_buffer("high", torch.tensor(float(high)))
        # A gripper that never moved gets a unit scale so `to_unit` stays finite; every command
        # is then the one value seen.
        scale = float(high - low) if high - low >= eps else 1.0
        self.register_buffer("scale", torch.tensor(scale))

    def to_unit(self, value: torch.Tensor) -> torch.Tensor:
        """Map gripper commands in physical units to [0, 1], 0 open and 1 closed, clamped."""
        return ((value.to(torch.float32) - self.low) / self.scale).clamp(0.0, 1.0)

    def from_closed(self, closed: torch.Tensor) -> torch.Tensor:
        """Map a bool tensor, true for closed, to the closed (`max`) or open (`min`) command."""
        return torch.where(closed, self.high, self.low)
