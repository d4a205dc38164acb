from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certmint.protocol.b64 import b64url_decode
from certmint.protocol.challenges import (
    ACME_TLS_ALPN_PROTOCOL,
    ID_PE_ACME_IDENTIFIER,
    TOKEN_BYTES,
    dns01_record_name,
    dns01_txt_value,
    http01_path,
    is_valid_token,
    key_authorization,
    new_token,
    tls_alpn01_certificate,
    tls_alpn01_extension_value,
)
from certmint.protocol.jwk import generate_private_key, public_keys_equal
from certmint.testing.entropy import SeededEntropy

from . import vectors as v

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHZ = f"{TOKEN}.{v.RFC7638_THUMBPRINT}"
# Computed outside Python: printf '%s' "$KEY_AUTHZ" | openssl dgst -sha256 -binary
#   | openssl base64 -A | tr '+/' '-_' | tr -d '='
KEY_AUTHZ_SHA256_B64URL = "ZTRx1Ckl1-tM05o5zaizTTA0yUy5AGereMgSNWC6Ll8"


def test_new_token_uses_given_entropy() -> None:
    a = new_token(SeededEntropy(7))
    b = new_token(SeededEntropy(7))
    c = new_token(SeededEntropy(8))
    assert a == b != c
    assert len(b64url_decode(a)) == TOKEN_BYTES == 32
    assert len(a) == 43
    assert is_valid_token(a)


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        (TOKEN, True),
        ("A" * 22, True),
        ("A" * 21, False),
        ("", False),
        (TOKEN + "=", False),
        ("../../etc/passwd" + "A" * 20, False),
        (TOKEN[:-1] + "+", False),
        (TOKEN[:-1] + "/", False),
        (TOKEN + "\n", False),
        ("A" * 257, False),
    ],
)
def test_is_valid_token(token: str, ok: bool) -> None:
    assert is_valid_token(token) is ok


def test_key_authorization_and_http01() -> None:
    assert key_authorization(TOKEN, v.RFC7638_THUMBPRINT) == KEY_AUTHZ
    assert http01_path(TOKEN) == f"/.well-known/acme-challenge/{TOKEN}"


def test_dns01_known_answer() -> None:
    assert dns01_txt_value(KEY_AUTHZ) == KEY_AUTHZ_SHA256_B64URL
    assert dns01_record_name("www.example.org") == "_acme-challenge.www.example.org"
    assert dns01_record_name("*.example.org") == "_acme-challenge.example.org"


def test_tls_alpn01_extension_value_is_der_octet_string() -> None:
    value = tls_alpn01_extension_value(KEY_AUTHZ)
    assert value[:2] == b"\x04\x20"
    assert value[2:] == b64url_decode(KEY_AUTHZ_SHA256_B64URL)
    assert ACME_TLS_ALPN_PROTOCOL == "acme-tls/1"
    assert ID_PE_ACME_IDENTIFIER.dotted_string == "1.3.6.1.5.5.7.1.31"


def _check_shape(cert: x509.Certificate, san: x509.GeneralName) -> None:
    # RFC 8737 §3: self-signed, exactly one SAN, critical acmeIdentifier.
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(san_ext.value) == [san]
    acme = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert acme.critical
    assert isinstance(acme.value, x509.UnrecognizedExtension)
    assert acme.value.value == tls_alpn01_extension_value(KEY_AUTHZ)


def test_tls_alpn01_certificate_shape() -> None:
    cert, key = tls_alpn01_certificate("www.example.org", KEY_AUTHZ)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert public_keys_equal(cert.public_key(), key.public_key())  # type: ignore[arg-type]
    _check_shape(cert, x509.DNSName("www.example.org"))
    assert cert.serial_number > 0


@pytest.mark.parametrize("alg", ["RS256", "ES384", "EdDSA"])
def test_tls_alpn01_certificate_with_given_key(alg: str) -> None:
    given = generate_private_key(alg)
    now = datetime(2030, 5, 1, tzinfo=UTC)
    cert, key = tls_alpn01_certificate("a.example", KEY_AUTHZ, given, now=now)
    assert key is given
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
    _check_shape(cert, x509.DNSName("a.example"))


def test_tls_alpn01_certificate_for_ip_identifier() -> None:
    cert, _ = tls_alpn01_certificate("192.0.2.7", KEY_AUTHZ)
    _check_shape(cert, x509.IPAddress(ipaddress.ip_address("192.0.2.7")))
