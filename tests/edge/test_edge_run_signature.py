"""robota-edge run accepts only signed bundles unless --allow-unsigned is given.

Every rejection here must happen before the command connects to rosbridge, so `RosBridgeIO` is
replaced by a class that fails the test when it is built. The runs that pass these checks are
in test_edge_ros.py, against a rosbridge test double.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from robota.edge import ros  # noqa: E402
from robota.edge.bundle import load_bundle, verify_bundle  # noqa: E402
from robota.edge.cli import main  # noqa: E402
from robota.edge.manifest import MANIFEST_FILE, MODEL_FILE  # noqa: E402
from robota.edge.signing import generate_key_pair, sign_manifest  # noqa: E402
from robota.errors import BundleError  # noqa: E402

# Never contacted: every run below is rejected before RosBridgeIO is built.
UNUSED_URL = "ws://127.0.0.1:9"


class UnreachableBridge:
    def __init__(self, *args, **kwargs):
        raise AssertionError("robota-edge run connected to rosbridge before rejecting the bundle")


@pytest.fixture(autouse=True)
def no_bridge(monkeypatch) -> None:
    monkeypatch.setattr(ros, "RosBridgeIO", UnreachableBridge)


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "release.pem", tmp_path / "release.pub"
    generate_key_pair(private, public)
    return private, public


@pytest.fixture
def signed_bundle(bundle_copy: Path, key_pair) -> Path:
    sign_manifest(bundle_copy, key_pair[0])
    return bundle_copy


def run(bundle: Path, *options: str) -> int:
    return main(["run", "--bundle", str(bundle), "--ros", UNUSED_URL, "--max-steps", "1", *options])


def test_run_rejects_unsigned_bundle(exported_bundle: Path, capsys) -> None:
    status = run(exported_bundle)

    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 1
    assert len(errors) == 1
    assert f"{exported_bundle}: bundle is unsigned" in errors[0]
    assert "--trusted-key PUB" in err
    assert "--allow-unsigned" in err


def test_run_rejects_unsigned_bundle_with_key(exported_bundle: Path, key_pair, capsys) -> None:
    status = run(exported_bundle, "--trusted-key", str(key_pair[1]))

    err = capsys.readouterr().err
    assert status == 1
    assert "bundle is unsigned" in err
    assert "--allow-unsigned" in err


def test_run_rejects_signed_bundle_without_key(signed_bundle: Path, capsys) -> None:
    status = run(signed_bundle)

    err = capsys.readouterr().err
    assert status == 1
    assert f"{signed_bundle}: bundle is signed, but no --trusted-key" in err


def test_run_rejects_wrong_key(signed_bundle: Path, tmp_path: Path, capsys) -> None:
    other_public = tmp_path / "other.pub"
    generate_key_pair(tmp_path / "other.pem", other_public)

    status = run(signed_bundle, "--trusted-key", str(other_public))

    err = capsys.readouterr().err
    assert status == 1
    assert "not among the trusted keys" in err


def test_run_rejects_tampered_manifest(signed_bundle: Path, key_pair, capsys) -> None:
    manifest = signed_bundle / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace('"n_action_steps": 4', '"n_action_steps": 9'))

    status = run(signed_bundle, "--trusted-key", str(key_pair[1]))

    err = capsys.readouterr().err
    assert status == 1
    assert "signature does not match manifest.json" in err


def test_run_rejects_tampered_model(signed_bundle: Path, key_pair, capsys) -> None:
    model = signed_bundle / MODEL_FILE
    model.write_bytes(model.read_bytes() + b"\0")

    status = run(signed_bundle, "--trusted-key", str(key_pair[1]))

    err = capsys.readouterr().err
    assert status == 1
    assert "policy.onnx: sha256" in err


def test_allow_unsigned_still_checks_signature(signed_bundle: Path, key_pair, capsys) -> None:
    manifest = signed_bundle / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace('"n_action_steps": 4', '"n_action_steps": 9'))

    status = run(signed_bundle, "--trusted-key", str(key_pair[1]), "--allow-unsigned")

    assert status == 1
    assert "signature does not match manifest.json" in capsys.readouterr().err


def test_allow_unsigned_logs_warning(exported_bundle: Path, caplog) -> None:
    # The bundle loads, then building the bridge fails the test double's check instead.
    with caplog.at_level(logging.WARNING, logger="robota.edge.cli"):
        with pytest.raises(AssertionError, match="connected to rosbridge"):
            run(exported_bundle, "--allow-unsigned")

    (record,) = [r for r in caplog.records if "--allow-unsigned" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert str(exported_bundle) in record.getMessage()
    assert "it has no signature" in record.getMessage()


def test_require_signature_needs_keys(signed_bundle: Path, key_pair) -> None:
    with pytest.raises(BundleError, match="no trusted public key was given"):
        load_bundle(signed_bundle, require_signature=True)
    with pytest.raises(BundleError, match="no trusted public key was given"):
        verify_bundle(signed_bundle, trusted_keys=[], require_signature=True)

    bundle = load_bundle(signed_bundle, trusted_keys=[key_pair[1]], require_signature=True)
    assert bundle.signed_by is not None


def test_bundle_policy_passes_signature_options(exported_bundle: Path, key_pair) -> None:
    from robota.edge.policy import BundlePolicy

    with pytest.raises(BundleError, match=r"manifest\.json\.sig: file not found"):
        BundlePolicy.from_path(exported_bundle, trusted_keys=[key_pair[1]], require_signature=True)
