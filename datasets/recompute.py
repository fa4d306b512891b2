"""Recompute a dataset's statistics from its frames, as mergeable per-episode parts.

Each episode yields `min`, `max`, `mean`, `std` and `count` per feature, and
`stats.merge_moments` combines them exactly (up to float rounding) into the statistics of all
frames. Quantiles do not combine from per-episode quantiles, so they are merged from histograms:

- Numeric features: a second pass bins every episode's values into `bins` equal bins per
  element between the merged min and max. The histograms add across episodes, and a quantile
  is read from the summed histogram by linear interpolation inside the bin where the cumulative
  count reaches it. That is within one bin width, (max − min) / bins, of the empirical quantile
  (the lowest value whose cumulative share reaches q). `numpy.quantile`, which interpolates
  between neighbouring order statistics, can differ from both by up to the gap between those
  values when the data are discrete, such as timestamps.
- Images: per-channel histograms of the 256 uint8 levels, which add across episodes exactly, so
  image quantiles are exact on the decoded pixels.

Image statistics are computed on decoded video frames, so they differ from statistics written
at recording time (on the frames before encoding) by the codec's error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robota.datasets.layout import QUANTILES, column_to_numpy
from robota.datasets.reader import DatasetReader, open_dataset
from robota.datasets.stats import FeatureStats, histogram_stats, image_histogram, merge_moments

NUMERIC_DTYPES = ("float32", "float64", "int64", "int32", "bool")
DEFAULT_BINS = 4096


def compute_stats(
    root: str | Path | DatasetReader, *, images: bool = True, bins: int = DEFAULT_BINS
) -> dict[str, FeatureStats]:
    """Recompute min, max, mean, std, count and quantiles of every feature from the frames.

    Nothing is written. `robota dataset stats DIR --output FILE` saves the result as JSON.

    Args:
        root: Dataset folder (v3.0 or v2.1) or an open reader.
        images: Also decode every video frame for image statistics; this is the slow part.
        bins: Histogram bins per element for the quantiles of numeric features.

    Returns:
        {feature: {stat: array}} in stats.json's form. Numeric statistics have the feature's
        shape, image statistics are per channel with shape (3, 1, 1) on pixels scaled to [0, 1].
        `count` is the number of frames.
    """
    reader = root if isinstance(root, DatasetReader) else open_dataset(root)
    keys = numeric_keys(reader)
    per_episode = [episode_moments(reader, index, keys) for index in range(reader.num_episodes)]
    stats = {key: merge_moments([part[key] for part in per_episode]) for key in keys}
    _add_quantiles(reader, keys, stats, bins)
    if images:
        for key in reader.image_keys:
            histograms = [image_histogram(reader.decode_images(i, key)) for i in range(reader.num_episodes)]
            stats[key] = histogram_stats(np.sum(histograms, axis=0), reader.num_frames)
    return stats


def numeric_keys(reader: DatasetReader) -> list[str]:
    """Return the features stored as numeric parquet columns, index columns included."""
    return [k for k, f in reader.features.items() if f["dtype"] in NUMERIC_DTYPES]


def _episode_values(reader: DatasetReader, index: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read one episode's columns as float64 arrays of shape (frames, elements)."""
    rows = reader.episode_rows(index)
    return {
        key: column_to_numpy(rows[key]).astype(np.float64).reshape(rows.num_rows, -1) for key in keys
    }


def episode_moments(reader: DatasetReader, index: int, keys: Sequence[str]) -> dict[str, FeatureStats]:
    """Compute the mergeable statistics of one episode: min, max, mean, std and count."""
    result = {}
    for key, values in _episode_values(reader, index, keys).items():
        result[key] = {
            "min": values.min(axis=0),
            "max": values.max(axis=0),
            "mean": values.mean(axis=0),
            "std": values.std(axis=0),
            "count": np.array([len(values)], dtype=np.int64),
        }
    return result


def _add_quantiles(
    reader: DatasetReader, keys: Sequence[str], stats: dict[str, FeatureStats], bins: int
) -> None:
    """Add q01 … q99 to `stats` from per-episode histograms on each element's [min, max] grid."""
    widths = {key: _bin_width(stats[key], bins) for key in keys}  # (elements,) per key
    histograms = {key: np.zeros((len(stats[key]["min"]), bins), dtype=np.int64) for key in keys}
    for index in range(reader.num_episodes):
        for key, values in _episode_values(reader, index, keys).items():  # (frames, elements)
            positions = np.floor((values - stats[key]["min"]) / widths[key]).astype(np.int64)
            positions = positions.clip(0, bins - 1)
            for element in range(values.shape[1]):
                histograms[key][element] += np.bincount(positions[:, element], minlength=bins)

    for key in keys:
        low, high = stats[key]["min"], stats[key]["max"]
        histogram, width = histograms[key], widths[key]
        for name, q in QUANTILES.items():
            quantile = _histogram_quantile(histogram, low, width, q)
            stats[key][name] = np.where(high > low, quantile, low)  # a constant element is its min


def _bin_width(feature: FeatureStats, bins: int) -> np.ndarray:
    """Return the bin width per element; constant elements get 1 to avoid dividing by zero."""
    spread = np.asarray(feature["max"]) - np.asarray(feature["min"])
    return np.where(spread > 0, spread / bins, 1.0)


def _histogram_quantile(histogram: np.ndarray, low: np.ndarray, width: np.ndarray, q: float) -> np.ndarray:
    """Read quantile `q` per element from (elements, bins) counts, interpolating inside a bin."""
    cumulative = np.cumsum(histogram, axis=1)  # (elements, bins)
    target = q * cumulative[:, -1]
    chosen = np.array([np.searchsorted(row, t, side="left") for row, t in zip(cumulative, target)])
    chosen = chosen.clip(0, histogram.shape[1] - 1)
    rows = np.arange(len(chosen))
    before = cumulative[rows, chosen] - histogram[rows, chosen]
    fraction = (target - before) / np.maximum(histogram[rows, chosen], 1)
    return low + (chosen + fraction) * width
