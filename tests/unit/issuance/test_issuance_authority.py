from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
)

from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.ca.issuance.profile import DV_POLICY_OID
from certmint.runtime import SystemEntropy
from certmint.testing.clock import FakeClock

from .issuance_support import AIA_BASE, CRL_BASE, START, RecordingEntropy, openssl_verify, write_pem

NAMES = ["www.example.com", "example.com", "*.example.com"]


@pytest.fixture(scope="module")
def rsa_2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _leaf(ca: CertificateAuthority, key: CertificatePublicKeyTypes) -> x509.Certificate:
    issued = ca.issue(public_key=key, dns_names=NAMES)
    return x509.load_der_x509_certificate(issued.der)


def _assert_dv_shape(cert: x509.Certificate, hierarchy: Hierarchy) -> None:
    e1 = hierarchy.issuers[0].cert
    assert cert.version == x509.Version.v3
    assert cert.issuer == e1.subject
    assert cert.subject == x509.Name([])
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha384"  # P-384 issuer, BR 7.1.3.2.2
    cert.verify_directly_issued_by(e1)

    oids = [ext.oid for ext in cert.extensions]
    assert sorted(o.dotted_string for o in oids) == sorted(
        o.dotted_string
        for o in (
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
            ExtensionOID.KEY_USAGE,
            ExtensionOID.EXTENDED_KEY_USAGE,
            ExtensionOID.BASIC_CONSTRAINTS,
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
            ExtensionOID.CERTIFICATE_POLICIES,
            ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
            ExtensionOID.CRL_DISTRIBUTION_POINTS,
        )
    )
    # No SKI: BR 7.1.2.7.6 NOT RECOMMENDED, pkilint warns.
    assert ExtensionOID.SUBJECT_KEY_IDENTIFIER not in oids

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # empty subject: RFC 5280 §4.2.1.6
    assert san.value.get_values_for_type(x509.DNSName) == sorted(NAMES)

    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    # keyEncipherment is omitted for RSA too: pkilint warns on digitalSignature
    # + keyEncipherment (BR 7.1.2.7.11), and it is never allowed for ECDSA.
    assert not ku.value.key_encipherment
    for bit in ("content_commitment", "data_encipherment", "key_agreement"):
        assert not getattr(ku.value, bit)
    assert not ku.value.key_cert_sign and not ku.value.crl_sign

    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert not eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]

    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False and bc.value.path_length is None

    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    e1_ski = e1.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == e1_ski.digest
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None

    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [(p.policy_identifier, p.policy_qualifiers) for p in policies] == [(DV_POLICY_OID, None)]

    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (AuthorityInformationAccessOID.CA_ISSUERS, AIA_BASE + "e1.der")
    ]

    (point,) = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert point.full_name is not None
    # The certificate's CRL shard (Boulder: serial mod shards, plus one).
    shard = cert.serial_number % 16 + 1
    assert [n.value for n in point.full_name] == [f"{CRL_BASE}e1/{shard}.crl"]
    assert point.reasons is None and point.crl_issuer is None


def test_ecdsa_p256_leaf_shape(ca: CertificateAuthority, hierarchy: Hierarchy) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = _leaf(ca, key)
    _assert_dv_shape(cert, hierarchy)
    assert cert.public_key() == key


def test_rsa_2048_leaf_shape(
    ca: CertificateAuthority, hierarchy: Hierarchy, rsa_2048: rsa.RSAPrivateKey
) -> None:
    cert = _leaf(ca, rsa_2048.public_key())
    _assert_dv_shape(cert, hierarchy)
    assert cert.public_key() == rsa_2048.public_key()


def test_validity_default_is_90_days_inclusive_and_backdated(
    ca: CertificateAuthority, clock: FakeClock
) -> None:
    # The hierarchy was made at START: in the issuer's first hour the backdate
    # stops at the issuer's notBefore (a leaf lies inside its issuer's validity).
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert ca.issue(public_key=key, dns_names=["a.example"]).not_before == START
    clock.advance(2 * 3600 + 0.75)  # sub-second clock values must not leak into the DER
    issued = ca.issue(public_key=key, dns_names=["a.example"])
    cert = x509.load_der_x509_certificate(issued.der)
    assert issued.not_before == cert.not_valid_before_utc == START + timedelta(hours=1)
    assert issued.not_after == cert.not_valid_after_utc
    # RFC 5280 §4.1.2.5: both ends count, so 90 days end one second early.
    assert issued.not_after - issued.not_before == timedelta(days=90) - timedelta(seconds=1)


def test_requested_validity_is_honoured(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    nb = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    na = datetime(2026, 2, 8, 11, 59, 59, tzinfo=UTC)
    issued = ca.issue(public_key=key, dns_names=["a.example"], not_before=nb, not_after=na)
    assert (issued.not_before, issued.not_after) == (nb, na)
    short = ca.issue(public_key=key, dns_names=["a.example"], validity=timedelta(days=6))
    assert short.not_after - short.not_before == timedelta(days=6, seconds=-1)
    only_start = ca.issue(public_key=key, dns_names=["a.example"], not_before=nb)
    assert only_start.not_after == nb + timedelta(days=90, seconds=-1)
    with pytest.raises(ValueError):
        ca.issue(public_key=key, dns_names=["a.example"], not_before=na, not_after=nb)
    with pytest.raises(ValueError):
        ca.issue(public_key=key, dns_names=["a.example"], not_before=datetime(2026, 2, 1))


def test_serial_is_18_random_bytes_from_entropy(
    ca: CertificateAuthority, entropy: RecordingEntropy
) -> None:
    entropy.draws.clear()
    issued = ca.issue(
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(), dns_names=["a.example"]
    )
    cert = x509.load_der_x509_certificate(issued.der)
    (draw,) = entropy.draws
    assert len(draw) == 18  # 144 bits of CSPRNG output >= 64 (BR 7.1)
    assert cert.serial_number == int.from_bytes(draw, "big") > 0
    assert issued.serial == f"{cert.serial_number:036x}"
    assert issued.serial == issued.serial.lower()
    assert issued.issuer_id == "e1"


def test_serials_with_system_entropy_are_distinct_and_wide(hierarchy: Hierarchy) -> None:
    ca = CertificateAuthority(
        hierarchy, IssuanceConfig(CRL_BASE, AIA_BASE), FakeClock(START), SystemEntropy()
    )
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    serials = {int(ca.issue(public_key=key, dns_names=["a.example"]).serial, 16) for _ in range(20)}
    assert len(serials) == 20
    assert all(s > 0 for s in serials)
    # 20 draws of 144 random bits: the widest is far above 64 bits.
    assert max(s.bit_length() for s in serials) > 128


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),
        lambda: ec.generate_private_key(ec.SECP521R1()).public_key(),
        lambda: ec.generate_private_key(ec.SECP256K1()).public_key(),
        lambda: ed25519.Ed25519PrivateKey.generate().public_key(),
    ],
    ids=["rsa-1024", "p-521", "secp256k1", "ed25519"],
)
def test_unsupported_keys_are_refused(ca: CertificateAuthority, make_key: object) -> None:
    assert callable(make_key)
    with pytest.raises(ValueError):
        ca.issue(public_key=make_key(), dns_names=["a.example"])


@pytest.mark.parametrize(
    "names",
    [
        [],
        ["bad name.example"],
        ["a..example"],
        ["*.*.example"],
        ["ex*.example"],
        ["é.example"],
        ["192.0.2.1"],
        ["*.com"],
        ["example.com."],
        ["-a.example"],
        ["a_b.example"],
        ["a" * 64 + ".example"],
    ],
)
def test_bad_names_are_refused(ca: CertificateAuthority, names: list[str]) -> None:
    with pytest.raises(ValueError):
        ca.issue(public_key=ec.generate_private_key(ec.SECP256R1()).public_key(), dns_names=names)


def test_ip_addresses_and_dedup(ca: CertificateAuthority) -> None:
    issued = ca.issue(
        public_key=ec.generate_private_key(ec.SECP384R1()).public_key(),
        dns_names=["B.example", "b.example", "a.example"],
        ip_addresses=["192.0.2.1", "2001:db8::1"],
    )
    san = (
        x509.load_der_x509_certificate(issued.der)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert san.get_values_for_type(x509.DNSName) == ["a.example", "b.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1", "2001:db8::1"]


def test_chains_and_issuer_lookup(ca: CertificateAuthority, hierarchy: Hierarchy) -> None:
    assert ca.issuer_ids == ("e1",)
    assert ca.issuer_cert("e1") == hierarchy.issuers[0].cert
    default, alternate = ca.chains_pem("e1")
    (e1,), (cross,) = hierarchy.issuers[0].chains
    assert x509.load_pem_x509_certificates(default.encode()) == [e1]
    assert x509.load_pem_x509_certificates(alternate.encode()) == [cross]
    with pytest.raises(KeyError):
        ca.chains_pem("nope")
    with pytest.raises(KeyError):
        ca.issuer_cert("nope")


def test_openssl_verifies_both_chains(
    tmp_path: Path, ca: CertificateAuthority, hierarchy: Hierarchy, rsa_2048: rsa.RSAPrivateKey
) -> None:
    default, alternate = ca.chains_pem("e1")
    (tmp_path / "default.pem").write_text(default)
    (tmp_path / "alternate.pem").write_text(alternate)
    keys: list[CertificatePublicKeyTypes] = [
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        rsa_2048.public_key(),
    ]
    for index, key in enumerate(keys):
        leaf = write_pem(tmp_path / f"leaf{index}.pem", _leaf(ca, key))
        for chain, root in (("default.pem", 0), ("alternate.pem", 1)):
            result = openssl_verify(
                ca_file=hierarchy.root_paths[root],
                untrusted=tmp_path / chain,
                leaf=leaf,
                at=START,
                extra=["-purpose", "sslserver", "-verify_hostname", "www.example.com"],
            )
            assert result.returncode == 0, result.stdout + result.stderr
        # The default chain does not lead to X2, nor the alternate to X1.
        wrong = openssl_verify(
            ca_file=hierarchy.root_paths[1], untrusted=tmp_path / "default.pem", leaf=leaf, at=START
        )
        assert wrong.returncode != 0
