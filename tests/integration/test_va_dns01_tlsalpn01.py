"""The VA's dns-01 and tls-alpn-01 over real sockets on 127.0.0.1 against the
challenge test server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.protocol.challenges import dns01_txt_value
from certmint.protocol.problems import ProblemType
from certmint.testing.challtestsrv import ChallengeTestServer
from certmint.testing.clock import FakeClock

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
OTHER_KEYAUTHZ = f"{TOKEN}.AAAAWB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    # certmint-ca serve runs on uvloop when it is installed: test both loops.
    return "asyncio", {"use_uvloop": request.param == "uvloop"}


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    server = ChallengeTestServer(http01_address=None, management_address=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def config_for(srv: ChallengeTestServer, **changes: object) -> VAConfig:
    fields: dict[str, object] = {
        "resolvers": (f"127.0.0.1:{srv.dns_port}",),
        "tlsalpn01_port": srv.tlsalpn01_port,
        "allow_private_addresses": True,
        "dns_timeout": 1.0,
        "connect_timeout": 1.0,
        "total_timeout": 3.0,
    }
    fields.update(changes)
    return VAConfig(**fields)  # type: ignore[arg-type]


async def validate(
    config: VAConfig, kind: str, name: str, *, id_type: str = "dns", keyauthz: str = KEYAUTHZ
) -> ValidationResult:
    va = ValidationAuthority(config, FakeClock())
    try:
        with anyio.fail_after(5):
            return await va.validate(ValidationRequest(kind, id_type, name, TOKEN, keyauthz))
    finally:
        await va.aclose()


def problem_of(result: ValidationResult) -> tuple[str, str]:
    assert not result.valid and result.problem is not None
    return result.problem.type, result.problem.detail


# -- dns-01 --


@pytest.mark.anyio
async def test_dns01_success_among_several_values(srv: ChallengeTestServer) -> None:
    srv.set_txt("_acme-challenge.example.com", "unrelated")
    srv.set_txt("_acme-challenge.example.com", dns01_txt_value(KEYAUTHZ))
    result = await validate(config_for(srv), "dns-01", "example.com")
    assert result.valid, result.problem
    assert result.records[0].hostname == "example.com"


@pytest.mark.anyio
async def test_dns01_wildcard_uses_base_name(srv: ChallengeTestServer) -> None:
    srv.set_txt("_acme-challenge.example.com", dns01_txt_value(KEYAUTHZ))
    result = await validate(config_for(srv), "dns-01", "*.example.com")
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_dns01_via_cname(srv: ChallengeTestServer) -> None:
    # Delegating _acme-challenge with a CNAME is common practice.
    srv.set_cname("_acme-challenge.example.com", "_acme-challenge.validation.example")
    srv.set_txt("_acme-challenge.validation.example", dns01_txt_value(KEYAUTHZ))
    result = await validate(config_for(srv), "dns-01", "example.com")
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_dns01_wrong_value(srv: ChallengeTestServer) -> None:
    srv.set_txt("_acme-challenge.example.com", dns01_txt_value(OTHER_KEYAUTHZ))
    srv.set_txt("_acme-challenge.example.com", "second")
    kind, detail = problem_of(await validate(config_for(srv), "dns-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    # Either value may come first: answers are shuffled on the wire.
    shown = {dns01_txt_value(OTHER_KEYAUTHZ), "second"}
    assert detail in {
        f'Incorrect TXT record "{v}" (and 1 more) found at _acme-challenge.example.com'
        for v in shown
    }


@pytest.mark.anyio
async def test_dns01_no_record(srv: ChallengeTestServer) -> None:
    kind, detail = problem_of(await validate(config_for(srv), "dns-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail == "No TXT record found at _acme-challenge.example.com"


@pytest.mark.anyio
async def test_dns01_servfail(srv: ChallengeTestServer) -> None:
    srv.set_servfail("_acme-challenge.example.com")
    kind, detail = problem_of(await validate(config_for(srv), "dns-01", "example.com"))
    assert kind == ProblemType.DNS
    assert "SERVFAIL looking up TXT for _acme-challenge.example.com" in detail


@pytest.mark.anyio
async def test_dns01_resolver_timeout(srv: ChallengeTestServer) -> None:
    # Port 9 (discard) on loopback: nothing answers, the query times out.
    config = config_for(srv, resolvers=("127.0.0.1:9",), dns_timeout=0.3)
    kind, detail = problem_of(await validate(config, "dns-01", "example.com"))
    assert kind == ProblemType.DNS
    assert "looking up TXT for _acme-challenge.example.com" in detail


# -- tls-alpn-01 --


@pytest.mark.anyio
async def test_tlsalpn01_success(srv: ChallengeTestServer) -> None:
    srv.add_tlsalpn01("example.com", KEYAUTHZ)
    result = await validate(config_for(srv), "tls-alpn-01", "Example.com")
    assert result.valid, result.problem
    (record,) = result.records
    assert (record.hostname, record.port, record.address_used) == (
        "example.com",
        srv.tlsalpn01_port,
        "127.0.0.1",
    )


@pytest.mark.anyio
async def test_tlsalpn01_ip_identifier(srv: ChallengeTestServer) -> None:
    srv.add_tlsalpn01("127.0.0.1", KEYAUTHZ)
    result = await validate(config_for(srv), "tls-alpn-01", "127.0.0.1", id_type="ip")
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_tlsalpn01_wrong_key_authorization(srv: ChallengeTestServer) -> None:
    srv.add_tlsalpn01("example.com", OTHER_KEYAUTHZ)
    kind, detail = problem_of(await validate(config_for(srv), "tls-alpn-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert "Invalid acmeIdentifier extension value" in detail


@pytest.mark.anyio
async def test_tlsalpn01_unknown_name_gets_fallback_certificate(srv: ChallengeTestServer) -> None:
    kind, detail = problem_of(await validate(config_for(srv), "tls-alpn-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert "challtestsrv.invalid" in detail


@pytest.mark.anyio
async def test_tlsalpn01_connection_refused(srv: ChallengeTestServer) -> None:
    config = config_for(srv, tlsalpn01_port=9)
    kind, detail = problem_of(await validate(config, "tls-alpn-01", "example.com"))
    assert kind == ProblemType.CONNECTION
    assert "127.0.0.1:9" in detail


@pytest.mark.anyio
async def test_tlsalpn01_private_address_refused(srv: ChallengeTestServer) -> None:
    srv.add_tlsalpn01("example.com", KEYAUTHZ)
    config = config_for(srv, allow_private_addresses=False)
    kind, detail = problem_of(await validate(config, "tls-alpn-01", "example.com"))
    assert kind == ProblemType.CONNECTION
    assert "loopback" in detail
