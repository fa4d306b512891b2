"""TLS files and SuperNode keys for a secured federation, and a generator for local trials.

A secured run (Flower 1.42) needs, at the coordinator, a CA certificate, a server certificate for
the SuperLink's address and its key, plus the OpenSSH public key of every site allowed to join.
Each site needs the CA certificate and its own OpenSSH elliptic-curve private key.
`make_local_credentials` writes all of these for a trial on one machine: a throwaway CA and a
server certificate for 127.0.0.1 and localhost, both valid for one day. Production sites bring
certificates from the plant's own CA.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SiteKeys", "TlsFiles", "make_local_credentials"]


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """The SuperLink's TLS files, PEM-encoded.

    Attributes:
        ca_cert: CA certificate that signed `server_cert`; sites verify the SuperLink with it.
        server_cert: Certificate of the SuperLink, with its address as a subject alternative name.
        server_key: Private key of `server_cert`.
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclasses.dataclass(frozen=True)
class SiteKeys:
    """A site's SuperNode authentication key pair in OpenSSH format.

    Attributes:
        private_key: Kept by the site and passed to its SuperNode.
        public_key: Registered at the coordinator with `flwr supernode register`.
    """

    private_key: Path
    public_key: Path


def make_local_credentials(folder: str | Path, sites: Sequence[str]) -> tuple[TlsFiles, dict[str, SiteKeys]]:
    """Write a throwaway CA, a SuperLink certificate for loopback and one key pair per site.

    Args:
        folder: Folder to write the files to; created if missing.
        sites: Site names; each gets `NAME.key` and `NAME.pub`.

    Returns:
        The TLS files and the key pairs by site name.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def builder(subject: str, issuer: str, public_key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        builder("robota local CA", "robota local CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    server_cert = (
        builder("127.0.0.1", "robota local CA", server_key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(folder / "ca.crt", folder / "server.pem", folder / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        files.server_key,
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )

    keys: dict[str, SiteKeys] = {}
    for site in sites:
        site_key = ec.generate_private_key(ec.SECP384R1())
        pair = SiteKeys(folder / f"{site}.key", folder / f"{site}.pub")
        _write_private(
            pair.private_key,
            site_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            ),
        )
        pair.public_key.write_bytes(
            site_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
        keys[site] = pair
    return files, keys


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only."""
    path.touch(mode=0o600)
    path.write_bytes(data)
