"""CRLs (issuance/crl.py): shard assignment and URLs, the CRL's fields, the
Issuing Distribution Point of a shard, reason codes, numbering, lint, and
openssl parsing the result and rejecting a revoked leaf."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certmint.ca.issuance.authority import CertificateAuthority, IssuedCertificate
from certmint.ca.issuance.crl import (
    FULL_CRL,
    CrlConfig,
    build_shard_crl,
    crl_number_for,
    crl_url_for,
    shard_for_serial,
)
from certmint.ca.issuance.crl_lint import lint_crl
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.ca.issuance.signing import LintError
from certmint.ca.storage.records import RevokedEntry
from certmint.testing.clock import FakeClock

from .issuance_support import CRL_BASE, START, openssl, openssl_verify, write_pem

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _openssl_hex(serial: str) -> str:
    """How openssl prints a serial: whole bytes, upper case, no leading zero byte."""
    digits = f"{int(serial, 16):X}"
    return digits if len(digits) % 2 == 0 else "0" + digits


def _issue(ca: CertificateAuthority) -> IssuedCertificate:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return ca.issue(public_key=key, dns_names=["www.example.com"])


def _crl(hierarchy: Hierarchy, clock: FakeClock, shard: int, entries: list[RevokedEntry]) -> bytes:
    return build_shard_crl(
        hierarchy.issuers[0], shard, entries, clock, base_url=CRL_BASE, lint=lint_crl
    )


def test_shards_follow_boulder_serial_mod_n_plus_one() -> None:
    assert shard_for_serial(0x010203040506070809, 999) == 919  # Boulder's own test vector
    assert {shard_for_serial(n, 16) for n in range(64)} == set(range(1, 17))
    with pytest.raises(ValueError):
        shard_for_serial(5, 0)


def test_crl_urls() -> None:
    assert crl_url_for("http://ca.example/crl/", "e1", 7) == "http://ca.example/crl/e1/7.crl"
    # Shard 0 is the complete CRL, at the URL certificates had before sharding.
    assert crl_url_for("http://ca.example/crl/", "e1", FULL_CRL) == "http://ca.example/crl/e1.crl"
    for base, shard in (("http://ca.example/crl", 1), ("http://ca.example/crl/", -1)):
        with pytest.raises(ValueError):
            crl_url_for(base, "e1", shard)


def test_a_certificate_names_its_shard(ca: CertificateAuthority) -> None:
    issued = _issue(ca)
    cert = x509.load_der_x509_certificate(issued.der)
    assert issued.crl_shard == shard_for_serial(cert.serial_number, 16)
    (point,) = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert point.full_name is not None
    assert [n.value for n in point.full_name] == [f"{CRL_BASE}e1/{issued.crl_shard}.crl"]


def test_crl_config_bounds() -> None:
    CrlConfig()  # the defaults are valid
    for bad in (
        {"shards": 0},
        {"interval": timedelta(days=8)},  # BR 4.9.7: at least every 7 days
        {"validity": timedelta(days=11)},  # BR 4.9.7: nextUpdate within 10 days
        {"interval": timedelta(days=7), "validity": timedelta(days=7)},
        {"update_after_revocation": timedelta(0)},
        {"update_after_revocation": timedelta(hours=7)},  # longer than the interval
    ):
        with pytest.raises(ValueError):
            CrlConfig(**bad)


def test_shard_crl_fields(hierarchy: Hierarchy, clock: FakeClock) -> None:
    clock.advance(12.345678)
    now = clock.now()
    revoked_at = datetime(2025, 12, 31, 10, 0, 0, 500000, tzinfo=UTC)
    entries = [
        RevokedEntry(serial="0a" * 18, revoked_at=revoked_at, reason=1),
        RevokedEntry(serial="0b" * 18, revoked_at=revoked_at, reason=0),
        RevokedEntry(serial="0c" * 18, revoked_at=revoked_at, reason=None),
        RevokedEntry(serial="0d" * 18, revoked_at=revoked_at, reason=4),
        RevokedEntry(serial="0d" * 18, revoked_at=revoked_at, reason=4),  # listed once
    ]
    crl = x509.load_der_x509_crl(_crl(hierarchy, clock, 5, entries))
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
    # BR 7.2.2 / RFC 5280 §5.2.5: a shard's critical IDP names its own URL.
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical
    assert idp.value.only_contains_user_certs
    assert not idp.value.only_contains_ca_certs and not idp.value.indirect_crl
    assert idp.value.only_some_reasons is None
    assert [n.value for n in idp.value.full_name or []] == [f"{CRL_BASE}e1/5.crl"]

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


def test_the_complete_crl_has_no_idp(hierarchy: Hierarchy, clock: FakeClock) -> None:
    crl = x509.load_der_x509_crl(_crl(hierarchy, clock, FULL_CRL, []))
    with pytest.raises(x509.ExtensionNotFound):
        crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert len(crl) == 0


def test_crl_numbers_strictly_increase() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    micros = (at - EPOCH) // timedelta(microseconds=1)
    assert crl_number_for(at, None) == micros
    assert crl_number_for(at, micros - 5) == micros
    assert crl_number_for(at, micros) == micros + 1  # same instant: still greater
    assert crl_number_for(at, micros + 100) == micros + 101  # a clock that went back


def test_crl_rejects_bad_entries(hierarchy: Hierarchy, clock: FakeClock) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for bad in (
        RevokedEntry(serial="zz", revoked_at=now, reason=None),
        RevokedEntry(serial="01", revoked_at=now, reason=7),  # RFC 5280: 7 is unused
        RevokedEntry(serial="01", revoked_at=now.replace(tzinfo=None), reason=None),
    ):
        with pytest.raises(ValueError):
            _crl(hierarchy, clock, 1, [bad])


def test_a_lint_refusal_signs_nothing(hierarchy: Hierarchy, clock: FakeClock) -> None:
    issuer = hierarchy.issuers[0]
    calls: list[x509.CertificateRevocationList] = []

    def refuse(draft: x509.CertificateRevocationList) -> None:
        calls.append(draft)
        raise LintError("CRL", ("ERROR made.up @ tbsCertList",))

    class NeverSigns:
        key_id = issuer.signer.key_id
        public_key = issuer.signer.public_key
        hash_algorithm = issuer.signer.hash_algorithm

        def sign(self, tbs: bytes) -> bytes:
            raise AssertionError("a refused CRL must not be signed")

    refusing = type(issuer)(issuer.id, issuer.cert, NeverSigns(), issuer.chains)
    with pytest.raises(LintError):
        build_shard_crl(refusing, 1, [], clock, base_url=CRL_BASE, lint=refuse)
    assert len(calls) == 1


def test_openssl_parses_a_shard_and_crl_check_rejects_the_revoked_leaf(
    tmp_path: Path, ca: CertificateAuthority, hierarchy: Hierarchy, clock: FakeClock
) -> None:
    good = _issue(ca)
    bad = _issue(ca)
    clock.advance(60)
    # Both in the bad one's shard CRL's scope for openssl: verify each leaf
    # against the CRL of its own shard (the IDP must match its CRL DP).
    crls = {
        issued.serial: _crl(
            hierarchy,
            clock,
            issued.crl_shard or 0,
            [RevokedEntry(bad.serial, clock.now(), 1)] if issued is bad else [],
        )
        for issued in (good, bad)
    }
    text = openssl(
        ["crl", "-inform", "DER", "-noout", "-text", "-in", str(_write(tmp_path, crls[bad.serial]))]
    )
    assert text.returncode == 0, text.stderr
    listed = text.stdout.replace(":", "")
    assert _openssl_hex(bad.serial) in listed
    assert "Key Compromise" in text.stdout
    assert "Issuing Distribution Point" in text.stdout

    chain = tmp_path / "chain.pem"
    chain.write_text(ca.chains_pem("e1")[0])
    at = clock.now()
    for issued, expect_ok in ((good, True), (bad, False)):
        crl_pem = tmp_path / f"{issued.serial}.crl.pem"
        crl = x509.load_der_x509_crl(crls[issued.serial])
        crl_pem.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
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


def _write(tmp_path: Path, der: bytes) -> Path:
    path = tmp_path / "shard.crl"
    path.write_bytes(der)
    return path
