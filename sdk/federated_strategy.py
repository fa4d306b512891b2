"""Server-side aggregation of site updates: compression, screening, averaging and the outer step.

A site update is the pseudo-gradient `global - local` of each trainable tensor after `H` local
steps, together with the number of samples the site trained on. The coordinator:

1. screens every update: one with a NaN or Inf entry, or whose L2 norm exceeds `max_norm_ratio`
   times the median norm of the round, is rejected and logged with the site's node id;
2. combines the accepted updates by a sample-weighted mean, a coordinate-wise trimmed mean or a
   coordinate-wise median;
3. applies the combined pseudo-gradient with the outer optimiser: plain `global - delta` for
   FedAvg and FedProx, or SGD with Nesterov momentum for DiLoCo (Douillard et al., 2023,
   "DiLoCo: Distributed Low-Communication Training of Language Models", arXiv:2311.08455).

This module imports numpy only, so the rules can be unit-tested without Flower or torch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from robota.errors import RobotaError, check_choice

logger = logging.getLogger(__name__)

STRATEGIES = ("fedavg", "fedprox", "diloco")
AGGREGATIONS = ("mean", "trimmed-mean", "median")
COMPRESSIONS = ("none", "fp16", "int8")

Tensors = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class SiteUpdate:
    """One site's reply to a training round.

    Attributes:
        node_id: Flower node id of the site's SuperNode.
        delta: Pseudo-gradient `global - local` per trainable tensor, float32.
        num_samples: Samples the site's dataset holds, the weight of its update.
        sent_bytes: Bytes of the compressed update as sent.
    """

    node_id: int
    delta: Tensors
    num_samples: int
    sent_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class AggregationConfig:
    """Settings of the coordinator's aggregation of site updates.

    Attributes:
        strategy: `fedavg`, `fedprox` (FedAvg aggregation, proximal term at the sites) or
            `diloco` (outer Nesterov momentum step).
        outer_lr: Outer learning rate applied to the combined pseudo-gradient. 1.0 with no
            momentum is FedAvg.
        outer_momentum: Nesterov momentum of the DiLoCo outer step.
        aggregation: `mean` (sample-weighted), `trimmed-mean` or `median` (both coordinate-wise).
        trim_fraction: Fraction of updates cut at each end per coordinate by `trimmed-mean`.
        reject_nonfinite: Reject updates with a NaN or Inf entry. Off only for a control run.
        max_norm_ratio: Reject an update whose norm exceeds this multiple of the round's median
            norm; 0 turns the check off. Needs at least 3 updates to have a meaningful median.
    """

    strategy: str = "fedavg"
    outer_lr: float = 1.0
    outer_momentum: float = 0.0
    aggregation: str = "mean"
    trim_fraction: float = 0.2
    reject_nonfinite: bool = True
    max_norm_ratio: float = 10.0

    def __post_init__(self) -> None:
        check_choice("federated strategy", self.strategy, STRATEGIES)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        if self.outer_lr <= 0:
            raise RobotaError(f"outer_lr must be positive, got {self.outer_lr}")
        if not 0 <= self.outer_momentum < 1:
            raise RobotaError(f"outer_momentum must be in [0, 1), got {self.outer_momentum}")
        if not 0 <= self.trim_fraction < 0.5:
            raise RobotaError(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction}")
        if self.max_norm_ratio < 0:
            raise RobotaError(f"max_norm_ratio must be 0 (off) or positive, got {self.max_norm_ratio}")


# Compression ---------------------------------------------------------------------------------


def compress(delta: Mapping[str, np.ndarray], method: str) -> tuple[Tensors, Tensors]:
    """Compress an update for sending.

    `fp16` casts each tensor to float16. `int8` maps each tensor to [-127, 127] with one scale per
    tensor, `max|x| / 127`. A non-finite tensor is sent as float32, so the coordinator receives
    the NaN or Inf it must reject rather than a value hidden by the cast.

    Returns:
        The payload tensors and the per-tensor scales (float32 scalars; empty for `none`/`fp16`).
    """
    check_choice("compression", method, COMPRESSIONS)
    payload: Tensors = {}
    scales: Tensors = {}
    for name, tensor in delta.items():
        tensor = np.asarray(tensor, dtype=np.float32)
        if method == "none" or not np.isfinite(tensor).all():
            payload[name] = tensor
        elif method == "fp16":
            payload[name] = tensor.astype(np.float16)
        else:
            peak = float(np.abs(tensor).max()) if tensor.size else 0.0
            scale = peak / 127.0 if peak > 0 else 1.0
            payload[name] = np.clip(np.rint(tensor / scale), -127, 127).astype(np.int8)
            scales[name] = np.asarray(scale, dtype=np.float32)
    return payload, scales


def decompress(payload: Mapping[str, np.ndarray], scales: Mapping[str, np.ndarray]) -> Tensors:
    """Invert `compress`: return float32 tensors."""
    tensors: Tensors = {}
    for name, tensor in payload.items():
        values = np.asarray(tensor).astype(np.float32)
        if name in scales:
            values = values * np.float32(scales[name])
        tensors[name] = values
    return tensors


def payload_bytes(payload: Mapping[str, np.ndarray], scales: Mapping[str, np.ndarray]) -> int:
    """Return the bytes of the tensor data in a compressed update, scales included."""
    return sum(np.asarray(t).nbytes for t in payload.values()) + sum(
        np.asarray(s).nbytes for s in scales.values()
    )


# Screening -----------------------------------------------------------------------------------


def update_norm(delta: Mapping[str, np.ndarray]) -> float:
    """Return the global L2 norm of an update over all its tensors."""
    return float(np.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for t in delta.values())))


def screen_updates(
    updates: Sequence[SiteUpdate], global_names: Sequence[str], config: AggregationConfig
) -> list[SiteUpdate]:
    """Return the updates that pass the checks, logging each rejection with its node id.

    An update is rejected when its tensor names differ from the global model's, or when
    `reject_nonfinite` is on and it has a NaN or Inf entry. With 3 or more finite updates, one
    whose norm exceeds `max_norm_ratio` times their median norm is rejected too.
    """
    expected = set(global_names)
    kept: list[SiteUpdate] = []
    for update in updates:
        if set(update.delta) != expected:
            logger.warning(
                "rejected the update of node %d: its tensors %s differ from the model's",
                update.node_id,
                sorted(set(update.delta) ^ expected)[:5],
            )
            continue
        if config.reject_nonfinite and not all(np.isfinite(t).all() for t in update.delta.values()):
            logger.warning("rejected the update of node %d: it contains NaN or Inf", update.node_id)
            continue
        kept.append(update)
    if config.max_norm_ratio == 0 or len(kept) < 3:
        return kept

    norms = [update_norm(u.delta) for u in kept]
    limit = config.max_norm_ratio * float(np.median(norms))
    screened = []
    for update, norm in zip(kept, norms, strict=True):
        if norm > limit:
            logger.warning(
                "rejected the update of node %d: norm %.4g exceeds %.4g (%.3g x the median)",
                update.node_id,
                norm,
                limit,
                config.max_norm_ratio,
            )
            continue
        screened.append(update)
    return screened


# Aggregation ---------------------------------------------------------------------------------


def combine_updates(updates: Sequence[SiteUpdate], config: AggregationConfig) -> Tensors:
    """Combine screened updates into one pseudo-gradient per tensor.

    Raises:
        RobotaError: `updates` is empty.
    """
    if not updates:
        raise RobotaError("no site update to aggregate; every site failed or was rejected")
    names = list(updates[0].delta)
    if config.aggregation == "mean":
        weights = np.asarray([max(u.num_samples, 0) for u in updates], dtype=np.float64)
        if weights.sum() == 0:
            weights = np.ones_like(weights)
        weights = weights / weights.sum()
        return {
            name: sum(w * u.delta[name].astype(np.float64) for w, u in zip(weights, updates, strict=True)).astype(
                np.float32
            )
            for name in names
        }

    combined: Tensors = {}
    for name in names:
        stacked = np.stack([u.delta[name] for u in updates])  # (sites, *shape)
        if config.aggregation == "median":
            combined[name] = np.median(stacked, axis=0).astype(np.float32)
            continue
        cut = int(config.trim_fraction * len(updates))
        ordered = np.sort(stacked, axis=0)
        combined[name] = ordered[cut : len(updates) - cut].mean(axis=0).astype(np.float32)
    return combined


class OuterOptimizer:
    """The coordinator's step on the global weights from a combined pseudo-gradient.

    With momentum μ > 0 it is SGD with Nesterov momentum, written as `torch.optim.SGD(nesterov=
    True)` does it: `b = μ b + g`, `w = w - η (g + μ b)`, with `b` starting at zero. With μ = 0 and
    η = 1 it reduces to FedAvg's `w = w - g`.

    Args:
        lr: Outer learning rate η.
        momentum: Nesterov momentum μ.
    """

    def __init__(self, lr: float = 1.0, momentum: float = 0.0):
        self.lr = lr
        self.momentum = momentum
        self.buffers: Tensors = {}

    def step(self, weights: Mapping[str, np.ndarray], gradient: Mapping[str, np.ndarray]) -> Tensors:
        """Return the new weights after one outer step; keeps the momentum buffers."""
        updated: Tensors = {}
        for name, weight in weights.items():
            grad = np.asarray(gradient[name], dtype=np.float32)
            if self.momentum > 0:
                buffer = self.buffers.get(name)
                buffer = grad.copy() if buffer is None else self.momentum * buffer + grad
                self.buffers[name] = buffer
                grad = grad + self.momentum * buffer
            updated[name] = (np.asarray(weight, dtype=np.float32) - self.lr * grad).astype(np.float32)
        return updated


def make_outer_optimizer(config: AggregationConfig) -> OuterOptimizer:
    """Build the outer optimiser: momentum only for DiLoCo."""
    if config.strategy == "diloco":
        return OuterOptimizer(config.outer_lr, config.outer_momentum)
    return OuterOptimizer(config.outer_lr, 0.0)
