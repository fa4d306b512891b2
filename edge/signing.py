"""Ed25519 signatures over a bundle's manifest, in a detached `manifest.json.sig`.

The signature covers the exact bytes of `manifest.json`. The manifest contains the sha256 of
`policy.onnx`, so a valid signature together with a matching model hash shows that neither the
model, the spec nor the limits changed since signing. The signature file is JSON:

    {"algorithm": "ed25519", "key_id": "<sha256 of the raw public key>", "signature": "<base64>"}

Keys are PEM files: PKCS#8 for the private key, SubjectPublicKeyInfo for the public key. The
cryptography package is imported when a function here runs, so `robota.edge` imports without it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from robota.edge.manifest import MANIFEST_FILE, SIGNATURE_FILE
from robota.errors import BundleError, MissingExtraError

logger = logging.getLogger(__name__)

SIGNATURE_ALGORITHM = "ed25519"


def _serialization():
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise MissingExtraError("cryptography", "edge") from None
    return serialization


def _ed25519():
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingExtraError("cryptography", "edge") from None
    return ed25519


def key_id(public_key) -> str:
    """Return the hex sha256 of an Ed25519 public key's 32 raw bytes, which names the key."""
    serialization = _serialization()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_key_pair(private_key_path: Path, public_key_path: Path) -> str:
    """Write a new Ed25519 key pair as PEM files and return the public key's id.

    The private key file is created with mode 0600. Existing files are never replaced: both
    files are opened with O_EXCL, so a file created between the check and the write is not
    replaced either.

    Raises:
        BundleError: One of the files already exists, both paths are the same file, or a
            folder is missing.
    """
    serialization = _serialization()
    private_key_path, public_key_path = Path(private_key_path), Path(public_key_path)
    if private_key_path.resolve() == public_key_path.resolve():
        raise BundleError(
            f"{private_key_path}: given as both the private and the public key file; "
            "pass two different paths"
        )
    for path in (private_key_path, public_key_path):
        if path.exists():
            raise BundleError(f"{path}: already exists; choose another path for the new key")
        if not path.parent.is_dir():
            raise BundleError(f"{path.parent}: folder not found; create it before writing {path.name}")

    private_key = _ed25519().Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new_file(private_key_path, private_pem, 0o600)
    try:
        _write_new_file(public_key_path, public_pem, 0o644)
    except BundleError:
        # Leave no half of a pair behind, so the caller can retry with the same paths.
        private_key_path.unlink()
        raise
    return key_id(private_key.public_key())


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` (before the umask) and write `data`; never replace a file."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise BundleError(f"{path}: already exists; choose another path for the new key") from None
    except OSError as error:
        raise BundleError(f"{path}: cannot create the key file ({error.strerror})") from None
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)


def load_private_key(path: Path):
    """Load an unencrypted Ed25519 private key from a PEM file.

    Raises:
        BundleError: The file is missing, is not PEM, or contains another kind of key.
    """
    key = _load_pem(Path(path), _serialization().load_pem_private_key, password=None)
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise BundleError(
            f"{path}: not an Ed25519 private key; create one with `robota-edge keygen`"
        )
    return key


def load_public_key(path: Path):
    """Load an Ed25519 public key from a PEM file.

    Raises:
        BundleError: The file is missing, is not PEM, or contains another kind of key.
    """
    key = _load_pem(Path(path), _serialization().load_pem_public_key)
    if not isinstance(key, _ed25519().Ed25519PublicKey):
        raise BundleError(
            f"{path}: not an Ed25519 public key; use the one `robota-edge keygen` wrote"
        )
    return key


def _load_pem(path: Path, loader, **kwargs):
    if not path.is_file():
        raise BundleError(f"{path}: key file not found")
    try:
        return loader(path.read_bytes(), **kwargs)
    except (ValueError, TypeError) as error:
        raise BundleError(f"{path}: invalid PEM key ({error})") from None


def sign_manifest(bundle: Path, private_key_path: Path) -> Path:
    """Sign a bundle's `manifest.json` and write `manifest.json.sig` beside it.

    Call this only on a bundle that `verify_bundle` accepts; `robota.export` signs before it
    publishes the bundle. An existing signature file is replaced.

    Returns:
        The signature file.
    """
    private_key = load_private_key(private_key_path)
    manifest = (Path(bundle) / MANIFEST_FILE).read_bytes()
    document = {
        "algorithm": SIGNATURE_ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(manifest)).decode("ascii"),
    }
    path = Path(bundle) / SIGNATURE_FILE
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    logger.info("signed %s with key %s", path.parent, document["key_id"][:16])
    return path


def verify_manifest_signature(bundle: Path, manifest: bytes, trusted_keys: Sequence) -> str:
    """Check that `manifest.json.sig` is a valid signature of `manifest` by a trusted key.

    Args:
        bundle: Bundle folder that contains the signature file.
        manifest: The exact bytes of `manifest.json` that the caller goes on to use.
        trusted_keys: Ed25519 public keys, or paths of their PEM files.

    Returns:
        The id of the key that signed the manifest.

    Raises:
        BundleError: The signature file is missing or invalid, the signing key is not trusted,
            or the signature does not match the manifest.
    """
    _ed25519()  # raises MissingExtraError without cryptography
    from cryptography.exceptions import InvalidSignature

    path = Path(bundle) / SIGNATURE_FILE
    if not trusted_keys:
        raise BundleError(f"{path}: no trusted public keys given; pass at least one")
    if not path.is_file():
        raise BundleError(
            f"{path}: file not found, but a signed bundle is required; sign the bundle with "
            "`robota-edge sign` or export it with a signing key"
        )
    signer, signature = _read_signature(path)

    keys = {}
    for key in trusted_keys:
        public_key = load_public_key(key) if isinstance(key, (str, Path)) else key
        keys[key_id(public_key)] = public_key
    if signer not in keys:
        raise BundleError(
            f"{path}: signed by key {signer[:16]}…, which is not among the trusted keys "
            f"{[k[:16] for k in keys]}; add its public key or sign the bundle with a trusted key"
        )
    try:
        keys[signer].verify(signature, manifest)
    except InvalidSignature:
        raise BundleError(
            f"{path}: signature does not match {MANIFEST_FILE}; the manifest was modified "
            "after signing: export and sign the bundle again"
        ) from None
    return signer


def _read_signature(path: Path) -> tuple[str, bytes]:
    """Return the key id and raw signature of a signature file, or raise BundleError."""
    try:
        document = json.loads(path.read_bytes())
        algorithm, signer = document["algorithm"], str(document["key_id"])
        signature = base64.b64decode(document["signature"], validate=True)
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as error:
        raise BundleError(
            f"{path}: invalid signature file ({error!r}); sign the bundle again"
        ) from None
    if algorithm != SIGNATURE_ALGORITHM:
        raise BundleError(
            f"{path}: signature algorithm {algorithm!r} is not supported (expected "
            f"{SIGNATURE_ALGORITHM!r}); sign the bundle again"
        )
    return signer, signature
