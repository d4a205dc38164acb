"""dns-account-01 and dns-persist-01 through the real WFE/RA/PA in-process:
which authorizations offer them, the challenge objects, and what the RA asks
the VA (a scripted one; the VA's checks have their own real-socket tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from certmint.ca.app import build_ca_server
from certmint.ca.config import CHALLENGE_TYPES, CAConfig
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.ca.storage import open_storage
from certmint.runtime import SystemEntropy
from certmint.testing.clock import FakeClock

from .conftest import BASE_URL, START, TEST_POLICY, CAEnv, ScriptedVA

pytestmark = pytest.mark.anyio
DNS_BASED = ["dns-01", "dns-account-01", "dns-persist-01"]


@pytest.fixture
async def five(tmp_path: Path, hierarchy: Hierarchy) -> AsyncIterator[CAEnv]:
    """A CA whose operator enabled all five challenge types."""
    va = ScriptedVA(supported_challenge_types=CHALLENGE_TYPES)
    clock = FakeClock(START)
    config = CAConfig(
        base_url=BASE_URL,
        management_base_url="http://mgmt.test",
        caa_identities=("ca.example", "Other-Name.Example."),
        policy=replace(TEST_POLICY, enabled_challenges=CHALLENGE_TYPES),
    )
    sa = open_storage(f"sqlite:///{tmp_path / 'five.db'}")
    server = build_ca_server(
        config=config,
        sa=sa,
        va=va,  # type: ignore[arg-type]
        hierarchy=hierarchy,
        clock=clock,
        entropy=SystemEntropy(),
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=server.acme_app), base_url=BASE_URL)
    env = CAEnv(server=server, va=va, clock=clock, http=http)
    try:
        yield env
    finally:
        await env.drain()
        await http.aclose()
        sa.close()


async def authz_for(env: CAEnv, name: str, id_type: str = "dns") -> tuple[Any, dict[str, Any]]:
    client = await env.client()
    payload: dict[str, Any] = {"identifiers": [{"type": id_type, "value": name}]}
    if id_type == "ip":
        payload["profile"] = "shortlived"  # the only profile allowing ip identifiers
    response = await client.post(client.dir["newOrder"], payload)
    assert response.status_code == 201, response.text
    authz_url = response.json()["authorizations"][0]
    return client, (await client.get(authz_url)).json() | {"url": authz_url}


def by_type(authz: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in authz["challenges"]}


async def test_a_plain_name_offers_all_five(five: CAEnv) -> None:
    _, authz = await authz_for(five, "www.example.test")
    challenges = by_type(authz)
    assert sorted(challenges) == sorted(CHALLENGE_TYPES)
    persist = challenges.pop("dns-persist-01")
    # draft-ietf-acme-dns-persist-00 §3.1: no token; issuer names normalised.
    assert "token" not in persist
    assert persist["issuer-domain-names"] == ["ca.example", "other-name.example"]
    for challenge in challenges.values():
        assert "issuer-domain-names" not in challenge
        assert len(challenge["token"]) >= 22


async def test_a_wildcard_offers_the_dns_based_three(five: CAEnv) -> None:
    _, authz = await authz_for(five, "*.example.test")
    assert authz["wildcard"] is True
    assert sorted(by_type(authz)) == DNS_BASED


async def test_an_ip_offers_none_of_them(five: CAEnv) -> None:
    _, authz = await authz_for(five, "8.8.8.8", "ip")
    assert sorted(by_type(authz)) == ["http-01", "tls-alpn-01"]


@pytest.mark.parametrize("kind", ["dns-account-01", "dns-persist-01"])
async def test_the_va_is_asked_with_the_account_and_wildcard(five: CAEnv, kind: str) -> None:
    client, authz = await authz_for(five, "*.example.test")
    challenge = by_type(authz)[kind]
    answer = await client.post(challenge["url"], {})
    assert answer.status_code == 200, answer.text
    assert ("token" in answer.json()) is (kind != "dns-persist-01")
    await five.drain()
    (request,) = five.va.requests
    assert request.challenge_type == kind
    assert request.identifier_value == "example.test"
    assert request.wildcard is True
    assert request.account_uri == client.kid  # the binding both methods rely on
    assert (await client.get(authz["url"])).json()["status"] == "valid"


async def test_the_default_ca_offers_neither(env: CAEnv) -> None:
    _, plain = await authz_for(env, "www.example.test")
    _, wildcard = await authz_for(env, "*.example.test")
    assert sorted(by_type(plain)) == ["dns-01", "http-01", "tls-alpn-01"]
    assert sorted(by_type(wildcard)) == ["dns-01"]
