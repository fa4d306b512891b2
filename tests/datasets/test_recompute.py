"""compute_stats(): statistics recomputed from the frames, merged per episode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robota.datasets import open_dataset
from robota.datasets.recompute import compute_stats
from robota.datasets.stats import merge_moments, vector_stats


@pytest.fixture(scope="module")
def recomputed(recorded: Path) -> dict:
    return compute_stats(recorded, bins=1000)


@pytest.mark.parametrize("key", ["action", "observation.state", "timestamp", "index"])
def test_moments_equal_written_stats(recomputed: dict, recorded: Path, key: str) -> None:
    written = open_dataset(recorded).stats[key]
    for name in ("min", "max", "mean", "std"):
        np.testing.assert_allclose(recomputed[key][name], written[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert recomputed[key]["count"].tolist() == [26]


def test_quantiles_within_one_bin(recomputed: dict, recorded: Path) -> None:
    written = open_dataset(recorded).stats["action"]
    bin_width = (written["max"] - written["min"]) / 1000
    for name in ("q01", "q10", "q50", "q90", "q99"):
        error = np.abs(recomputed["action"][name] - written[name])
        assert (error <= bin_width + 1e-9).all(), (name, error.max(), bin_width.max())


def test_image_stats_within_codec_error(recomputed: dict, recorded: Path) -> None:
    written = open_dataset(recorded).stats["observation.images.wrist"]
    result = recomputed["observation.images.wrist"]
    assert result["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(result["mean"], written["mean"], atol=0.01)
    np.testing.assert_allclose(result["std"], written["std"], atol=0.01)
    assert result["count"].tolist() == [26]


def test_merge_moments_exact() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, size=(1000, 4))
    parts = [vector_stats(part) for part in np.split(values, [7, 300, 301])]
    merged = merge_moments(parts)
    whole = vector_stats(values)
    for name in ("min", "max", "mean", "std"):
        np.testing.assert_allclose(merged[name], whole[name], rtol=1e-12, err_msg=name)
    assert merged["count"].tolist() == [1000]


def test_without_images(recorded: Path) -> None:
    stats = compute_stats(recorded, images=False)
    assert "observation.images.wrist" not in stats
    assert "action" in stats


def test_constant_elements_on_so101(so101: Path) -> None:
    stats = compute_stats(so101, images=False)
    action = stats["action"]  # every action element is constant in this dataset
    np.testing.assert_array_equal(action["q01"], action["min"])
    np.testing.assert_array_equal(action["q99"], action["max"])
    assert action["count"].tolist() == [1782]
