"""Fixtures of the policy tests: a tiny spec, its statistics, a policy, a batch and observations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from robota.spec import UR5E, Spec, make_arm_spec

from policy_helpers import TINY_ACT, make_batch, make_observation, make_stats


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Tiny models gain nothing from a second thread, and where other processes keep the cores
    # busy, the second thread's waiting made a 150-step test take 20 s instead of 2 s.
    torch.set_num_threads(1)


@pytest.fixture
def tiny_spec() -> Spec:
    return make_arm_spec(UR5E, 10, {"wrist": (32, 32)})


@pytest.fixture
def tiny_stats(tiny_spec: Spec) -> dict[str, Any]:
    return make_stats(tiny_spec)


@pytest.fixture
def tiny_policy(tiny_spec: Spec, tiny_stats: dict[str, Any]) -> torch.nn.Module:
    from robota.policies import make_policy

    torch.manual_seed(0)
    return make_policy("act", tiny_spec, tiny_stats, **TINY_ACT).eval()


@pytest.fixture
def tiny_batch(tiny_spec: Spec) -> dict[str, torch.Tensor]:
    return make_batch(tiny_spec, batch_size=8, chunk_size=TINY_ACT["chunk_size"])


@pytest.fixture
def observations(tiny_spec: Spec) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [make_observation(tiny_spec, rng) for _ in range(12)]
