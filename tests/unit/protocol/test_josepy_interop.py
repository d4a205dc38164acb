"""Cross-checks with josepy and certbot's ``acme.jws`` (the agent most CAs see).

josepy 2.x has no EdDSA, so Ed25519 is covered by the RFC 8037 vectors instead.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from acme import jws as acme_jws
from josepy import b64 as jose_b64
from josepy import jwa, jwk, jws

from certmint.protocol.b64 import b64url_encode
from certmint.protocol.jwk import (
    PrivateKey,
    generate_private_key,
    jwk_from_public_key,
    jwk_thumbprint,
    public_key_from_jwk,
)
from certmint.protocol.jws import parse_jws, sign_acme_request, sign_jws, verify_jws

_JOSE_ALGS: dict[str, Any] = {
    "RS256": jwa.RS256,
    "ES256": jwa.ES256,
    "ES384": jwa.ES384,
    "ES512": jwa.ES512,
}
ALGS = sorted(_JOSE_ALGS)


def _jose_jwk(key: Any) -> jwk.JWK:
    return jwk.JWKRSA(key=key) if "RSA" in type(key).__name__ else jwk.JWKEC(key=key)


@pytest.fixture(scope="module", params=ALGS)
def alg_and_key(request: pytest.FixtureRequest) -> tuple[str, PrivateKey]:
    return request.param, generate_private_key(request.param)


def test_certmint_signs_josepy_verifies(alg_and_key: tuple[str, PrivateKey]) -> None:
    alg, key = alg_and_key
    signed = sign_jws(key, b'{"hello":"josepy"}', {"kid": "k1"})
    parsed = jws.JWS.json_loads(json.dumps(signed))
    assert parsed.signature.combined.alg == _JOSE_ALGS[alg]
    assert parsed.verify(_jose_jwk(key.public_key()))
    assert parsed.payload == b'{"hello":"josepy"}'


def test_certmint_acme_request_acme_lib_verifies(alg_and_key: tuple[str, PrivateKey]) -> None:
    _, key = alg_and_key
    nonce = b64url_encode(b"nonce-bytes-0001")
    body = sign_acme_request(key, {"identifiers": []}, url="https://ca/new-order", nonce=nonce)
    parsed = acme_jws.JWS.json_loads(body)
    header = parsed.signature.combined
    assert header.nonce == b"nonce-bytes-0001"
    assert header.url == "https://ca/new-order"
    # The embedded JWK is read by josepy as the same key.
    assert header.jwk == _jose_jwk(key.public_key())
    assert parsed.verify()


def test_josepy_signs_certmint_verifies(alg_and_key: tuple[str, PrivateKey]) -> None:
    alg, key = alg_and_key
    signed = jws.JWS.sign(
        b'{"from":"josepy"}',
        key=_jose_jwk(key),
        alg=_JOSE_ALGS[alg],
        include_jwk=True,
        protect=frozenset(["alg", "jwk"]),
    )
    parsed = parse_jws(signed.json_dumps().encode())
    assert parsed.alg == alg
    assert parsed.jwk is not None
    public = public_key_from_jwk(parsed.jwk)
    verify_jws(parsed, public)
    assert parsed.payload_json() == {"from": "josepy"}


def test_acme_lib_signs_certmint_verifies(alg_and_key: tuple[str, PrivateKey]) -> None:
    _, key = alg_and_key
    signed = acme_jws.JWS.sign(
        b"",
        key=_jose_jwk(key),
        alg=_JOSE_ALGS[alg_and_key[0]],
        nonce=b"\x00\x01nonce",
        url="https://ca/order/1",
        kid="https://ca/acct/1",
    )
    parsed = parse_jws(signed.json_dumps().encode())
    assert parsed.is_post_as_get
    assert parsed.kid == "https://ca/acct/1"
    assert parsed.url == "https://ca/order/1"
    assert parsed.nonce == b64url_encode(b"\x00\x01nonce")
    verify_jws(parsed, key.public_key())


def test_thumbprints_agree_with_josepy(alg_and_key: tuple[str, PrivateKey]) -> None:
    _, key = alg_and_key
    jose_thumb = jose_b64.b64encode(_jose_jwk(key.public_key()).thumbprint()).decode()
    assert jwk_thumbprint(key.public_key()) == jose_thumb
    # josepy's own JWK JSON parses with us to the same key and thumbprint.
    jose_json = _jose_jwk(key.public_key()).to_partial_json()
    assert jwk_thumbprint(jose_json) == jose_thumb
    assert jwk_from_public_key(public_key_from_jwk(jose_json)) == jwk_from_public_key(
        key.public_key()
    )
