"""Fixtures for dataset tests: small arm specs, a recorded dataset and the real SO-101 dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_helpers import FPS, SO101, record

from robota.spec import UR5E, Spec, make_arm_spec


@pytest.fixture(scope="session")
def small_spec() -> Spec:
    return make_arm_spec(UR5E, FPS, {"wrist": (32, 32)})


@pytest.fixture(scope="session")
def two_camera_spec() -> Spec:
    return make_arm_spec(UR5E, FPS, {"wrist": (32, 32), "top": (24, 40)})


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory, two_camera_spec: Spec) -> Path:
    """A dataset of three episodes (12, 5 and 9 frames) and two tasks, written once per session."""
    root = tmp_path_factory.mktemp("recorded") / "pick"
    return record(root, two_camera_spec, [12, 5, 9], tasks=["pick the part", "place it", "pick the part"])


@pytest.fixture(scope="session")
def so101(shared_data: Path) -> Path:
    root = shared_data / SO101
    if not root.is_dir():
        pytest.skip(f"{root} not found; the real LeRobot v3.0 dataset is needed")
    return root
