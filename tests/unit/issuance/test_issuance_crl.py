from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certmint.ca.issuance.authority import CertificateAuthority, IssuedCertificate
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.ca.storage.records import RevokedEntry
from certmint.testing.clock import FakeClock

from .issuance_support import START, openssl, openssl_verify, write_pem

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _openssl_hex(serial: str) -> str:
    """How openssl prints a serial: whole bytes, upper case, no leading zero byte."""
    digits = f"{int(serial, 16):X}"
    return digits if len(digits) % 2 == 0 else "0" + digits


def _issue(ca: CertificateAuthority) -> IssuedCertificate:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return ca.issue(public_key=key, dns_names=["www.example.com"])


def test_crl_fields(ca: CertificateAuthority, hierarchy: Hierarchy, clock: FakeClock) -> None:
    clock.advance(12.345678)
    now = clock.now()
    revoked_at = datetime(2025, 12, 31, 10, 0, 0, 500000, tzinfo=UTC)
    entries = [
        RevokedEntry(serial="0a" * 18, revoked_at=revoked_at, reason=1),
        RevokedEntry(serial="0b" * 18, revoked_at=revoked_at, reason=0),
        RevokedEntry(serial="0c" * 18, revoked_at=revoked_at, reason=None),
        RevokedEntry(serial="0d" * 18, revoked_at=revoked_at, reason=4),
    ]
    crl = x509.load_der_x509_crl(ca.build_crl("e1", entries))
    e1 = hierarchy.issuers[0].cert
    assert crl.issuer == e1.subject
    assert crl.is_signature_valid(e1.public_key())  # type: ignore[arg-type]
    assert crl.last_update_utc == now.replace(microsecond=0)
    assert crl.next_update_utc == now.replace(microsecond=0) + timedelta(days=7)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    assert not number.critical
    assert number.value.crl_number == (now - EPOCH) // timedelta(microseconds=1)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = e1.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    by_serial = {entry.serial_number: entry for entry in crl}
    assert len(by_serial) == 4
    for entry in by_serial.values():
        assert entry.revocation_date_utc == revoked_at.replace(microsecond=0)

    def reason(serial_hex: str) -> x509.ReasonFlags | None:
        try:
            ext = by_serial[int(serial_hex, 16)].extensions.get_extension_for_class(x509.CRLReason)
        except x509.ExtensionNotFound:
            return None
        return ext.value.reason

    assert reason("0a" * 18) == x509.ReasonFlags.key_compromise
    assert reason("0b" * 18) is None  # unspecified(0) is never encoded (BR 7.2.2)
    assert reason("0c" * 18) is None
    assert reason("0d" * 18) == x509.ReasonFlags.superseded


def test_crl_number_strictly_increases(ca: CertificateAuthority, clock: FakeClock) -> None:
    def number() -> int:
        crl = x509.load_der_x509_crl(ca.build_crl("e1", []))
        value = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert isinstance(value, int)
        return value

    first = number()
    second = number()  # same instant: still strictly greater
    clock.advance(1)
    third = number()
    assert first < second < third
    assert third == (clock.now() - EPOCH) // timedelta(microseconds=1)


def test_crl_rejects_bad_input(ca: CertificateAuthority) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(KeyError):
        ca.build_crl("nope", [])
    with pytest.raises(ValueError):
        ca.build_crl("e1", [RevokedEntry(serial="zz", revoked_at=now, reason=None)])
    with pytest.raises(ValueError):
        ca.build_crl("e1", [RevokedEntry(serial="01", revoked_at=now, reason=7)])


def test_openssl_parses_crl_and_crl_check_rejects_revoked_leaf(
    tmp_path: Path, ca: CertificateAuthority, hierarchy: Hierarchy, clock: FakeClock
) -> None:
    good = _issue(ca)
    bad = _issue(ca)
    clock.advance(60)
    der = ca.build_crl("e1", [RevokedEntry(bad.serial, clock.now(), 1)])
    crl_der = tmp_path / "e1.crl"
    crl_der.write_bytes(der)

    text = openssl(["crl", "-inform", "DER", "-noout", "-text", "-in", str(crl_der)])
    assert text.returncode == 0, text.stderr
    listed = text.stdout.replace(":", "")
    assert _openssl_hex(bad.serial) in listed
    assert _openssl_hex(good.serial) not in listed
    assert "Key Compromise" in text.stdout

    crl_pem = tmp_path / "e1.crl.pem"
    crl_pem.write_bytes(x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / "chain.pem"
    chain.write_text(ca.chains_pem("e1")[0])
    at = clock.now()
    for issued, expect_ok in ((good, True), (bad, False)):
        leaf = write_pem(
            tmp_path / f"{issued.serial}.pem", x509.load_der_x509_certificate(issued.der)
        )
        result = openssl_verify(
            ca_file=hierarchy.root_paths[0],
            untrusted=chain,
            leaf=leaf,
            at=at,
            extra=["-crl_check", "-CRLfile", str(crl_pem)],
        )
        output = result.stdout + result.stderr
        if expect_ok:
            assert result.returncode == 0, output
        else:
            assert result.returncode != 0, output
            assert "revoked" in output, output
    assert START < at
