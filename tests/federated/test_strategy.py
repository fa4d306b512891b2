"""Aggregation rules: the DiLoCo outer step, compression, screening and robust combination."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from robota.errors import RobotaError
from robota.federated import pool_stats
from robota.federated_strategy import (
    AggregationConfig,
    OuterOptimizer,
    SiteUpdate,
    combine_updates,
    compress,
    decompress,
    payload_bytes,
    screen_updates,
)


def _update(node: int, value: float, samples: int = 10, shape=(3,)) -> SiteUpdate:
    return SiteUpdate(node, {"w": np.full(shape, value, dtype=np.float32)}, samples)


def test_outer_step_equals_torch_nesterov_sgd():
    rng = np.random.default_rng(0)
    weights = {"a": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
    gradients = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in weights.items()} for _ in range(4)]

    parameters = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in weights.items()}
    reference = torch.optim.SGD(parameters.values(), lr=0.7, momentum=0.9, nesterov=True)
    outer = OuterOptimizer(lr=0.7, momentum=0.9)
    ours = dict(weights)
    for gradient in gradients:
        for name, parameter in parameters.items():
            parameter.grad = torch.from_numpy(gradient[name].copy())
        reference.step()
        ours = outer.step(ours, gradient)

    for name, parameter in parameters.items():
        np.testing.assert_allclose(ours[name], parameter.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_outer_step_without_momentum_is_fedavg():
    outer = OuterOptimizer(lr=1.0, momentum=0.0)
    updated = outer.step({"w": np.array([1.0, 2.0], dtype=np.float32)}, {"w": np.array([0.5, -1.0], dtype=np.float32)})
    np.testing.assert_allclose(updated["w"], [0.5, 3.0])


@pytest.mark.parametrize("method, dtype, tolerance", [("fp16", np.float16, 1e-3), ("int8", np.int8, 1e-2)])
def test_compression_round_trip(method, dtype, tolerance):
    rng = np.random.default_rng(1)
    delta = {"w": rng.normal(size=(64, 32)).astype(np.float32), "b": rng.normal(size=32).astype(np.float32)}
    payload, scales = compress(delta, method)
    restored = decompress(payload, scales)

    assert payload["w"].dtype == dtype
    for name, tensor in delta.items():
        assert np.abs(restored[name] - tensor).max() <= tolerance * np.abs(tensor).max()
    raw = sum(t.nbytes for t in delta.values())
    assert payload_bytes(payload, scales) == raw // 2 if method == "fp16" else raw // 4 + 8


def test_compression_keeps_nan_visible():
    payload, scales = compress({"w": np.array([1.0, np.nan], dtype=np.float32)}, "int8")
    assert np.isnan(decompress(payload, scales)["w"]).any()


def test_screen_rejects_nan_and_names_node(caplog):
    config = AggregationConfig()
    bad = SiteUpdate(7, {"w": np.array([np.nan, 1.0, 1.0], dtype=np.float32)}, 10)
    with caplog.at_level(logging.WARNING, logger="robota.federated_strategy"):
        kept = screen_updates([_update(1, 0.1), bad], ["w"], config)
    assert [u.node_id for u in kept] == [1]
    assert "node 7" in caplog.text
    assert "NaN or Inf" in caplog.text


def test_screen_rejects_outlier_norm(caplog):
    config = AggregationConfig(max_norm_ratio=5.0)
    updates = [_update(1, 0.1), _update(2, 0.12), _update(3, 0.09), _update(4, 100.0)]
    with caplog.at_level(logging.WARNING, logger="robota.federated_strategy"):
        kept = screen_updates(updates, ["w"], config)
    assert [u.node_id for u in kept] == [1, 2, 3]
    assert "node 4" in caplog.text


def test_screen_rejects_mismatched_tensors():
    wrong = SiteUpdate(5, {"v": np.zeros(3, dtype=np.float32)}, 10)
    kept = screen_updates([_update(1, 0.1), wrong], ["w"], AggregationConfig())
    assert [u.node_id for u in kept] == [1]


def test_screen_off_keeps_nan():
    bad = _update(3, float("nan"))
    kept = screen_updates([_update(1, 0.1), bad], ["w"], AggregationConfig(reject_nonfinite=False))
    assert len(kept) == 2


def test_mean_weights_by_samples():
    combined = combine_updates([_update(1, 1.0, samples=30), _update(2, 2.0, samples=10)], AggregationConfig())
    np.testing.assert_allclose(combined["w"], 1.25)


def test_median_and_trimmed_mean_resist_outlier():
    updates = [_update(1, 1.0), _update(2, 1.1), _update(3, 0.9), _update(4, 1.0), _update(5, 1000.0)]
    median = combine_updates(updates, AggregationConfig(aggregation="median"))
    trimmed = combine_updates(updates, AggregationConfig(aggregation="trimmed-mean", trim_fraction=0.2))
    np.testing.assert_allclose(median["w"], 1.0)
    np.testing.assert_allclose(trimmed["w"], (1.0 + 1.0 + 1.1) / 3, rtol=1e-6)


def test_combine_without_updates_raises():
    with pytest.raises(RobotaError, match="no site update"):
        combine_updates([], AggregationConfig())


@pytest.mark.parametrize(
    "changes", [{"strategy": "fedsgd"}, {"aggregation": "mode"}, {"outer_momentum": 1.0}, {"trim_fraction": 0.5}]
)
def test_aggregation_config_rejects_invalid(changes):
    with pytest.raises(RobotaError):
        AggregationConfig(**changes)


def test_pool_stats_equals_stats_of_union():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, (30, 2)), rng.normal(3, 2, (10, 2))

    def stats(x):
        return {"x": {"mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0), "count": [len(x)]}}

    pooled = pool_stats([(stats(a), 30), (stats(b), 10)])["x"]
    union = stats(np.concatenate([a, b]))["x"]
    for name in ("mean", "std", "min", "max", "count"):
        np.testing.assert_allclose(pooled[name], union[name], rtol=1e-9)
