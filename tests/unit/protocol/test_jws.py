"""JWS: RFC test vectors, signing round trips, and every rejection rule."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from certmint.protocol.b64 import b64url_decode, b64url_encode
from certmint.protocol.jwk import (
    generate_private_key,
    jwk_from_public_key,
    public_key_from_jwk,
)
from certmint.protocol.jws import (
    EAB_ALGS,
    JWSError,
    parse_jws,
    sign_acme_request,
    sign_eab,
    sign_jws,
    sign_key_change,
    verify_hmac_jws,
    verify_jws,
)

from . import vectors as v


def _b64json(obj: Any) -> str:
    return b64url_encode(json.dumps(obj).encode())


def _body(**members: Any) -> bytes:
    return json.dumps(members).encode()


def _int(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


def _rfc7515_rsa_private_key() -> rsa.RSAPrivateKey:
    j = v.RFC7515_A2_JWK
    public = rsa.RSAPublicNumbers(_int(j["e"]), _int(j["n"]))
    return rsa.RSAPrivateNumbers(
        p=_int(j["p"]),
        q=_int(j["q"]),
        d=_int(j["d"]),
        dmp1=_int(j["dp"]),
        dmq1=_int(j["dq"]),
        iqmp=_int(j["qi"]),
        public_numbers=public,
    ).private_key()


def _public_only(jwk: dict[str, str]) -> dict[str, str]:
    return {k: val for k, val in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}


# --- published vectors


def test_rfc7515_a2_rs256_verifies() -> None:
    body = _body(
        protected=v.RFC7515_A2_PROTECTED_B64,
        payload=v.RFC7515_PAYLOAD_B64,
        signature=v.RFC7515_A2_SIGNATURE_B64,
    )
    parsed = parse_jws(body)
    assert parsed.alg == "RS256"
    assert parsed.payload == v.RFC7515_PAYLOAD
    verify_jws(parsed, public_key_from_jwk(_public_only(v.RFC7515_A2_JWK)))


def test_rfc7515_a2_rs256_signing_reproduces_signature() -> None:
    # RSASSA-PKCS1-v1_5 is deterministic, and our header serialisation of
    # {"alg":"RS256"} is byte-identical to the RFC's.
    signed = sign_jws(_rfc7515_rsa_private_key(), v.RFC7515_PAYLOAD, {})
    assert signed == {
        "protected": v.RFC7515_A2_PROTECTED_B64,
        "payload": v.RFC7515_PAYLOAD_B64,
        "signature": v.RFC7515_A2_SIGNATURE_B64,
    }


def test_rfc7515_a3_es256_verifies() -> None:
    body = _body(
        protected=v.RFC7515_A3_PROTECTED_B64,
        payload=v.RFC7515_PAYLOAD_B64,
        signature=v.RFC7515_A3_SIGNATURE_B64,
    )
    verify_jws(parse_jws(body), public_key_from_jwk(_public_only(v.RFC7515_A3_JWK)))


def test_rfc7515_a4_es512_verifies() -> None:
    body = _body(
        protected=v.RFC7515_A4_PROTECTED_B64,
        payload=v.RFC7515_A4_PAYLOAD_B64,
        signature=v.RFC7515_A4_SIGNATURE_B64,
    )
    parsed = parse_jws(body)
    assert parsed.payload == b"Payload"
    verify_jws(parsed, public_key_from_jwk(v.RFC7515_A4_JWK))


def test_rfc7515_a3_tampered_payload_is_bad_signature() -> None:
    body = _body(
        protected=v.RFC7515_A3_PROTECTED_B64,
        payload=b64url_encode(b'{"iss":"mallory"}'),
        signature=v.RFC7515_A3_SIGNATURE_B64,
    )
    with pytest.raises(JWSError) as info:
        verify_jws(parse_jws(body), public_key_from_jwk(_public_only(v.RFC7515_A3_JWK)))
    assert info.value.kind == "badSignature"


def test_rfc8037_a4_ed25519_signs_exact_signature() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(b64url_decode(v.RFC8037_D))
    assert jwk_from_public_key(key.public_key())["x"] == v.RFC8037_X
    signed = sign_jws(key, v.RFC8037_PAYLOAD, {"alg": "EdDSA"})
    assert signed == {
        "protected": v.RFC8037_PROTECTED_B64,
        "payload": v.RFC8037_PAYLOAD_B64,
        "signature": v.RFC8037_SIGNATURE_B64,
    }


def test_rfc8037_a5_ed25519_verifies() -> None:
    body = _body(
        protected=v.RFC8037_PROTECTED_B64,
        payload=v.RFC8037_PAYLOAD_B64,
        signature=v.RFC8037_SIGNATURE_B64,
    )
    key = public_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": v.RFC8037_X})
    verify_jws(parse_jws(body), key)


# --- round trips


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES384", "ES512", "EdDSA"])
def test_sign_acme_request_round_trip(alg: str) -> None:
    key = generate_private_key(alg)
    body = sign_acme_request(
        key, {"hello": "world"}, url="https://ca.test/acme/new-order", nonce="n1"
    )
    parsed = parse_jws(body)
    assert parsed.alg == alg
    assert parsed.url == "https://ca.test/acme/new-order"
    assert parsed.nonce == "n1"
    assert parsed.kid is None
    assert parsed.jwk == jwk_from_public_key(key.public_key())
    assert parsed.payload_json() == {"hello": "world"}
    assert not parsed.is_post_as_get
    assert parsed.jwk is not None
    verify_jws(parsed, public_key_from_jwk(parsed.jwk))


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_ecdsa_signature_is_fixed_length_r_s(alg: str) -> None:
    size = {"ES256": 32, "ES384": 48, "ES512": 66}[alg]
    key = generate_private_key(alg)
    for _ in range(8):  # short r or s would show up as a short signature
        signed = sign_jws(key, b"x", {})
        assert len(b64url_decode(signed["signature"])) == 2 * size


def test_post_as_get_with_kid() -> None:
    key = generate_private_key("ES256")
    body = sign_acme_request(
        key, None, url="https://ca.test/order/1", nonce="n", kid="https://ca.test/acct/1"
    )
    parsed = parse_jws(body)
    assert parsed.is_post_as_get
    assert parsed.payload == b""
    assert parsed.kid == "https://ca.test/acct/1"
    assert parsed.jwk is None
    with pytest.raises(JWSError) as info:
        parsed.payload_json()
    assert info.value.kind == "malformed"
    verify_jws(parsed, key.public_key())


def test_sign_jws_rejects_alg_that_does_not_match_key() -> None:
    with pytest.raises(ValueError):
        sign_jws(generate_private_key("ES256"), b"x", {"alg": "RS256"})


@pytest.mark.parametrize("alg", EAB_ALGS)
def test_eab_round_trip(alg: str) -> None:
    account_key = generate_private_key("ES256")
    account_jwk = jwk_from_public_key(account_key.public_key())
    hmac_key = b"\x01" * 32
    inner = sign_eab(account_jwk, "kid-1", hmac_key, "https://ca.test/new-acct", alg)
    parsed = parse_jws(json.dumps(inner).encode())
    assert parsed.alg == alg
    assert parsed.kid == "kid-1"
    assert parsed.url == "https://ca.test/new-acct"
    assert parsed.payload_json() == account_jwk
    verify_hmac_jws(parsed, hmac_key)
    with pytest.raises(JWSError) as info:
        verify_hmac_jws(parsed, b"\x02" * 32)
    assert info.value.kind == "badSignature"


def test_verify_hmac_refuses_asymmetric_algs() -> None:
    key = generate_private_key("ES256")
    parsed = parse_jws(sign_acme_request(key, {}, url="u", nonce="n"))
    with pytest.raises(JWSError) as info:
        verify_hmac_jws(parsed, b"secret")
    assert info.value.kind == "badSignatureAlgorithm"


def test_key_change_inner_jws() -> None:
    old = generate_private_key("ES256")
    new = generate_private_key("RS256")
    inner = sign_key_change(old, new, "https://ca.test/acct/1", "https://ca.test/key-change")
    parsed = parse_jws(json.dumps(inner).encode())
    assert parsed.nonce is None
    assert parsed.url == "https://ca.test/key-change"
    assert parsed.jwk == jwk_from_public_key(new.public_key())
    assert parsed.payload_json() == {
        "account": "https://ca.test/acct/1",
        "oldKey": jwk_from_public_key(old.public_key()),
    }
    verify_jws(parsed, new.public_key())
    # The old key may be given as a public key too.
    again = sign_key_change(old.public_key(), new, "https://ca.test/acct/1", "u")
    assert parse_jws(json.dumps(again).encode()).payload_json()["oldKey"] == jwk_from_public_key(
        old.public_key()
    )


# --- rejections


_ES256_KEY = ec.generate_private_key(ec.SECP256R1())


def _signed_with_header(
    header: dict[str, Any], key: ec.EllipticCurvePrivateKey = _ES256_KEY
) -> bytes:
    """A correctly signed body whose protected header is exactly ``header``."""
    protected_b64 = _b64json(header)
    payload_b64 = _b64json({})
    signing_input = f"{protected_b64}.{payload_b64}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return _body(protected=protected_b64, payload=payload_b64, signature=b64url_encode(sig))


_GOOD_JWK = jwk_from_public_key(_ES256_KEY.public_key())
_VALID_B64 = b64url_encode(b"{}")


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(b"not json", "malformed", id="not-json"),
        pytest.param(b"[]", "malformed", id="not-object"),
        pytest.param(b"\xff\xfe", "malformed", id="bad-utf8"),
        pytest.param(
            _body(protected=_VALID_B64, payload="", signature="", header={"alg": "ES256"}),
            "malformed",
            id="unprotected-header-member",
        ),
        pytest.param(
            _body(payload="", signatures=[{"protected": _VALID_B64, "signature": ""}]),
            "malformed",
            id="general-serialization-signatures",
        ),
        pytest.param(
            _body(protected=_VALID_B64, payload="", signature="", extra=1),
            "malformed",
            id="unknown-member",
        ),
        pytest.param(_body(protected=_VALID_B64, payload=""), "malformed", id="missing-signature"),
        pytest.param(
            _body(protected=_VALID_B64 + "=", payload="", signature=""),
            "malformed",
            id="padding",
        ),
        pytest.param(
            _body(protected=_b64json({"alg": "ES256"}), payload="e30=", signature=""),
            "malformed",
            id="payload-padding",
        ),
        pytest.param(
            # "e31" decodes to "{}" but has non-zero trailing bits.
            _body(protected=_b64json({"alg": "ES256"}), payload="e31", signature=""),
            "malformed",
            id="non-canonical-trailing-bits",
        ),
        pytest.param(
            _body(protected=_b64json({"alg": "ES256"}), payload="e3+", signature=""),
            "malformed",
            id="std-alphabet",
        ),
        pytest.param(
            _body(protected=_b64json({"alg": "ES256"}), payload=1, signature=""),
            "malformed",
            id="payload-not-string",
        ),
        pytest.param(
            _body(
                protected=b64url_encode(b'{"alg":"ES256","url":"a","url":"b"}'),
                payload="",
                signature="",
            ),
            "malformed",
            id="duplicate-header-key",
        ),
        pytest.param(
            b'{"protected":"e30","protected":"e30","payload":"","signature":""}',
            "malformed",
            id="duplicate-outer-key",
        ),
        pytest.param(
            _body(protected=b64url_encode(b"[1]"), payload="", signature=""),
            "malformed",
            id="header-not-object",
        ),
        pytest.param(
            _body(protected=_b64json({"url": "u"}), payload="", signature=""),
            "malformed",
            id="alg-missing",
        ),
        pytest.param(
            _body(protected=_b64json({"alg": 256}), payload="", signature=""),
            "malformed",
            id="alg-not-string",
        ),
        pytest.param(
            _body(protected=_b64json({"alg": "none"}), payload="", signature=""),
            "badSignatureAlgorithm",
            id="alg-none",
        ),
        pytest.param(
            _signed_with_header({"alg": "ES256", "crit": ["exp"], "exp": 1}),
            "malformed",
            id="unknown-crit",
        ),
        pytest.param(
            _signed_with_header({"alg": "ES256", "b64": False, "crit": ["b64"]}),
            "malformed",
            id="b64-false",
        ),
        pytest.param(
            _signed_with_header({"alg": "ES256", "b64": True}),
            "malformed",
            id="b64-member",
        ),
        pytest.param(
            _signed_with_header({"alg": "ES256", "jwk": _GOOD_JWK, "kid": "https://ca/acct/1"}),
            "malformed",
            id="jwk-and-kid",
        ),
        pytest.param(
            _signed_with_header({"alg": "ES256", "jwk": "not-an-object"}),
            "malformed",
            id="jwk-not-object",
        ),
        pytest.param(
            _signed_with_header({"alg": "ES256", "nonce": 5}), "malformed", id="nonce-not-string"
        ),
        pytest.param(
            _signed_with_header({"alg": "ES256", "url": ["u"]}), "malformed", id="url-not-string"
        ),
        pytest.param(
            _signed_with_header({"alg": "ES256", "kid": 1}), "malformed", id="kid-not-string"
        ),
    ],
)
def test_parse_jws_rejects(body: bytes, kind: str) -> None:
    with pytest.raises(JWSError) as info:
        parse_jws(body)
    assert info.value.kind == kind
    assert str(info.value)


def test_parse_accepts_signed_header_with_unknown_plain_member() -> None:
    # Unknown header parameters that are not "crit" are ignored (RFC 7515 §4).
    parsed = parse_jws(_signed_with_header({"alg": "ES256", "x-note": "hi"}))
    verify_jws(parsed, _ES256_KEY.public_key())


def test_verify_rejects_hs256_even_if_caller_allows_it() -> None:
    inner = sign_eab({"kty": "x"}, "kid", b"k" * 32, "u")
    parsed = parse_jws(json.dumps(inner).encode())
    for allowed in ((), ("HS256",), ("HS256", "ES256")):
        with pytest.raises(JWSError) as info:
            verify_jws(parsed, _ES256_KEY.public_key(), allowed_algs=allowed)
        assert info.value.kind == "badSignatureAlgorithm"


def test_verify_rejects_alg_not_in_allowed_list() -> None:
    parsed = parse_jws(sign_acme_request(_ES256_KEY, {}, url="u", nonce="n"))
    with pytest.raises(JWSError) as info:
        verify_jws(parsed, _ES256_KEY.public_key(), allowed_algs=("RS256",))
    assert info.value.kind == "badSignatureAlgorithm"


@pytest.mark.parametrize(
    ("header_alg", "key_alg"),
    [
        ("RS256", "ES256"),
        ("ES256", "RS256"),
        ("ES384", "ES256"),
        ("ES256", "ES512"),
        ("EdDSA", "ES256"),
        ("ES256", "EdDSA"),
    ],
)
def test_verify_rejects_alg_key_mismatch(header_alg: str, key_alg: str) -> None:
    body = _body(
        protected=_b64json({"alg": header_alg}), payload="", signature=b64url_encode(b"\0" * 64)
    )
    key = generate_private_key(key_alg).public_key()
    with pytest.raises(JWSError) as info:
        verify_jws(parse_jws(body), key)
    assert info.value.kind == "badSignatureAlgorithm"


def test_verify_rejects_der_ecdsa_signature() -> None:
    protected_b64 = _b64json({"alg": "ES256"})
    der_sig = _ES256_KEY.sign(f"{protected_b64}.".encode(), ec.ECDSA(hashes.SHA256()))
    body = _body(protected=protected_b64, payload="", signature=b64url_encode(der_sig))
    with pytest.raises(JWSError) as info:
        verify_jws(parse_jws(body), _ES256_KEY.public_key())
    assert info.value.kind == "badSignature"


@pytest.mark.parametrize("length", [0, 63, 65, 128])
def test_verify_rejects_wrong_length_ecdsa_signature(length: int) -> None:
    body = _body(
        protected=_b64json({"alg": "ES256"}), payload="", signature=b64url_encode(b"\1" * length)
    )
    with pytest.raises(JWSError) as info:
        verify_jws(parse_jws(body), _ES256_KEY.public_key())
    assert info.value.kind == "badSignature"


def test_verify_rejects_short_rsa_signature() -> None:
    key = generate_private_key("RS256")
    signed = sign_jws(key, b"x", {})
    sig = b64url_decode(signed["signature"])
    signed["signature"] = b64url_encode(sig[1:]) if sig[0] == 0 else b64url_encode(sig[:-1])
    with pytest.raises(JWSError) as info:
        verify_jws(parse_jws(json.dumps(signed).encode()), key.public_key())
    assert info.value.kind == "badSignature"


def test_verify_rejects_signature_by_other_key() -> None:
    other = generate_private_key("ES256")
    parsed = parse_jws(sign_acme_request(other, {}, url="u", nonce="n"))
    with pytest.raises(JWSError) as info:
        verify_jws(parsed, _ES256_KEY.public_key())
    assert info.value.kind == "badSignature"


def test_payload_json_rejects_duplicates_and_garbage() -> None:
    for payload in (b'{"a":1,"a":2}', b"{} x", b"NaN", b'{"a":Infinity}'):
        parsed = parse_jws(
            _body(
                protected=_b64json({"alg": "ES256"}), payload=b64url_encode(payload), signature=""
            )
        )
        with pytest.raises(JWSError) as info:
            parsed.payload_json()
        assert info.value.kind == "malformed"
