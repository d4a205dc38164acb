"""The real CA (WFE, RA, PA, CA, SA on SQLite) in-process behind httpx's ASGI
transport, with a fake clock and a scripted VA (the VA's own tests use real
sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from certmint.ca.app import CAServer, build_ca_server
from certmint.ca.config import CAConfig, PolicyConfig
from certmint.ca.issuance.hierarchy import Hierarchy, load_or_create_dev_hierarchy
from certmint.ca.storage import open_storage
from certmint.ca.va.model import ValidationRecord, ValidationRequest, ValidationResult
from certmint.protocol.problems import Problem
from certmint.runtime import SystemEntropy
from certmint.testing.acme_client import RawAcmeClient
from certmint.testing.clock import FakeClock

BASE_URL = "https://acme.test"
START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# The PA policy every in-process CA starts from; tests that change the policy
# should ``dataclasses.replace`` this, not build a fresh PolicyConfig.
TEST_POLICY = PolicyConfig(allow_unlisted_tlds=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class ScriptedVA:
    """Answers validations as the test says; records what it was asked."""

    outcome: bool = True
    problem: Problem | None = None
    requests: list[ValidationRequest] = field(default_factory=list)
    supported_challenge_types: tuple[str, ...] = ("http-01", "dns-01", "tls-alpn-01")
    caa_problem: Problem | None = None
    caa_checks: list[tuple[str, str, str | None, bool]] = field(default_factory=list)

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        self.requests.append(request)
        record = ValidationRecord(
            url=None,
            hostname=request.identifier_value,
            port=80,
            addresses_resolved=("127.0.0.1",),
            address_used="127.0.0.1",
        )
        if self.outcome:
            return ValidationResult(True, None, (record,))
        problem = self.problem or Problem("unauthorized", "key authorization mismatch", 403)
        return ValidationResult(False, problem, (record,))

    async def check_caa(
        self,
        identifier_type: str,
        identifier_value: str,
        *,
        challenge_type: str,
        account_uri: str | None,
        wildcard: bool,
    ) -> Problem | None:
        """The RA's CAA re-check at finalize: answers ``caa_problem``."""
        self.caa_checks.append((identifier_value, challenge_type, account_uri, wildcard))
        return self.caa_problem

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="session")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return load_or_create_dev_hierarchy(
        tmp_path_factory.mktemp("hierarchy"), FakeClock(START), SystemEntropy()
    )


@dataclass
class CAEnv:
    server: CAServer
    va: ScriptedVA
    clock: FakeClock
    http: httpx.AsyncClient

    async def client(self, *, register: bool = True, **account: Any) -> RawAcmeClient:
        client = RawAcmeClient(self.http, f"{BASE_URL}/directory")
        await client.load_directory()
        if register:
            response = await client.new_account(**account)
            assert response.status_code == 201, response.text
        return client

    async def drain(self) -> None:
        await self.server.ra.drain()


def make_env_factory(tmp_path: Path, hierarchy: Hierarchy):  # type: ignore[no-untyped-def]
    async def factory(**config_changes: Any) -> CAEnv:
        clock = FakeClock(START)
        va = ScriptedVA()
        config = replace(
            CAConfig(
                base_url=BASE_URL,
                management_base_url="http://mgmt.test",
                # Most test names are under .example (RFC 2606), which the
                # Public Suffix List does not list; see TEST_POLICY.
                policy=TEST_POLICY,
            ),
            **config_changes,
        )
        sa = open_storage(f"sqlite:///{tmp_path / 'ca.db'}")
        server = build_ca_server(
            config=config, sa=sa, va=va, hierarchy=hierarchy, clock=clock, entropy=SystemEntropy()  # type: ignore[arg-type]
        )
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=server.acme_app), base_url=BASE_URL
        )
        return CAEnv(server=server, va=va, clock=clock, http=http)

    return factory


@pytest.fixture
async def env_factory(tmp_path: Path, hierarchy: Hierarchy) -> AsyncIterator[Any]:
    made: list[CAEnv] = []
    base = make_env_factory(tmp_path, hierarchy)

    async def factory(**changes: Any) -> CAEnv:
        env = await base(**changes)
        made.append(env)
        return env

    yield factory
    for env in made:
        await env.drain()
        await env.http.aclose()
        env.server.sa.close()


@pytest.fixture
async def env(env_factory: Any) -> CAEnv:
    result: CAEnv = await env_factory()
    return result


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).removeprefix("urn:ietf:params:acme:error:")


async def issue(env: CAEnv, client: RawAcmeClient, names: list[str]) -> dict[str, Any]:
    """Drive a whole order to valid; returns the final order JSON plus its URL."""
    from certmint.testing.acme_client import make_csr

    response = await client.new_order(names)
    assert response.status_code == 201, response.text
    order = response.json()
    order_url = response.headers["Location"]
    for authz_url in order["authorizations"]:
        authz = (await client.get(authz_url)).json()
        if authz["status"] == "valid":
            continue
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        result = await client.post(challenge["url"], {})
        assert result.status_code == 200, result.text
    await env.drain()
    order = (await client.get(order_url)).json()
    assert order["status"] == "ready", order
    csr, _ = make_csr(names)
    response = await client.finalize(order, csr)
    assert response.status_code == 200, response.text
    order = response.json()
    order["url"] = order_url
    return order
