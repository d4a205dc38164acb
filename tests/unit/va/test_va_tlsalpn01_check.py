"""RFC 8737 §3 certificate checks, on certificates built here: no network."""

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certmint.ca.va.tlsalpn01 import check_certificate, sni_for
from certmint.protocol.challenges import (
    ID_PE_ACME_IDENTIFIER,
    tls_alpn01_certificate,
    tls_alpn01_extension_value,
)
from certmint.protocol.problems import ProblemType

KEYAUTHZ = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
KEY = ec.generate_private_key(ec.SECP256R1())


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def custom_cert(
    names: list[x509.GeneralName], *, value: bytes | None, critical: bool = True
) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(KEY.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if value is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, value), critical=critical
        )
    return der_of(builder.sign(KEY, hashes.SHA256()))


def test_genuine_certificate_passes() -> None:
    cert, _ = tls_alpn01_certificate("example.com", KEYAUTHZ, KEY)
    assert check_certificate("example.com", der_of(cert), KEYAUTHZ, "192.0.2.1:443") is None


def test_ip_identifier_certificate_passes() -> None:
    cert, _ = tls_alpn01_certificate("192.0.2.1", KEYAUTHZ, KEY)
    assert check_certificate("192.0.2.1", der_of(cert), KEYAUTHZ, "192.0.2.1:443") is None


GOOD_VALUE = tls_alpn01_extension_value(KEYAUTHZ)


@pytest.mark.parametrize(
    ("der", "fragment"),
    [
        (custom_cert([x509.DNSName("other.example")], value=GOOD_VALUE), "other.example"),
        (
            custom_cert(
                [x509.DNSName("example.com"), x509.DNSName("extra.example")], value=GOOD_VALUE
            ),
            "exactly one",
        ),
        (
            custom_cert([x509.IPAddress(ipaddress.ip_address("192.0.2.1"))], value=GOOD_VALUE),
            "exactly one",
        ),
        (custom_cert([], value=GOOD_VALUE), "without SANs"),
        (custom_cert([x509.DNSName("example.com")], value=None), "Missing acmeIdentifier"),
        (
            custom_cert([x509.DNSName("example.com")], value=GOOD_VALUE, critical=False),
            "not critical",
        ),
        (
            custom_cert([x509.DNSName("example.com")], value=b"\x04\x20" + b"\x00" * 32),
            "Invalid acmeIdentifier extension value",
        ),
        (b"not a certificate", "does not parse"),
    ],
)
def test_wrong_certificates_are_unauthorized(der: bytes, fragment: str) -> None:
    problem = check_certificate("example.com", der, KEYAUTHZ, "192.0.2.1:443")
    assert problem is not None
    assert problem.type == ProblemType.UNAUTHORIZED
    assert fragment in problem.detail


def test_sni_for_ip_is_reverse_name() -> None:
    assert sni_for("example.com") == "example.com"
    assert sni_for("192.0.2.1") == "1.2.0.192.in-addr.arpa"
