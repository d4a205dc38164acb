from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certmint.protocol.b64 import b64url_decode, b64url_encode
from certmint.protocol.jwk import (
    JWKError,
    alg_for_key,
    canonical_jwk_json,
    generate_private_key,
    jwk_from_public_key,
    jwk_thumbprint,
    public_key_from_jwk,
    public_keys_equal,
    spki_sha256_hex,
)

from . import vectors as v


def test_rfc7638_thumbprint_vector() -> None:
    assert jwk_thumbprint(v.RFC7638_JWK) == v.RFC7638_THUMBPRINT
    key = public_key_from_jwk(v.RFC7638_JWK)
    assert jwk_thumbprint(key) == v.RFC7638_THUMBPRINT


def test_canonical_json_is_rfc7638_input() -> None:
    text = canonical_jwk_json(v.RFC7638_JWK)
    assert text.startswith(
        '{"e":"AQAB","kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWh'
    )
    assert " " not in text
    assert "kid" not in text and "alg" not in text


@pytest.mark.parametrize(
    ("alg", "members"),
    [
        ("RS256", ["e", "kty", "n"]),
        ("ES256", ["crv", "kty", "x", "y"]),
        ("ES384", ["crv", "kty", "x", "y"]),
        ("ES512", ["crv", "kty", "x", "y"]),
        ("EdDSA", ["crv", "kty", "x"]),
    ],
)
def test_generate_export_import_round_trip(alg: str, members: list[str]) -> None:
    key = generate_private_key(alg)
    assert alg_for_key(key) == alg
    assert alg_for_key(key.public_key()) == alg
    jwk = jwk_from_public_key(key.public_key())
    assert sorted(jwk) == members
    back = public_key_from_jwk(jwk)
    assert public_keys_equal(back, key.public_key())
    assert spki_sha256_hex(back) == spki_sha256_hex(key.public_key())
    assert len(spki_sha256_hex(back)) == 64
    assert json.loads(canonical_jwk_json(jwk)) == jwk


def test_ec_coordinates_are_full_length() -> None:
    # Find a P-521 key whose x has a leading zero octet; RFC 7518 §6.2.1.2
    # still requires all 66 octets.
    for _ in range(2000):
        key = ec.generate_private_key(ec.SECP521R1()).public_key()
        if key.public_numbers().x.bit_length() <= 512:
            break
    jwk = jwk_from_public_key(key)
    assert len(b64url_decode(jwk["x"])) == 66
    assert len(b64url_decode(jwk["y"])) == 66


def test_optional_members_are_ignored() -> None:
    key = generate_private_key("ES256").public_key()
    jwk = {**jwk_from_public_key(key), "use": "sig", "kid": "x", "alg": "ES256"}
    assert jwk_thumbprint(jwk) == jwk_thumbprint(key)


def test_public_keys_equal_distinguishes() -> None:
    a = generate_private_key("ES256").public_key()
    b = generate_private_key("ES256").public_key()
    assert public_keys_equal(a, a)
    assert not public_keys_equal(a, b)


_EC = jwk_from_public_key(generate_private_key("ES256").public_key())
_ED = jwk_from_public_key(generate_private_key("EdDSA").public_key())
_RSA = jwk_from_public_key(generate_private_key("RS256").public_key())


def _rsa_jwk(n: int, e: int = 65537) -> dict[str, str]:
    def enc(i: int) -> str:
        return b64url_encode(i.to_bytes((i.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "n": enc(n), "e": enc(e)}


def _off_curve(jwk: dict[str, str]) -> dict[str, str]:
    y = bytearray(b64url_decode(jwk["y"]))
    y[-1] ^= 1
    return {**jwk, "y": b64url_encode(bytes(y))}


_SMALL_RSA = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
_RSA_N = int.from_bytes(b64url_decode(_RSA["n"]), "big")
_P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1


@pytest.mark.parametrize(
    "jwk",
    [
        pytest.param("not a dict", id="not-dict"),
        pytest.param([_EC], id="list"),
        pytest.param({k: val for k, val in _EC.items() if k != "kty"}, id="missing-kty"),
        pytest.param({**_EC, "kty": 3}, id="kty-not-string"),
        pytest.param({**_EC, "kty": "XYZ"}, id="unknown-kty"),
        pytest.param({"kty": "oct", "k": "c2VjcmV0"}, id="oct-with-k"),
        pytest.param({"kty": "oct"}, id="oct"),
        pytest.param({**_EC, "d": "AAAA"}, id="private-d"),
        pytest.param({**_RSA, "p": "AQAB"}, id="private-p"),
        pytest.param({**_RSA, "q": "AQAB"}, id="private-q"),
        pytest.param({**_RSA, "dp": "AQAB"}, id="private-dp"),
        pytest.param({**_RSA, "dq": "AQAB"}, id="private-dq"),
        pytest.param({**_RSA, "qi": "AQAB"}, id="private-qi"),
        pytest.param({**_RSA, "oth": []}, id="private-oth"),
        pytest.param({**_EC, "k": "AQAB"}, id="symmetric-k"),
        pytest.param({**_EC, "crv": "P-192"}, id="unsupported-curve"),
        pytest.param({**_EC, "crv": "secp256k1"}, id="secp256k1"),
        pytest.param({**_ED, "crv": "Ed448"}, id="ed448"),
        pytest.param({**_ED, "crv": "X25519"}, id="x25519"),
        pytest.param(_off_curve(_EC), id="point-not-on-curve"),
        pytest.param(
            {**_EC, "x": b64url_encode(_P256_PRIME.to_bytes(32, "big"))}, id="x-not-field-element"
        ),
        pytest.param({**_EC, "x": _EC["x"] + "A"}, id="ec-coordinate-wrong-length"),
        pytest.param(
            {**_EC, "x": b64url_encode(b"\0" + b64url_decode(_EC["x"]))}, id="ec-coordinate-long"
        ),
        pytest.param({**_EC, "x": _EC["x"] + "="}, id="padding"),
        pytest.param({**_EC, "y": "+" + _EC["y"][1:]}, id="std-b64"),
        pytest.param({**_ED, "x": _ED["x"][:-1] + "B"}, id="ed25519-trailing-bits"),
        pytest.param({**_ED, "x": b64url_encode(b"\1" * 31)}, id="ed25519-short"),
        pytest.param({**_EC, "x": 5}, id="member-not-string"),
        pytest.param({"kty": "EC", "crv": "P-256", "x": _EC["x"]}, id="missing-y"),
        pytest.param({"kty": "RSA", "e": "AQAB"}, id="missing-n"),
        pytest.param(_rsa_jwk(_SMALL_RSA.n), id="rsa-1024"),
        pytest.param(_rsa_jwk(2**8193 + 1), id="rsa-too-big"),
        pytest.param(_rsa_jwk(_RSA_N, 65536), id="rsa-even-exponent"),
        pytest.param(_rsa_jwk(_RSA_N, 3), id="rsa-small-exponent"),
        pytest.param(_rsa_jwk(_RSA_N, 1), id="rsa-exponent-one"),
        pytest.param(_rsa_jwk(_RSA_N + 1), id="rsa-even-modulus"),
        pytest.param(
            {**_RSA, "n": b64url_encode(b"\0" + b64url_decode(_RSA["n"]))}, id="rsa-leading-zero"
        ),
        pytest.param({**_RSA, "e": b64url_encode(b"\0\1\0\1")}, id="rsa-e-leading-zero"),
        pytest.param({**_RSA, "e": ""}, id="rsa-e-empty"),
    ],
)
def test_public_key_from_jwk_rejects(jwk: object) -> None:
    with pytest.raises(JWKError) as info:
        public_key_from_jwk(jwk)
    assert str(info.value)


def test_jwk_error_is_value_error() -> None:
    assert issubclass(JWKError, ValueError)


def test_thumbprint_of_invalid_dict_raises() -> None:
    with pytest.raises(JWKError):
        jwk_thumbprint({**_EC, "d": "x"})


def test_types() -> None:
    assert isinstance(public_key_from_jwk(_RSA), rsa.RSAPublicKey)
    assert isinstance(public_key_from_jwk(_EC), ec.EllipticCurvePublicKey)
    assert isinstance(public_key_from_jwk(_ED), ed25519.Ed25519PublicKey)
    with pytest.raises(ValueError):
        generate_private_key("HS256")
