"""The local mesh's CA: private files, one certificate per identity naming it, stable across restarts."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from aigw_server.runtime.pki import IDENTITIES, ensure_mesh_pki


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_directory_and_keys_are_private_and_each_identity_is_named(tmp_path: Path) -> None:
    pki = ensure_mesh_pki(tmp_path / "pki")
    assert mode(pki) == 0o700
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    for identity in IDENTITIES:
        assert mode(pki / f"{identity}.key") == 0o600
        cert = x509.load_pem_x509_certificate((pki / f"{identity}.crt").read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity
        assert identity in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
    assert mode(pki / "ca.key") == 0o600


def test_a_restart_keeps_the_identities_and_issues_missing_ones(tmp_path: Path) -> None:
    pki = ensure_mesh_pki(tmp_path / "pki")
    before = {p.name: p.read_bytes() for p in pki.iterdir()}
    (pki / "probe.crt").unlink()
    ensure_mesh_pki(pki)
    after = {p.name: p.read_bytes() for p in pki.iterdir()}
    assert {k: v for k, v in after.items() if not k.startswith("probe.")} == {
        k: v for k, v in before.items() if not k.startswith("probe.")
    }
    assert "probe.crt" in after
