"""Per-feature statistics in LeRobot's form: min, max, mean, std, count and five quantiles.

Vector features get one value per element. Images get one value per channel, shaped
`(channels, 1, 1)`, computed on pixels scaled to [0, 1] as LeRobot does. Image statistics come
from per-channel histograms of the uint8 pixels, so they are exact over every pixel of every frame
and episodes combine by adding histograms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from robota.datasets.layout import QUANTILES

FeatureStats = dict[str, np.ndarray]


def vector_stats(values: np.ndarray) -> FeatureStats:
    """Compute statistics over the first axis of `values` with shape (frames, ...)."""
    values = np.asarray(values)
    if values.ndim == 1:  # (frames,) -> (frames, 1), so every statistic is a 1-element array
        values = values[:, None]
    as_float = values.astype(np.float64)
    stats: FeatureStats = {
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "mean": as_float.mean(axis=0),
        "std": as_float.std(axis=0),
        "count": np.array([len(values)], dtype=np.int64),
    }
    for name, q in QUANTILES.items():
        stats[name] = np.quantile(as_float, q, axis=0)
    return stats


def image_histogram(image: np.ndarray) -> np.ndarray:
    """Count pixel values per channel of a uint8 (height, width, channels) image.

    Returns:
        int64 array of shape (channels, 256).
    """
    channels = image.shape[-1]
    flat = image.reshape(-1, channels)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(channels)])


def histogram_stats(histogram: np.ndarray, frame_count: int) -> FeatureStats:
    """Compute image statistics from per-channel pixel counts of shape (channels, 256).

    Returns:
        Statistics per channel, shaped (channels, 1, 1) and scaled to [0, 1]; `count` is the
        number of frames.
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    totals = histogram.sum(axis=1).astype(np.float64)
    mean = histogram @ levels / totals
    variance = histogram @ levels**2 / totals - mean**2
    present = histogram > 0
    stats = {
        "min": levels[present.argmax(axis=1)],
        "max": levels[255 - present[:, ::-1].argmax(axis=1)],
        "mean": mean,
        "std": np.sqrt(np.maximum(variance, 0.0)),
    }
    cumulative = np.cumsum(histogram, axis=1) / totals[:, None]
    for name, q in QUANTILES.items():
        # The lowest level whose cumulative share reaches q (the inverse CDF).
        stats[name] = levels[(cumulative < q).sum(axis=1).clip(max=255)]
    shaped: FeatureStats = {k: v.reshape(-1, 1, 1) for k, v in stats.items()}
    shaped["count"] = np.array([frame_count], dtype=np.int64)
    return shaped


def combine_histograms(histograms: Iterable[np.ndarray]) -> np.ndarray:
    """Add per-episode histograms into one."""
    return np.sum(np.stack(list(histograms)), axis=0)


def to_json(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, list]]:
    """Convert {feature: {stat: array}} to nested lists for stats.json and episode rows."""
    return {
        key: {name: np.asarray(value).tolist() for name, value in feature.items()}
        for key, feature in stats.items()
    }


def from_json(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, FeatureStats]:
    """Convert stats.json content to {feature: {stat: numpy array}}."""
    return {
        key: {name: np.atleast_1d(np.asarray(value)) for name, value in feature.items()}
        for key, feature in stats.items()
        if isinstance(feature, Mapping)
    }


def merge_moments(parts: Sequence[Mapping[str, Any]]) -> FeatureStats:
    """Combine per-episode `min`, `max`, `mean`, `std` and `count` into the statistics of all frames.

    The result equals the statistics computed over the joined frames, up to float rounding: the
    pooled variance is the count-weighted mean of each part's variance plus the weighted variance
    of the part means (Chan, Golub and LeVeque, 1979). Quantiles do not merge this way; see
    `robota.datasets.recompute` for quantiles merged from histograms.

    Args:
        parts: Statistics of one feature per episode, each with those five entries.
    """
    counts = np.array([float(np.asarray(p["count"]).reshape(-1)[0]) for p in parts])
    total = counts.sum()
    means = np.stack([np.asarray(p["mean"], dtype=np.float64) for p in parts])  # (parts, *shape)
    stds = np.stack([np.asarray(p["std"], dtype=np.float64) for p in parts])
    weights = (counts / total).reshape(-1, *([1] * (means.ndim - 1)))  # broadcast over shape
    mean = (weights * means).sum(axis=0)
    variance = (weights * (stds**2 + (means - mean) ** 2)).sum(axis=0)
    return {
        "min": np.min(np.stack([np.asarray(p["min"]) for p in parts]), axis=0),
        "max": np.max(np.stack([np.asarray(p["max"]) for p in parts]), axis=0),
        "mean": mean,
        "std": np.sqrt(np.maximum(variance, 0.0)),
        "count": np.array([int(total)], dtype=np.int64),
    }


def pool_stats(site_stats: Sequence[tuple[Mapping[str, Any], int]]) -> dict[str, Any]:
    """Pool the statistics of several datasets, weighting each by its sample count.

    Federated sites and the datasets of a training mix are pooled this way. `mean` and `std` are
    pooled exactly: the pooled variance is the weighted mean of the dataset variances plus the
    variance of the dataset means. `min` and `max` take the extremes, `count`
    adds up, and other entries (quantiles) are weighted means.

    NOTE: pooled quantiles are an approximation; a policy that normalises by quantiles sees
    slightly different bounds than one trained on the union of the data.
    """
    weights = np.asarray([max(count, 1) for _, count in site_stats], dtype=np.float64)
    weights = weights / weights.sum()
    pooled: dict[str, Any] = {}
    for key in site_stats[0][0]:
        entries = [stats[key] for stats, _ in site_stats]
        pooled[key] = _pool_feature(entries, weights)
    return pooled


def _pool_feature(entries: list[Mapping[str, Any]], weights: np.ndarray) -> dict[str, Any]:
    def stacked(name: str) -> np.ndarray:
        return np.stack([np.asarray(entry[name], dtype=np.float64) for entry in entries])

    def weighted(values: np.ndarray) -> np.ndarray:
        return np.tensordot(weights, values, axes=1)

    pooled: dict[str, Any] = {}
    for name in entries[0]:
        values = stacked(name)
        if name == "min":
            pooled[name] = values.min(axis=0)
        elif name == "max":
            pooled[name] = values.max(axis=0)
        elif name == "count":
            pooled[name] = values.sum(axis=0)
        elif name == "std" and "mean" in entries[0]:
            means = stacked("mean")
            mean = weighted(means)
            variance = weighted(values**2) + weighted((means - mean) ** 2)
            pooled[name] = np.sqrt(variance)
        else:
            pooled[name] = weighted(values)
    return {name: value.tolist() for name, value in pooled.items()}
