"""Fixtures of the edge tests: a fake torch policy and one bundle exported from it.

torch is imported inside the fixtures, so the tests that need no bundle also run where only
`robota[edge]` is installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fake_policy():
    """A fake policy with chunks of 10 actions, 4 of them executed per chunk."""
    pytest.importorskip("torch", reason="the bundle of the edge tests is exported from torch")
    from edge_fake_policy import make_fake_policy

    return make_fake_policy(chunk_size=10, n_action_steps=4)


@pytest.fixture(scope="session")
def exported_bundle(fake_policy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake policy exported once per session; tests must not modify it."""
    from robota.export import export_policy

    path = tmp_path_factory.mktemp("edge") / "bundle"
    export_policy(fake_policy, path, checkpoint_sha256="0" * 64, dataset_fingerprint="fake")
    return path


@pytest.fixture
def bundle_copy(exported_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the exported bundle that a test may modify."""
    path = tmp_path / "bundle"
    shutil.copytree(exported_bundle, path)
    return path
