"""Shared fixtures: the folder of real third-party inputs, and headless rendering."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder named by ROBOTA_TEST_DATA (default ../shared/data); skips the test if absent."""
    root = Path(os.environ.get("ROBOTA_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root}; set ROBOTA_TEST_DATA to its folder")
    return root
