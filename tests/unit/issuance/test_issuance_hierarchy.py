from __future__ import annotations

import ipaddress
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certmint.ca.issuance.hierarchy import (
    Hierarchy,
    HierarchyError,
    ListenerUrls,
    load_or_create_dev_hierarchy,
)
from certmint.ca.issuance.profile import DV_POLICY_OID
from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy

from .issuance_support import START, RecordingEntropy, openssl_verify, write_pem


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def _cn(name: x509.Name) -> str:
    value = name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def _files(data_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(data_dir)): p.read_bytes()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
    }


def test_layout_and_key_modes(tmp_path: Path, hierarchy: Hierarchy) -> None:
    ca_dir = tmp_path / "data" / "ca"
    tls_dir = tmp_path / "data" / "tls"
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    keys = [*ca_dir.glob("*.key"), *tls_dir.glob("*.key")]
    assert len(keys) == 4
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert hierarchy.root_paths == (ca_dir / "root-x1.pem", ca_dir / "root-x2.pem")
    assert hierarchy.tls_cert_path == tls_dir / "server.pem"
    assert hierarchy.tls_key_path == tls_dir / "server.key"
    for path, root in zip(hierarchy.root_paths, hierarchy.roots, strict=True):
        assert x509.load_pem_x509_certificate(path.read_bytes()) == root


def test_roots_shape(hierarchy: Hierarchy, clock: FakeClock) -> None:
    x1, x2 = hierarchy.roots
    assert _cn(x1.subject) == "certmint Development Root X1"
    assert _cn(x2.subject) == "certmint Development Root X2"
    for root in (x1, x2):
        assert root.subject == root.issuer
        root.verify_directly_issued_by(root)
        key = root.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp384r1"
        bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length is None
        ku = root.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
        assert not ku.value.digital_signature
        assert _aki(root) == _ski(root)
        assert root.not_valid_before_utc == clock.now()
        assert root.serial_number > 0 and root.serial_number.bit_length() > 64
        with pytest.raises(x509.ExtensionNotFound):
            root.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_intermediate_and_cross_certificate(tmp_path: Path, hierarchy: Hierarchy) -> None:
    x1, x2 = hierarchy.roots
    (issuer,) = hierarchy.issuers
    assert issuer.id == "e1"
    (e1,), (cross,) = issuer.chains
    assert issuer.cert == e1
    assert _cn(e1.subject) == "certmint Development Intermediate E1"
    # The cross-certificate is the same CA (subject and key), signed by X2.
    assert cross.subject == e1.subject
    assert _spki(cross) == _spki(e1) == _spki_of_key(issuer.signer.private_key)  # type: ignore[attr-defined]
    assert e1.issuer == x1.subject and cross.issuer == x2.subject
    e1.verify_directly_issued_by(x1)
    cross.verify_directly_issued_by(x2)
    with pytest.raises(Exception):  # noqa: B017 - any verification failure will do
        cross.verify_directly_issued_by(x1)
    for cert, root in ((e1, x1), (cross, x2)):
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == 0
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
        assert _aki(cert) == _ski(root)
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
        assert [p.policy_identifier for p in policies] == [DV_POLICY_OID]
    # Real check with openssl on the files as written.
    ca_dir = tmp_path / "data" / "ca"
    ok = openssl_verify(ca_file=ca_dir / "root-x1.pem", leaf=ca_dir / "e1.pem", at=START)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    ok = openssl_verify(ca_file=ca_dir / "root-x2.pem", leaf=ca_dir / "e1-cross-x2.pem", at=START)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = openssl_verify(ca_file=ca_dir / "root-x1.pem", leaf=ca_dir / "e1-cross-x2.pem", at=START)
    assert bad.returncode != 0


def _spki_of_key(key: object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_server_certificate(tmp_path: Path, hierarchy: Hierarchy) -> None:
    chain = x509.load_pem_x509_certificates(hierarchy.tls_cert_path.read_bytes())
    leaf, intermediate = chain
    assert intermediate == hierarchy.issuers[0].cert
    leaf.verify_directly_issued_by(intermediate)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    key = serialization.load_pem_private_key(hierarchy.tls_key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert _spki(leaf) == _spki_of_key(key)
    leaf_path = write_pem(tmp_path / "leaf.pem", leaf)
    untrusted = write_pem(tmp_path / "chain.pem", intermediate)
    result = openssl_verify(
        ca_file=hierarchy.root_paths[0],
        untrusted=untrusted,
        leaf=leaf_path,
        at=START,
        extra=["-purpose", "sslserver", "-verify_hostname", "localhost"],
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_reload_is_unchanged(tmp_path: Path, hierarchy: Hierarchy, clock: FakeClock) -> None:
    data_dir = tmp_path / "data"
    before = _files(data_dir)
    clock.advance(3600)
    again = load_or_create_dev_hierarchy(data_dir, clock, SeededEntropy(99))
    assert _files(data_dir) == before
    assert again.roots == hierarchy.roots
    assert again.issuers[0].cert == hierarchy.issuers[0].cert
    assert again.issuers[0].chains == hierarchy.issuers[0].chains
    assert again.issuers[0].signer.public_key == hierarchy.issuers[0].signer.public_key


def test_server_certificate_reissued_when_names_change_expire_or_vanish(
    tmp_path: Path, hierarchy: Hierarchy, clock: FakeClock
) -> None:
    data_dir = tmp_path / "data"
    original = hierarchy.tls_cert_path.read_bytes()
    ca_before = {k: v for k, v in _files(data_dir).items() if k.startswith("ca/")}

    renamed = load_or_create_dev_hierarchy(data_dir, clock, SeededEntropy(5), ["ca.example.test"])
    leaf = x509.load_pem_x509_certificates(renamed.tls_cert_path.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ca.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == []
    assert renamed.tls_cert_path.read_bytes() != original

    current = renamed.tls_cert_path.read_bytes()
    clock.advance(timedelta(days=90).total_seconds())  # expired
    load_or_create_dev_hierarchy(data_dir, clock, SeededEntropy(6), ["ca.example.test"])
    refreshed = renamed.tls_cert_path.read_bytes()
    assert refreshed != current
    fresh_leaf = x509.load_pem_x509_certificates(refreshed)[0]
    assert fresh_leaf.not_valid_after_utc > clock.now()

    renamed.tls_cert_path.unlink()
    load_or_create_dev_hierarchy(data_dir, clock, SeededEntropy(7), ["ca.example.test"])
    assert renamed.tls_cert_path.exists()
    # The CA itself never changes while the server certificate does.
    assert {k: v for k, v in _files(data_dir).items() if k.startswith("ca/")} == ca_before


def test_serials_and_times_come_from_injected_sources(tmp_path: Path) -> None:
    first = load_or_create_dev_hierarchy(tmp_path / "a", FakeClock(START), RecordingEntropy(7))
    second = load_or_create_dev_hierarchy(tmp_path / "b", FakeClock(START), RecordingEntropy(7))
    # Keys come from the OS (cryptography); serials and times from our sources,
    # so the same seed and clock give the same serials and validity.
    assert [r.serial_number for r in first.roots] == [r.serial_number for r in second.roots]
    assert first.issuers[0].cert.serial_number == second.issuers[0].cert.serial_number
    assert first.roots[0].not_valid_before_utc == START
    assert first.issuers[0].cert.not_valid_before_utc == START


def test_incomplete_hierarchy_is_refused(tmp_path: Path, hierarchy: Hierarchy) -> None:
    (tmp_path / "data" / "ca" / "root-x2.key").unlink()
    with pytest.raises(HierarchyError, match=r"root-x2\.key"):
        load_or_create_dev_hierarchy(tmp_path / "data", FakeClock(START), SeededEntropy(1))


def test_mismatched_files_are_refused(tmp_path: Path, hierarchy: Hierarchy) -> None:
    ca_dir = tmp_path / "data" / "ca"
    # Swap the cross-certificate for the default one: X2 did not sign it.
    (ca_dir / "e1-cross-x2.pem").write_bytes((ca_dir / "e1.pem").read_bytes())
    with pytest.raises(HierarchyError):
        load_or_create_dev_hierarchy(tmp_path / "data", FakeClock(START), SeededEntropy(1))


def test_listener_certificate_names_the_cas_urls_and_is_linted(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener's certificate is signed by an issuing key, so it goes
    through the same lint as any subscriber's, with CRL DP and AIA under the
    management URL; a lint refusal leaves no certificate behind."""
    urls = ListenerUrls.under("http://ca.example.com/", crl_shards=4)
    made = load_or_create_dev_hierarchy(tmp_path / "a", clock, SeededEntropy(3), listener_urls=urls)
    leaf = x509.load_pem_x509_certificates(made.tls_cert_path.read_bytes())[0]
    points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = points[0].full_name[0].value  # type: ignore[index]
    assert crl_url.startswith("http://ca.example.com/crl/e1/") and crl_url.endswith(".crl")
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia] == ["http://ca.example.com/aia/e1.der"]

    import certmint.ca.issuance.lint as lint

    def refuse(self: object, cert: x509.Certificate, expected: object) -> None:
        raise lint.LintError("certificate", ("test.refused",))

    monkeypatch.setattr(lint.SubscriberLinter, "check", refuse)
    with pytest.raises(lint.LintError, match=r"test\.refused"):
        load_or_create_dev_hierarchy(tmp_path / "b", clock, SeededEntropy(4))
    assert not (tmp_path / "b" / "tls" / "server.pem").exists()
