"""GET /authz/{id}/perspectives on the management API (BR 3.2.2.9 records)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.hierarchy import Hierarchy, load_or_create_dev_hierarchy
from certmint.ca.mgmt import build_management_app
from certmint.ca.storage.records import (
    AuthzRecord,
    CertificateRecord,
    ChallengeRecord,
    RevokedEntry,
)
from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy

START = datetime(2026, 1, 1, tzinfo=UTC)
OUTCOMES = [
    {"region": "primary", "valid": True},
    {"region": "r1", "valid": False, "problemType": "dns", "detail": "SERVFAIL"},
]
AUTHZ = AuthzRecord(
    id="authz-1",
    account_id="acct",
    identifier_type="dns",
    identifier_value="example.com",
    wildcard=False,
    status="valid",
    expires=START + timedelta(days=30),
    created_at=START,
    challenges=(
        ChallengeRecord(
            id="c1", authz_id="authz-1", type="dns-01", token="t", status="valid",
            perspectives_json=json.dumps(OUTCOMES),
        ),
        ChallengeRecord(id="c2", authz_id="authz-1", type="http-01", token="t", status="pending"),
    ),
)  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Source:
    def get_certificate(self, serial: str) -> CertificateRecord | None:
        return None

    def list_revoked(self, issuer_id: str, now: datetime) -> list[RevokedEntry]:
        return []

    def get_authz(self, authz_id: str) -> AuthzRecord | None:
        return AUTHZ if authz_id == AUTHZ.id else None


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return load_or_create_dev_hierarchy(
        tmp_path_factory.mktemp("h"), FakeClock(START), SeededEntropy(3)
    )


def client(hierarchy: Hierarchy, *, with_source: bool = True) -> httpx.AsyncClient:
    clock = FakeClock(START)
    ca = CertificateAuthority(
        hierarchy, IssuanceConfig("http://x/crl/", "http://x/aia/"), clock, SeededEntropy(4)
    )
    source = Source()
    app = build_management_app(
        ca, hierarchy, source, clock, authorizations=source if with_source else None
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mgmt")


@pytest.mark.anyio
async def test_perspectives_of_each_challenge(hierarchy: Hierarchy) -> None:
    async with client(hierarchy) as http:
        response = await http.get("/authz/authz-1/perspectives")
    assert response.status_code == 200
    assert response.json() == {
        "authorization": "authz-1",
        "challenges": [
            {"type": "dns-01", "status": "valid", "perspectives": OUTCOMES},
            {"type": "http-01", "status": "pending", "perspectives": []},
        ],
    }


@pytest.mark.anyio
@pytest.mark.parametrize("authz_id", ["nosuch", "a" * 65, "bad%20id", "..%2F"])
async def test_unknown_or_malformed_id_is_404_problem(hierarchy: Hierarchy, authz_id: str) -> None:
    async with client(hierarchy) as http:
        response = await http.get(f"/authz/{authz_id}/perspectives")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.anyio
async def test_route_is_404_without_an_authorization_source(hierarchy: Hierarchy) -> None:
    async with client(hierarchy, with_source=False) as http:
        response = await http.get("/authz/authz-1/perspectives")
    assert response.status_code == 404
