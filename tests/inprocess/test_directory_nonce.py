"""Directory (RFC 8555 §7.1.1), newNonce (§7.2) and replay protection (§6.5)."""

from __future__ import annotations

from typing import Any

import pytest

from certmint.ca.config import ChaosConfig

from .conftest import BASE_URL, CAEnv, problem_type

pytestmark = pytest.mark.anyio

INDEX_LINK = f'<{BASE_URL}/directory>;rel="index"'


# -- directory (§7.1.1) ------------------------------------------------------


async def test_directory_get_lists_every_resource(env: CAEnv) -> None:
    response = await env.http.get("/directory")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    for name in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"):
        assert body[name].startswith(f"{BASE_URL}/"), name


async def test_directory_post_as_get_is_served_too(env: CAEnv) -> None:
    """§7.1.1 only asks for GET; answering POST does no harm."""
    response = await env.http.post("/directory")
    assert response.status_code == 200
    assert "newOrder" in response.json()


async def test_directory_meta_defaults(env: CAEnv) -> None:
    """§7.1.1 meta: website, caaIdentities, externalAccountRequired; profiles
    (draft-ietf-acme-profiles) as name → description; no termsOfService
    unless configured."""
    meta = (await env.http.get("/directory")).json()["meta"]
    assert meta["website"] == "https://github.com/certmint/certmint"
    assert meta["caaIdentities"] == ["certmint.invalid"]
    assert meta["externalAccountRequired"] is False
    assert isinstance(meta["profiles"]["classic"], str)
    assert "termsOfService" not in meta


async def test_directory_meta_reflects_config(env_factory: Any) -> None:
    env: CAEnv = await env_factory(
        terms_of_service="https://acme.test/terms",
        eab_required=True,
        caa_identities=("ca.example.com",),
        website=None,
    )
    meta = (await env.http.get("/directory")).json()["meta"]
    assert meta["termsOfService"] == "https://acme.test/terms"
    assert meta["externalAccountRequired"] is True
    assert meta["caaIdentities"] == ["ca.example.com"]
    assert "website" not in meta


# -- newNonce (§7.2) -----------------------------------------------------------


async def test_new_nonce_head_is_200_with_nonce_and_no_store(env: CAEnv) -> None:
    response = await env.http.head("/acme/new-nonce")
    assert response.status_code == 200
    assert response.headers["Replay-Nonce"]
    assert response.headers["Cache-Control"] == "no-store"
    assert INDEX_LINK in response.headers["Link"]


async def test_new_nonce_get_is_204_with_nonce_and_no_store(env: CAEnv) -> None:
    response = await env.http.get("/acme/new-nonce")
    assert response.status_code == 204
    assert response.headers["Replay-Nonce"]
    assert response.headers["Cache-Control"] == "no-store"


async def test_each_nonce_is_different(env: CAEnv) -> None:
    nonces = {(await env.http.head("/acme/new-nonce")).headers["Replay-Nonce"] for _ in range(5)}
    assert len(nonces) == 5


# -- every response carries a nonce (§6.5) and the index link (§7.1) ---------


async def test_success_and_error_responses_carry_replay_nonce(env: CAEnv) -> None:
    """§6.5: the server MUST include Replay-Nonce in every successful
    response to a POST and SHOULD in every error response."""
    client = await env.client()
    ok = await client.get(client.kid or "")
    assert ok.status_code == 200
    assert ok.headers["Replay-Nonce"]
    bad = await client.post(client.dir["newOrder"], {"identifiers": []})
    assert bad.status_code == 400
    assert bad.headers["Replay-Nonce"]
    not_found = await env.http.get("/acme/nowhere")
    assert not_found.headers["Replay-Nonce"]
    wrong_method = await env.http.get("/acme/new-order")
    assert wrong_method.headers["Replay-Nonce"]
    directory = await env.http.get("/directory")
    assert directory.headers["Replay-Nonce"]


async def test_resource_responses_link_to_the_directory(env: CAEnv) -> None:
    """§7.1: Link: <directory>;rel="index" on resource responses."""
    client = await env.client()
    account = await client.get(client.kid or "")
    assert INDEX_LINK in account.headers["Link"]
    order = await client.new_order(["link.example.com"])
    assert INDEX_LINK in order.headers["Link"]
    error = await client.post(client.dir["newOrder"], {"identifiers": []})
    assert INDEX_LINK in error.headers["Link"]


# -- replay protection (§6.5, §6.5.2) ------------------------------------------


async def test_nonce_is_single_use(env: CAEnv) -> None:
    client = await env.client()
    nonce = (await env.http.head("/acme/new-nonce")).headers["Replay-Nonce"]
    first = await client.post(client.kid or "", None, nonce=nonce)
    assert first.status_code == 200
    replay = await client.post(client.kid or "", None, nonce=nonce)
    assert replay.status_code == 400
    assert problem_type(replay) == "badNonce"


async def test_replayed_nonce_from_a_failed_request_is_still_spent(env: CAEnv) -> None:
    """A nonce is consumed by the request that presented it, even if that
    request fails later (here: bad payload)."""
    client = await env.client()
    nonce = (await env.http.head("/acme/new-nonce")).headers["Replay-Nonce"]
    first = await client.post(client.dir["newOrder"], {"identifiers": []}, nonce=nonce)
    assert problem_type(first) == "malformed"
    replay = await client.post(client.kid or "", None, nonce=nonce)
    assert problem_type(replay) == "badNonce"


async def test_missing_nonce_is_bad_nonce(env: CAEnv) -> None:
    client = await env.client()
    response = await client.post(client.kid or "", None, nonce=None)
    assert response.status_code == 400
    assert problem_type(response) == "badNonce"


async def test_unknown_nonce_is_bad_nonce(env: CAEnv) -> None:
    client = await env.client()
    response = await client.post(client.kid or "", None, nonce="bm90LWEtbm9uY2U")
    assert response.status_code == 400
    assert problem_type(response) == "badNonce"


async def test_bad_nonce_response_carries_a_fresh_nonce_that_works(env: CAEnv) -> None:
    """§6.5: a client retries a badNonce with the nonce of the error response."""
    client = await env.client()
    bad = await client.post(client.kid or "", None, nonce="bm9wZQ")
    assert problem_type(bad) == "badNonce"
    retry = await client.post(client.kid or "", None, nonce=bad.headers["Replay-Nonce"])
    assert retry.status_code == 200


async def test_chaos_rejects_fresh_nonces_when_at_100_percent(env_factory: Any) -> None:
    env: CAEnv = await env_factory(chaos=ChaosConfig(nonce_reject_percent=100, seed=1))
    client = await env.client(register=False)
    response = await client.new_account()
    assert response.status_code == 400
    assert problem_type(response) == "badNonce"


async def test_chaos_at_0_percent_rejects_nothing(env_factory: Any) -> None:
    env: CAEnv = await env_factory(chaos=ChaosConfig(nonce_reject_percent=0, seed=1))
    client = await env.client(register=False)
    for _ in range(5):
        response = await client.new_account()
        assert response.status_code in (200, 201), response.text
