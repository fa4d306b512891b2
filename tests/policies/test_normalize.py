"""Normalizer: modes, images, flat features and statistics checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robota.errors import SpecError, UnknownNameError
from robota.policies.normalize import Normalizer

STATS = {
    "observation.state": {
        "mean": [1.0, -2.0, 0.5],
        "std": [2.0, 0.5, 0.0],
        "min": [-1.0, -3.0, 0.5],
        "max": [3.0, -1.0, 0.5],
        "q01": [0.0, -2.5, 0.5],
        "q99": [2.0, -1.5, 0.5],
    },
    "observation.images.wrist": {
        "mean": [[[0.5]], [[0.25]], [[0.0]]],
        "std": [[[0.5]], [[0.25]], [[1.0]]],
    },
}


def _normalizer(mode: str) -> Normalizer:
    return Normalizer(STATS, {"observation.state": (mode, (3,))})


def test_mean_std():
    value = torch.tensor([[3.0, -1.0, 7.0]])

    normalized = _normalizer("mean_std").normalize("observation.state", value)

    # The third element has zero std, so it is only shifted.
    torch.testing.assert_close(normalized, torch.tensor([[1.0, 2.0, 6.5]]))


def test_min_max_maps_range_to_unit():
    value = torch.tensor([[-1.0, -3.0, 0.5], [3.0, -1.0, 0.5]])

    normalized = _normalizer("min_max").normalize("observation.state", value)

    torch.testing.assert_close(normalized, torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]))


def test_quantiles_map_q01_q99_to_unit():
    value = torch.tensor([[0.0, -1.5, 0.5]])

    normalized = _normalizer("quantiles").normalize("observation.state", value)

    torch.testing.assert_close(normalized, torch.tensor([[-1.0, 1.0, 0.0]]))


@pytest.mark.parametrize("mode", ["mean_std", "min_max", "quantiles", "identity"])
def test_unnormalize_inverts(mode):
    normalizer = _normalizer(mode)
    value = torch.randn(4, 3)

    restored = normalizer.unnormalize(
        "observation.state", normalizer.normalize("observation.state", value)
    )

    torch.testing.assert_close(restored, value)


def test_images_scale_then_per_channel():
    normalizer = Normalizer(STATS, {"observation.images.wrist": ("mean_std", (8, 8, 3))})
    images = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)

    normalized = normalizer.normalize("observation.images.wrist", images)

    assert normalized.dtype == torch.float32
    torch.testing.assert_close(normalized[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))


def test_flat_image_stats_accepted():
    stats = {"observation.images.wrist": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}

    normalizer = Normalizer(stats, {"observation.images.wrist": ("mean_std", (8, 8, 3))})

    assert normalizer.observation__images__wrist_offset.shape == (3, 1, 1)


def test_stats_are_buffers():
    names = dict(_normalizer("mean_std").named_buffers())

    assert set(names) == {"observation__state_offset", "observation__state_scale"}


def test_missing_feature_is_named():
    with pytest.raises(SpecError, match="observation.wrench"):
        Normalizer(STATS, {"observation.wrench": ("mean_std", (6,))})


def test_missing_statistic_is_named():
    with pytest.raises(SpecError, match="'q01'"):
        Normalizer(
            {"observation.state": {"mean": [0.0], "std": [1.0]}},
            {"observation.state": ("quantiles", (1,))},
        )


def test_wrong_shape_is_named():
    with pytest.raises(SpecError, match=r"shape \(3,\), expected \(7,\)"):
        Normalizer(STATS, {"observation.state": ("mean_std", (7,))})


def test_non_finite_statistic_rejected():
    stats = {"observation.state": {"mean": [np.nan], "std": [1.0]}}

    with pytest.raises(SpecError, match="NaN"):
        Normalizer(stats, {"observation.state": ("mean_std", (1,))})


def test_unknown_mode_suggests():
    with pytest.raises(UnknownNameError, match="mean_std"):
        _normalizer("mean_sdt")
