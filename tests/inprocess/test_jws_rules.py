"""Request authentication (RFC 8555 §6.2 JWS, §6.3 POST-as-GET, §6.4 url,
§6.5 nonce) and plain HTTP errors, through the real WFE."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certmint.protocol.jwk import jwk_from_public_key
from certmint.protocol.jws import ALLOWED_ALGS, sign_jws
from certmint.testing.acme_client import RawAcmeClient

from .conftest import BASE_URL, CAEnv, issue, problem_type
from .flows import raw_jws

pytestmark = pytest.mark.anyio


async def fresh_nonce(env: CAEnv) -> str:
    return (await env.http.head("/acme/new-nonce")).headers["Replay-Nonce"]


async def post_raw(
    env: CAEnv, url: str, body: bytes, content_type: str = "application/jose+json"
) -> Any:
    return await env.http.post(url, content=body, headers={"Content-Type": content_type})


def assert_problem(response: Any, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert problem_type(response) == kind, response.text


# -- the envelope: media type, size, JSON shape (§6.2) ------------------------


async def test_wrong_content_type_is_415_malformed(env: CAEnv) -> None:
    """§6.2: Content-Type must be application/jose+json, else 415."""
    client = await env.client()
    response = await client.post(client.kid or "", None, content_type="application/json")
    assert_problem(response, 415, "malformed")


async def test_missing_content_type_is_415(env: CAEnv) -> None:
    response = await env.http.post("/acme/new-order", content=b"{}")
    assert_problem(response, 415, "malformed")


async def test_oversized_body_is_413(env: CAEnv) -> None:
    client = await env.client()
    body = client.body(client.dir["newOrder"], {"pad": "x" * 70_000}, nonce=await fresh_nonce(env))
    response = await post_raw(env, client.dir["newOrder"], body)
    assert_problem(response, 413, "malformed")


async def test_oversized_chunked_body_is_413_without_reading_it_all(env: CAEnv) -> None:
    """No Content-Length: the WFE must stop reading at its limit rather than
    buffer whatever a hostile client streams (bounded here at 200 chunks)."""
    chunk = b"x" * 65_536
    consumed = 0

    async def endless() -> Any:
        nonlocal consumed
        for _ in range(200):
            consumed += 1
            yield chunk

    response = await env.http.post(
        "/acme/new-order", content=endless(), headers={"Content-Type": "application/jose+json"}
    )
    assert_problem(response, 413, "malformed")
    assert consumed <= 3


async def test_body_not_json_is_malformed(env: CAEnv) -> None:
    response = await post_raw(env, f"{BASE_URL}/acme/new-order", b"not json at all")
    assert_problem(response, 400, "malformed")


async def test_compact_serialization_is_malformed(env: CAEnv) -> None:
    """§6.2: only the flattened JSON serialization is accepted."""
    client = await env.client()
    flat = json.loads(client.body(client.dir["newOrder"], {}, nonce=await fresh_nonce(env)))
    compact = f"{flat['protected']}.{flat['payload']}.{flat['signature']}"
    response = await post_raw(env, client.dir["newOrder"], compact.encode())
    assert_problem(response, 400, "malformed")


async def test_general_serialization_is_malformed(env: CAEnv) -> None:
    """§6.2: no general serialization (several signatures)."""
    client = await env.client()
    flat = json.loads(client.body(client.dir["newOrder"], {}, nonce=await fresh_nonce(env)))
    general = {
        "payload": flat["payload"],
        "signatures": [{"protected": flat["protected"], "signature": flat["signature"]}],
    }
    response = await post_raw(env, client.dir["newOrder"], json.dumps(general).encode())
    assert_problem(response, 400, "malformed")


async def test_unprotected_header_member_is_malformed(env: CAEnv) -> None:
    """§6.2: the JWS MUST NOT have an unprotected header."""
    client = await env.client()
    flat = json.loads(client.body(client.dir["newOrder"], {}, nonce=await fresh_nonce(env)))
    flat["header"] = {"kid": client.kid}
    response = await post_raw(env, client.dir["newOrder"], json.dumps(flat).encode())
    assert_problem(response, 400, "malformed")


# -- algorithms (§6.2) -----------------------------------------------------------


async def test_alg_none_is_bad_signature_algorithm_with_list(env: CAEnv) -> None:
    """§6.2: MUST NOT accept "none"; §6.7: the problem lists the algorithms
    the server does accept."""
    client = await env.client()
    protected = {
        "alg": "none",
        "kid": client.kid,
        "nonce": await fresh_nonce(env),
        "url": client.kid,
    }
    response = await post_raw(env, client.kid or "", raw_jws(protected, None, b""))
    assert_problem(response, 400, "badSignatureAlgorithm")
    assert set(response.json()["algorithms"]) == set(ALLOWED_ALGS)


async def test_hs256_is_bad_signature_algorithm_with_list(env: CAEnv) -> None:
    """§6.2: MUST NOT accept MAC algorithms for request signatures."""
    client = await env.client()
    protected = {
        "alg": "HS256",
        "kid": client.kid,
        "nonce": await fresh_nonce(env),
        "url": client.kid,
    }
    unsigned = raw_jws(protected, None, b"")
    doc = json.loads(unsigned)
    mac_key = json.dumps(jwk_from_public_key(client.key.public_key())).encode()
    signing_input = f"{doc['protected']}.{doc['payload']}".encode()
    mac = hmac.new(mac_key, signing_input, hashlib.sha256).digest()
    response = await post_raw(env, client.kid or "", raw_jws(protected, None, mac))
    assert_problem(response, 400, "badSignatureAlgorithm")
    assert "ES256" in response.json()["algorithms"]
    assert "HS256" not in response.json()["algorithms"]


async def test_alg_not_matching_key_is_bad_signature_algorithm(env: CAEnv) -> None:
    """An ES384 header over a P-256 key: RFC 7518 §3.4 ties alg to curve."""
    client = await env.client(register=False)
    url = client.dir["newAccount"]
    protected = {
        "alg": "ES384",
        "jwk": jwk_from_public_key(client.key.public_key()),
        "nonce": await fresh_nonce(env),
        "url": url,
    }
    response = await post_raw(
        env, url, raw_jws(protected, {"termsOfServiceAgreed": True}, b"\0" * 96)
    )
    assert_problem(response, 400, "badSignatureAlgorithm")
    assert response.json()["algorithms"]


async def test_bad_signature_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    doc = json.loads(client.body(client.kid or "", None, nonce=await fresh_nonce(env)))
    sig = bytearray(doc["signature"].encode())
    sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
    doc["signature"] = sig.decode()
    response = await post_raw(env, client.kid or "", json.dumps(doc).encode())
    assert_problem(response, 400, "malformed")


async def test_signature_by_another_key_is_malformed(env: CAEnv) -> None:
    """A kid naming account A but signed by some other key must not pass."""
    client = await env.client()
    intruder = ec.generate_private_key(ec.SECP256R1())
    response = await client.post(client.kid or "", None, key=intruder)
    assert_problem(response, 400, "malformed")


# -- url (§6.4) -------------------------------------------------------------------


async def test_url_not_matching_request_is_unauthorized(env: CAEnv) -> None:
    """§6.4: the server MUST reject a request whose "url" differs from the
    URL it was sent to (type unauthorized)."""
    client = await env.client()
    response = await client.post(client.kid or "", None, signed_url=client.dir["newOrder"])
    assert_problem(response, 403, "unauthorized")


async def test_url_of_another_host_is_unauthorized(env: CAEnv) -> None:
    client = await env.client()
    other = (client.kid or "").replace("https://acme.test", "https://evil.test")
    response = await client.post(client.kid or "", None, signed_url=other)
    assert_problem(response, 403, "unauthorized")


async def test_url_missing_is_malformed(env: CAEnv) -> None:
    """§6.4: "url" MUST be in the protected header."""
    client = await env.client()
    protected = {"kid": client.kid, "nonce": await fresh_nonce(env)}
    body = json.dumps(sign_jws(client.key, b"", protected)).encode()
    response = await post_raw(env, client.kid or "", body)
    assert_problem(response, 400, "malformed")


# -- kid versus jwk (§6.2) ----------------------------------------------------------


async def test_kid_on_new_account_is_malformed(env: CAEnv) -> None:
    """§6.2: newAccount (and revokeCert by certificate key) use "jwk"."""
    client = await env.client()
    response = await client.post(
        client.dir["newAccount"], {"termsOfServiceAgreed": True}, kid=client.kid
    )
    assert_problem(response, 400, "malformed")


@pytest.mark.parametrize("resource", ["newOrder", "account", "keyChange"])
async def test_jwk_on_kid_endpoint_is_malformed(env: CAEnv, resource: str) -> None:
    """§6.2: every request other than newAccount/revokeCert carries "kid"."""
    client = await env.client()
    url = client.kid if resource == "account" else client.dir[resource]
    response = await client.post(url or "", {}, use_jwk=True)
    assert_problem(response, 400, "malformed")


async def test_jwk_on_order_and_authz_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    created = await client.new_order(["jwk.example.com"])
    order = created.json()
    for url in (created.headers["Location"], order["authorizations"][0], order["finalize"]):
        response = await client.post(url, None, use_jwk=True)
        assert_problem(response, 400, "malformed")


async def test_both_kid_and_jwk_is_malformed(env: CAEnv) -> None:
    """§6.2: "jwk" and "kid" are mutually exclusive."""
    client = await env.client()
    jwk = jwk_from_public_key(client.key.public_key())
    response = await client.post(client.kid or "", None, extra_protected={"jwk": jwk})
    assert_problem(response, 400, "malformed")


async def test_neither_kid_nor_jwk_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    protected = {"nonce": await fresh_nonce(env), "url": client.kid}
    body = json.dumps(sign_jws(client.key, b"", protected)).encode()
    response = await post_raw(env, client.kid or "", body)
    assert_problem(response, 400, "malformed")


async def test_kid_of_unknown_account_is_account_does_not_exist(env: CAEnv) -> None:
    client = await env.client()
    response = await client.post(
        client.dir["newOrder"],
        {"identifiers": [{"type": "dns", "value": "x.example.com"}]},
        kid=f"{BASE_URL}/acme/acct/doesnotexist",
    )
    assert_problem(response, 400, "accountDoesNotExist")


async def test_kid_url_of_another_server_is_account_does_not_exist(env: CAEnv) -> None:
    client = await env.client()
    foreign = (client.kid or "").replace("https://acme.test", "https://other-ca.test")
    response = await client.post(
        client.dir["newOrder"],
        {"identifiers": [{"type": "dns", "value": "x.example.com"}]},
        kid=foreign,
    )
    assert_problem(response, 400, "accountDoesNotExist")


# -- HTTP method and path -----------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/acme/new-account", "/acme/new-order", "/acme/revoke-cert", "/acme/key-change"]
)
async def test_plain_get_on_post_only_resource_is_405_allow_post(env: CAEnv, path: str) -> None:
    """§6.3: resources other than the directory and newNonce take POST only."""
    response = await env.http.get(path)
    assert_problem(response, 405, "malformed")
    assert response.headers["Allow"] == "POST"


async def test_plain_get_on_account_is_405(env: CAEnv) -> None:
    client = await env.client()
    response = await env.http.get(client.kid or "")
    assert_problem(response, 405, "malformed")
    assert response.headers["Allow"] == "POST"


async def test_unknown_path_is_404_problem(env: CAEnv) -> None:
    response = await env.http.post("/acme/no-such-thing", content=b"{}")
    assert_problem(response, 404, "malformed")
    get = await env.http.get("/nothing-here")
    assert_problem(get, 404, "malformed")


# -- POST-as-GET only resources (§6.3, §7.1.2.1, §7.4.2) -----------------------------


async def test_non_empty_payload_to_order_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    created = await client.new_order(["pag.example.com"])
    for payload in ({}, {"status": "valid"}):
        response = await client.post(created.headers["Location"], payload)
        assert_problem(response, 400, "malformed")


async def test_non_empty_payload_to_orders_list_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    orders_url = (await client.get(client.kid or "")).json()["orders"]
    response = await client.post(orders_url, {})
    assert_problem(response, 400, "malformed")


async def test_non_empty_payload_to_certificate_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    order = await issue(env, client, ["pagcert.example.com"])
    response = await client.post(order["certificate"], {})
    assert_problem(response, 400, "malformed")


@pytest.mark.parametrize("resource", ["newAccount", "newOrder", "revokeCert", "keyChange"])
async def test_post_as_get_to_a_resource_needing_a_payload_is_malformed(
    env: CAEnv, resource: str
) -> None:
    """§6.3: an empty payload where a JSON object is required is malformed."""
    client = await env.client()
    response = await client.post(client.dir[resource], None, use_jwk=resource == "newAccount")
    assert_problem(response, 400, "malformed")


async def test_nonce_of_rejected_request_carries_on(env: CAEnv) -> None:
    """After any error the client can go on with the returned nonce."""
    client = await env.client()
    bad = await client.post(client.kid or "", None, content_type="text/plain")
    assert bad.status_code == 415
    ok = await client.get(client.kid or "")
    assert ok.status_code == 200


async def test_new_client_key_types_are_accepted(env: CAEnv) -> None:
    """§6.2: RS256 and ES256 at least; this CA also offers EdDSA and ES384."""
    from certmint.protocol.jwk import generate_private_key

    for alg in ("RS256", "ES384", "EdDSA"):
        client = RawAcmeClient(env.http, f"{BASE_URL}/directory", key=generate_private_key(alg))
        await client.load_directory()
        response = await client.new_account()
        assert response.status_code == 201, (alg, response.text)


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/directory", {"GET", "POST"}), ("/acme/new-nonce", {"GET", "HEAD", "POST"})],
)
async def test_405_names_the_methods_the_resource_does_allow(
    env: CAEnv, path: str, allowed: set[str]
) -> None:
    """RFC 9110 §15.5.6: a 405 MUST carry Allow with the resource's methods;
    the directory and newNonce take GET, so "Allow: POST" would mislead."""
    response = await env.http.put(path, content=b"")
    assert_problem(response, 405, "malformed")
    assert {m.strip() for m in response.headers["Allow"].split(",")} >= allowed
    assert response.headers["Replay-Nonce"]
