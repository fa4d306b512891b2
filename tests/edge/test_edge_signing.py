"""Ed25519 signatures over manifest.json: valid, tampered, untrusted and missing."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from robota.edge.bundle import load_bundle, verify_bundle  # noqa: E402
from robota.edge.cli import main  # noqa: E402
from robota.edge.manifest import MANIFEST_FILE, SIGNATURE_FILE  # noqa: E402
from robota.edge.signing import generate_key_pair, sign_manifest  # noqa: E402
from robota.errors import BundleError  # noqa: E402


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, Path, str]:
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub"
    return private, public, generate_key_pair(private, public)


def test_signed_bundle_verifies(bundle_copy: Path, key_pair) -> None:
    private, public, key_id = key_pair

    sign_manifest(bundle_copy, private)
    bundle = load_bundle(bundle_copy, trusted_keys=[public])

    assert bundle.signed_by == key_id
    assert bundle.signature_path == bundle_copy / SIGNATURE_FILE
    assert json.loads(bundle.signature_path.read_text())["algorithm"] == "ed25519"


def test_manifest_changed_after_signing(bundle_copy: Path, key_pair) -> None:
    private, public, _ = key_pair
    sign_manifest(bundle_copy, private)
    manifest = bundle_copy / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace('"n_action_steps": 4', '"n_action_steps": 9'))

    with pytest.raises(BundleError, match="signature does not match manifest.json"):
        verify_bundle(bundle_copy, trusted_keys=[public])


def test_unsigned_bundle_rejected_when_keys_given(bundle_copy: Path, key_pair) -> None:
    _, public, _ = key_pair

    with pytest.raises(BundleError, match=r"manifest\.json\.sig: file not found"):
        load_bundle(bundle_copy, trusted_keys=[public])


def test_untrusted_signer_rejected(bundle_copy: Path, key_pair, tmp_path: Path) -> None:
    private, _, _ = key_pair
    other_public = tmp_path / "other.pub"
    generate_key_pair(tmp_path / "other.pem", other_public)
    sign_manifest(bundle_copy, private)

    with pytest.raises(BundleError, match="not among the trusted keys"):
        verify_bundle(bundle_copy, trusted_keys=[other_public])


def test_invalid_signature_file_rejected(bundle_copy: Path, key_pair) -> None:
    _, public, _ = key_pair
    (bundle_copy / SIGNATURE_FILE).write_text('{"algorithm": "ed25519"}')

    with pytest.raises(BundleError, match="invalid signature file"):
        verify_bundle(bundle_copy, trusted_keys=[public])


def test_unsigned_bundle_loads_without_keys(exported_bundle: Path) -> None:
    bundle = load_bundle(exported_bundle)

    assert bundle.signed_by is None
    assert bundle.signature_path is None


def test_keygen_protects_private_key(key_pair) -> None:
    private, public, _ = key_pair

    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    with pytest.raises(BundleError, match="already exists"):
        generate_key_pair(private, public.with_name("new.pub"))


def test_export_signs_bundle(fake_policy, key_pair, tmp_path: Path) -> None:
    from robota.export import export_policy

    private, public, key_id = key_pair
    export_policy(fake_policy, tmp_path / "bundle", signing_key=private)

    assert load_bundle(tmp_path / "bundle", trusted_keys=[public]).signed_by == key_id


def test_cli_sign_and_inspect(bundle_copy: Path, tmp_path: Path, capsys) -> None:
    private, public = tmp_path / "cli.pem", tmp_path / "cli.pub"

    assert main(["keygen", "--private-key", str(private), "--public-key", str(public)]) == 0
    assert main(["sign", str(bundle_copy), "--private-key", str(private)]) == 0
    assert main(["inspect", str(bundle_copy), "--trusted-key", str(public)]) == 0
    assert "signature valid" in capsys.readouterr().out

    (bundle_copy / SIGNATURE_FILE).unlink()
    assert main(["inspect", str(bundle_copy), "--trusted-key", str(public)]) == 1
    assert "verification: FAILED" in capsys.readouterr().out
