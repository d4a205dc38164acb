"""Certificate keys, account-key JWKs (checked against josepy, certbot's JOSE
library) and CSRs."""

from __future__ import annotations

import ipaddress

import josepy
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certmint.client.errors import ClientError
from certmint.client.keys import (
    generate_key,
    key_from_pem,
    key_to_pem,
    make_csr,
    private_key_from_jwk,
    private_key_to_jwk,
)
from certmint.protocol.csr import parse_csr
from certmint.protocol.jwk import PrivateKey

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("key_type", "size", "curve", "expected"),
    [
        ("ecdsa", 2048, "secp256r1", "secp256r1"),
        ("ecdsa", 2048, "secp384r1", "secp384r1"),
        ("ecdsa", 2048, "SECP521R1", "secp521r1"),
    ],
)
def test_generate_ecdsa(key_type: str, size: int, curve: str, expected: str) -> None:
    key = generate_key(key_type, size, curve)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == expected


def test_generate_rsa() -> None:
    key = generate_key("rsa", 2048, "secp256r1")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


@pytest.mark.parametrize(
    ("key_type", "size", "curve", "message"),
    [
        ("rsa", 1024, "", "rsa-key-size"),
        ("rsa", 2049, "", "rsa-key-size"),
        ("rsa", 16384, "", "rsa-key-size"),
        ("ecdsa", 0, "secp192r1", "elliptic-curve"),
        ("dsa", 0, "", "key-type"),
    ],
)
def test_generate_refuses(key_type: str, size: int, curve: str, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        generate_key(key_type, size, curve)


def test_pem_round_trip_is_pkcs8() -> None:
    key = generate_key("ecdsa", 0, "secp256r1")
    pem = key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key_from_pem(pem).private_numbers() == key.private_numbers()
    with pytest.raises(ClientError, match="does not load"):
        key_from_pem(b"not a key")


def _keys() -> list[PrivateKey]:
    return [
        RSA_KEY,
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP521R1()),
        ed25519.Ed25519PrivateKey.generate(),
    ]


@pytest.mark.parametrize("key", _keys(), ids=["rsa", "p256", "p384", "p521", "ed25519"])
def test_jwk_round_trip(key: PrivateKey) -> None:
    jwk = private_key_to_jwk(key)
    back = private_key_from_jwk(jwk)
    assert private_key_to_jwk(back) == jwk


@pytest.mark.parametrize("key", _keys()[:4], ids=["rsa", "p256", "p384", "p521"])
def test_jwk_matches_josepy_both_ways(key: PrivateKey) -> None:
    ours = private_key_to_jwk(key)
    jwk_class = josepy.JWKRSA if isinstance(key, rsa.RSAPrivateKey) else josepy.JWKEC  # type: ignore[attr-defined]
    josepy_key = jwk_class(key=key)
    theirs = josepy_key.to_json()
    assert ours == theirs
    loaded = josepy.JWK.from_json(ours)  # type: ignore[attr-defined]
    assert loaded.key.private_numbers() == key.private_numbers()  # type: ignore[attr-defined,union-attr]
    assert private_key_to_jwk(private_key_from_jwk(theirs)) == ours


def test_ec_d_keeps_leading_zero_octets() -> None:
    # RFC 7518 §6.2.2.1: "d" is always the full coordinate length.
    key = ec.derive_private_key(5, ec.SECP521R1())
    jwk = private_key_to_jwk(key)
    assert len(jwk["d"]) == 88  # 66 octets in base64url


def test_rsa_without_crt_members_is_recovered() -> None:
    jwk = private_key_to_jwk(RSA_KEY)
    minimal = {k: jwk[k] for k in ("kty", "n", "e", "d")}
    assert private_key_to_jwk(private_key_from_jwk(minimal)) == jwk


@pytest.mark.parametrize(
    "mutate",
    [
        lambda j: j.pop("d"),
        lambda j: j.update(d="!!"),
        lambda j: j.update(x=private_key_to_jwk(ec.generate_private_key(ec.SECP256R1()))["x"]),
        lambda j: j.update(kty="oct"),
    ],
    ids=["no-d", "bad-d", "mismatched-public", "symmetric"],
)
def test_broken_ec_jwk(mutate: object) -> None:
    jwk: dict[str, str] = private_key_to_jwk(ec.generate_private_key(ec.SECP256R1()))
    mutate(jwk)  # type: ignore[operator]
    with pytest.raises(ClientError):
        private_key_from_jwk(jwk)


def test_mismatched_rsa_jwk() -> None:
    jwk = private_key_to_jwk(RSA_KEY)
    jwk["d"] = private_key_to_jwk(rsa.generate_private_key(65537, 2048))["d"]
    with pytest.raises(ClientError):
        private_key_from_jwk(jwk)


def test_make_csr() -> None:
    key = generate_key("ecdsa", 0, "secp256r1")
    der = make_csr(key, ["example.com", "www.example.com", "192.0.2.1", "2001:db8::1"])
    csr = x509.load_der_x509_csr(der)
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.com", "www.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.1"),
        ipaddress.ip_address("2001:db8::1"),
    ]
    assert len(csr.subject) == 0
    parse_csr(der)  # the CA's parser accepts it
    with pytest.raises(ClientError):
        make_csr(key, [])
