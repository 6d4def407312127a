"""The local mesh's own certificate authority: one CA and one certificate per service identity.

The launcher calls `ensure_mesh_pki` before it starts anything. It writes, into a private
directory (0700) of the data dir, `ca.crt` and for every identity `<name>.crt` and `<name>.key`
(keys 0600). A production deployment mounts files of the same names issued by its own CA
(cert-manager, see deploy/k8s/pki.yaml), so the services cannot tell the two apart.

Each certificate names its identity in the subject's common name (what the servers authorise)
and as a DNS name (what clients verify the server against, whatever address they dialled).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IDENTITIES: tuple[str, ...] = ("router", "queue", "textgen", "ocr", "admin", "edge", "probe")
"""Every service identity of the mesh; `probe` is what health checks present (it may call nothing else)."""

CA_NAME = "aigw local mesh CA"
CA_DAYS = 3650
LEAF_DAYS = 825


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Writes `data` to `path` atomically with `mode`, never readable by others even for an instant."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_ca(common_name: str = CA_NAME) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh self-signed CA key and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # keyCertSign, cRLSign
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, identity: str, days: int = LEAF_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and a certificate for `identity`, signed by the CA, usable as TLS server and client."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [
        x509.DNSName(identity),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_identity(directory: Path, identity: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    """Writes `<identity>.key` (0600) and `<identity>.crt` (0644) into `directory`."""
    _write_private(directory / f"{identity}.key", _key_pem(key), 0o600)
    _write_private(directory / f"{identity}.crt", cert.public_bytes(serialization.Encoding.PEM), 0o600)


def ensure_mesh_pki(directory: Path, identities: Iterable[str] = IDENTITIES) -> Path:
    """Makes (once) the CA and every identity's key and certificate in `directory` (0700); returns it.

    Existing files are kept, so a restarted mesh keeps its identities; a missing identity is issued
    by the existing CA. The CA's key stays in the directory (0600) only so that later identities can
    be issued; production keeps its CA elsewhere.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    ca_key_path, ca_cert_path = directory / "ca.key", directory / "ca.crt"
    if ca_key_path.exists() and ca_cert_path.exists():
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_path}: not an EC private key")
        ca_key, ca_cert = loaded, x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    else:
        ca_key, ca_cert = new_ca()
        _write_private(ca_key_path, _key_pem(ca_key), 0o600)
        _write_private(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o600)
    for identity in identities:
        if not ((directory / f"{identity}.key").exists() and (directory / f"{identity}.crt").exists()):
            key, cert = issue(ca_key, ca_cert, identity)
            write_identity(directory, identity, key, cert)
    return directory


def main(argv: list[str] | None = None) -> None:
    """`python -m aigw_server.runtime.pki DIR`: a CA and every identity in DIR (for compose or a test bench)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m aigw_server.runtime.pki", description=main.__doc__)
    parser.add_argument("directory", type=Path, help="where ca.crt and <identity>.crt/.key go (created 0700)")
    args = parser.parse_args(argv)
    print(f"mesh identities in {ensure_mesh_pki(args.directory)}: {', '.join(IDENTITIES)}")


if __name__ == "__main__":
    main()
