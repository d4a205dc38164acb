"""Authorizations and challenges (RFC 8555 §7.1.4, §7.5, §7.5.1, §7.5.2, §8)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from certmint.ca.config import ChaosConfig
from certmint.protocol.messages import parse_rfc3339
from certmint.protocol.problems import Problem
from certmint.testing.acme_client import RawAcmeClient

from .conftest import BASE_URL, CAEnv, problem_type
from .flows import validate_order

pytestmark = pytest.mark.anyio


def assert_problem(response: Any, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert problem_type(response) == kind, response.text


async def pending_authz(
    client: RawAcmeClient, name: str = "authz.example.com"
) -> tuple[str, str, dict[str, Any]]:
    """A new order for ``name``: (order URL, authz URL, authz JSON)."""
    created = await client.new_order([name])
    assert created.status_code == 201, created.text
    authz_url = created.json()["authorizations"][0]
    authz = (await client.get(authz_url)).json()
    return created.headers["Location"], authz_url, authz


def http01(authz: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in authz["challenges"] if c["type"] == "http-01")


# -- the authorization resource (§7.1.4) ---------------------------------------


async def test_authz_post_as_get_shows_identifier_status_and_challenges(env: CAEnv) -> None:
    client = await env.client()
    _, authz_url, _ = await pending_authz(client)
    response = await client.get(authz_url)
    assert response.status_code == 200
    assert int(response.headers["Retry-After"]) >= 1
    authz = response.json()
    assert authz["identifier"] == {"type": "dns", "value": "authz.example.com"}
    assert authz["status"] == "pending"
    assert parse_rfc3339(authz["expires"])
    assert "wildcard" not in authz
    types = {c["type"] for c in authz["challenges"]}
    assert types == {"http-01", "dns-01", "tls-alpn-01"}
    tokens = set()
    for challenge in authz["challenges"]:
        assert challenge["url"].startswith(f"{BASE_URL}/acme/chall/")
        assert challenge["status"] == "pending"
        # §8.3: a token has at least 128 bits of entropy, base64url.
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", challenge["token"])
        tokens.add(challenge["token"])
    assert len(tokens) == len(authz["challenges"])


async def test_another_accounts_authz_is_unauthorized(env: CAEnv) -> None:
    alice = await env.client()
    bob = await env.client()
    _, authz_url, authz = await pending_authz(alice)
    assert_problem(await bob.get(authz_url), 403, "unauthorized")
    assert_problem(await bob.post(authz_url, {"status": "deactivated"}), 403, "unauthorized")
    assert_problem(await bob.post(http01(authz)["url"], {}), 403, "unauthorized")
    assert_problem(await bob.get(http01(authz)["url"]), 403, "unauthorized")
    assert (await alice.get(authz_url)).json()["status"] == "pending"
    assert env.va.requests == []


async def test_unknown_authz_and_challenge_are_404(env: CAEnv) -> None:
    client = await env.client()
    _, authz_url, _authz = await pending_authz(client)
    assert_problem(await client.get(f"{BASE_URL}/acme/authz/nope"), 404, "malformed")
    authz_id = authz_url.rsplit("/", 1)[1]
    missing = f"{BASE_URL}/acme/chall/{authz_id}/nope"
    assert_problem(await client.get(missing), 404, "malformed")
    assert_problem(await client.post(missing, {}), 404, "malformed")


# -- deactivation (§7.5.2) --------------------------------------------------------


async def test_deactivation_makes_authz_and_order_invalid(env: CAEnv) -> None:
    client = await env.client()
    order_url, authz_url, _ = await pending_authz(client)
    response = await client.post(authz_url, {"status": "deactivated"})
    assert response.status_code == 200
    assert response.json()["status"] == "deactivated"
    assert (await client.get(authz_url)).json()["status"] == "deactivated"
    assert (await client.get(order_url)).json()["status"] == "invalid"


async def test_deactivating_a_valid_authz_stops_its_reuse(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await validate_order(env, client, ["gone.example.com", "kept.example.com"])
    authz_url = order["authorizations"][0]
    name = (await client.get(authz_url)).json()["identifier"]["value"]
    assert (await client.post(authz_url, {"status": "deactivated"})).status_code == 200
    again = await client.new_order([name])
    assert again.json()["status"] == "pending"
    assert authz_url not in again.json()["authorizations"]


@pytest.mark.parametrize(
    "payload",
    [{}, {"status": "valid"}, {"status": "invalid"}, {"status": "deactivated", "x": 1}, []],
)
async def test_other_authz_updates_are_malformed(env: CAEnv, payload: Any) -> None:
    client = await env.client()
    _, authz_url, _ = await pending_authz(client)
    assert_problem(await client.post(authz_url, payload), 400, "malformed")
    assert (await client.get(authz_url)).json()["status"] == "pending"


async def test_deactivating_twice_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    _, authz_url, _ = await pending_authz(client)
    assert (await client.post(authz_url, {"status": "deactivated"})).status_code == 200
    assert_problem(await client.post(authz_url, {"status": "deactivated"}), 400, "malformed")


# -- responding to a challenge (§7.5.1) ------------------------------------------------


async def test_challenge_post_starts_validation_with_link_up(env: CAEnv) -> None:
    client = await env.client()
    order_url, authz_url, authz = await pending_authz(client)
    challenge = http01(authz)
    response = await client.post(challenge["url"], {})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] in ("processing", "valid")
    assert body["url"] == challenge["url"]
    assert f'<{authz_url}>;rel="up"' in response.headers["Link"]
    await env.drain()
    done = (await client.get(challenge["url"])).json()
    assert done["status"] == "valid"
    assert parse_rfc3339(done["validated"]) == env.clock.now()
    assert done["validationRecord"][0]["hostname"] == "authz.example.com"
    assert (await client.get(authz_url)).json()["status"] == "valid"
    assert (await client.get(order_url)).json()["status"] == "ready"
    # The VA was asked with this account's key authorization (§8.1).
    assert env.va.requests[0].key_authorization == client.key_authorization(challenge["token"])


@pytest.mark.parametrize("payload", [{"keyAuthorization": "x"}, [], {"type": "http-01"}, "x"])
async def test_challenge_payload_other_than_empty_object_is_malformed(
    env: CAEnv, payload: Any
) -> None:
    client = await env.client()
    _, _, authz = await pending_authz(client)
    response = await client.post(http01(authz)["url"], payload)
    assert_problem(response, 400, "malformed")
    assert env.va.requests == []


async def test_challenge_post_as_get_returns_it(env: CAEnv) -> None:
    client = await env.client()
    _, authz_url, authz = await pending_authz(client)
    challenge = http01(authz)
    response = await client.get(challenge["url"])
    assert response.status_code == 200
    assert response.json() == challenge
    assert f'<{authz_url}>;rel="up"' in response.headers["Link"]
    assert env.va.requests == []


async def test_repeated_challenge_post_is_idempotent(env: CAEnv) -> None:
    client = await env.client()
    _, _, authz = await pending_authz(client)
    url = http01(authz)["url"]
    first = await client.post(url, {})
    second = await client.post(url, {})
    assert first.status_code == second.status_code == 200
    await env.drain()
    third = await client.post(url, {})
    assert third.status_code == 200
    assert third.json()["status"] == "valid"
    assert len(env.va.requests) == 1


async def test_other_challenge_after_authz_is_valid_starts_nothing(env: CAEnv) -> None:
    client = await env.client()
    _, authz_url, authz = await pending_authz(client)
    await client.post(http01(authz)["url"], {})
    await env.drain()
    dns = next(c for c in authz["challenges"] if c["type"] == "dns-01")
    response = await client.post(dns["url"], {})
    assert response.status_code == 200
    await env.drain()
    assert len(env.va.requests) == 1
    assert (await client.get(authz_url)).json()["status"] == "valid"


async def test_validation_failure_invalidates_challenge_authz_and_order(env: CAEnv) -> None:
    """§7.5.1 / §7.1.6: a failed challenge makes the authorization invalid,
    and its error names the identifier (§6.7.1)."""
    env.va.outcome = False
    env.va.problem = Problem("incorrectResponse", "wrong key authorization", 403)
    client = await env.client()
    order_url, authz_url, authz = await pending_authz(client, "fail.example.com")
    challenge = http01(authz)
    assert (await client.post(challenge["url"], {})).status_code == 200
    await env.drain()
    failed = (await client.get(challenge["url"])).json()
    assert failed["status"] == "invalid"
    error = failed["error"]
    assert error["type"] == "urn:ietf:params:acme:error:incorrectResponse"
    assert error["detail"] == "wrong key authorization"
    assert error["identifier"] == {"type": "dns", "value": "fail.example.com"}
    assert (await client.get(authz_url)).json()["status"] == "invalid"
    assert (await client.get(order_url)).json()["status"] == "invalid"
    # A failed authorization is final: posting again starts nothing.
    again = await client.post(challenge["url"], {})
    assert again.json()["status"] == "invalid"
    await env.drain()
    assert len(env.va.requests) == 1


async def test_validation_failure_default_problem_is_unauthorized(env: CAEnv) -> None:
    env.va.outcome = False
    client = await env.client()
    _, _, authz = await pending_authz(client, "fail2.example.com")
    await client.post(http01(authz)["url"], {})
    await env.drain()
    error = (await client.get(http01(authz)["url"])).json()["error"]
    assert error["type"] == "urn:ietf:params:acme:error:unauthorized"
    assert error["identifier"]["value"] == "fail2.example.com"


async def test_chaos_validation_delay_completes_with_the_fake_clock(env_factory: Any) -> None:
    # No inline wait: the response must show the validation still running.
    env: CAEnv = await env_factory(
        chaos=ChaosConfig(validation_delay_seconds=5, seed=1), inline_validation_wait_seconds=0
    )
    client = await env.client()
    _, authz_url, authz = await pending_authz(client, "slow.example.com")
    before = env.clock.now()
    response = await client.post(http01(authz)["url"], {})
    assert response.json()["status"] == "processing"
    await env.drain()
    assert (await client.get(authz_url)).json()["status"] == "valid"
    assert (env.clock.now() - before).total_seconds() >= 5


async def test_challenge_on_expired_authz_starts_nothing(env: CAEnv) -> None:
    client = await env.client()
    _, _authz_url, authz = await pending_authz(client, "stale.example.com")
    env.clock.set(parse_rfc3339(authz["expires"]))
    response = await client.post(http01(authz)["url"], {})
    assert response.status_code >= 400
    await env.drain()
    assert env.va.requests == []


async def test_quick_validation_is_answered_inline(env: CAEnv) -> None:
    """§7.5.1 lets the challenge response show the outcome: a validation that
    finishes within inline_validation_wait_seconds is reported at once."""
    client = await env.client()
    _, authz_url, authz = await pending_authz(client, "quick.example.com")
    response = await client.post(http01(authz)["url"], {})
    assert response.json()["status"] == "valid"
    assert "Retry-After" not in response.headers
    assert (await client.get(authz_url)).json()["status"] == "valid"
