"""The VA's http-01 over real sockets on 127.0.0.1 against the challenge test
server: DNS from its DNS port, HTTP from its HTTP-01 port."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.protocol.challenges import tls_alpn01_certificate
from certmint.protocol.problems import ProblemType
from certmint.testing.challtestsrv import ChallengeTestServer
from certmint.testing.clock import FakeClock

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
THUMBPRINT = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
KEYAUTHZ = f"{TOKEN}.{THUMBPRINT}"
PATH = f"/.well-known/acme-challenge/{TOKEN}"


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    # certmint-ca serve runs on uvloop when it is installed: test both loops.
    return "asyncio", {"use_uvloop": request.param == "uvloop"}


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    server = ChallengeTestServer(tlsalpn01_address=None, management_address=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_for(srv: ChallengeTestServer, **changes: object) -> VAConfig:
    fields: dict[str, object] = {
        "resolvers": (f"127.0.0.1:{srv.dns_port}",),
        "http01_port": srv.http01_port,
        "allow_private_addresses": True,
        "dns_timeout": 1.0,
        "connect_timeout": 1.0,
        "total_timeout": 3.0,
    }
    fields.update(changes)
    return VAConfig(**fields)  # type: ignore[arg-type]


async def validate(
    config: VAConfig, name: str = "example.com", *, kind: str = "dns", keyauthz: str = KEYAUTHZ
) -> ValidationResult:
    va = ValidationAuthority(config, FakeClock())
    try:
        with anyio.fail_after(5):
            return await va.validate(ValidationRequest("http-01", kind, name, TOKEN, keyauthz))
    finally:
        await va.aclose()


def problem_of(result: ValidationResult) -> tuple[str, str]:
    assert not result.valid
    assert result.problem is not None
    return result.problem.type, result.problem.detail


@pytest.mark.anyio
async def test_success(srv: ChallengeTestServer) -> None:
    srv.add_http01(TOKEN, KEYAUTHZ + "\r\n")  # surrounding whitespace is trimmed
    result = await validate(config_for(srv), "Example.COM")
    assert result.valid and result.problem is None
    (record,) = result.records
    assert record.hostname == "example.com"
    assert record.port == srv.http01_port
    assert record.url == f"http://example.com:{srv.http01_port}{PATH}"
    assert record.addresses_resolved == ("127.0.0.1",)
    assert record.address_used == "127.0.0.1"


@pytest.mark.anyio
async def test_ip_identifier_needs_no_dns(srv: ChallengeTestServer) -> None:
    srv.add_http01(TOKEN, KEYAUTHZ)
    result = await validate(config_for(srv), "127.0.0.1", kind="ip")
    assert result.valid
    assert not [q for q in srv.zone.history if q.name == "127.0.0.1"]


@pytest.mark.anyio
async def test_wrong_body_is_unauthorized(srv: ChallengeTestServer) -> None:
    srv.add_http01(TOKEN, "not-the-key-authorization")
    kind, detail = problem_of(await validate(config_for(srv)))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail == (
        "The key authorization file from the server did not match this challenge. "
        f'Expected "{KEYAUTHZ}" (got "not-the-key-authorization")'
    )


@pytest.mark.anyio
async def test_404_is_unauthorized(srv: ChallengeTestServer) -> None:
    # The server answered, so the connection is fine: it did not serve the
    # key authorization (Boulder's mapping; docs/validation-failures.md).
    result = await validate(config_for(srv))
    kind, detail = problem_of(result)
    assert kind == ProblemType.UNAUTHORIZED
    assert f"Invalid response from http://example.com:{srv.http01_port}{PATH}: 404" in detail
    assert result.records[0].address_used == "127.0.0.1"


@pytest.mark.anyio
async def test_servfail_is_dns_problem(srv: ChallengeTestServer) -> None:
    srv.set_servfail("broken.example")
    result = await validate(config_for(srv), "broken.example")
    kind, detail = problem_of(result)
    assert kind == ProblemType.DNS
    assert detail.startswith("DNS problem: SERVFAIL looking up A for broken.example")
    assert result.records[0].addresses_resolved == ()
    assert result.records[0].address_used is None


@pytest.mark.anyio
async def test_nxdomain_is_dns_problem(srv: ChallengeTestServer) -> None:
    srv.set_default_ipv4(None)
    kind, detail = problem_of(await validate(config_for(srv), "nowhere.example"))
    assert kind == ProblemType.DNS
    assert detail == (
        "DNS problem: NXDOMAIN looking up A for nowhere.example - "
        "check that a DNS record exists for this domain"
    )


@pytest.mark.anyio
async def test_name_without_addresses_is_dns_problem(srv: ChallengeTestServer) -> None:
    srv.set_default_ipv4(None)
    srv.set_txt("txt-only.example", "hello")  # the name exists, with no A/AAAA
    kind, detail = problem_of(await validate(config_for(srv), "txt-only.example"))
    assert kind == ProblemType.DNS
    assert detail == "No valid IP addresses found for txt-only.example"


@pytest.mark.anyio
async def test_connection_refused(srv: ChallengeTestServer) -> None:
    result = await validate(config_for(srv, http01_port=unused_port()))
    kind, detail = problem_of(result)
    assert kind == ProblemType.CONNECTION
    assert detail.startswith("127.0.0.1: Fetching http://example.com:")
    assert detail.endswith("Connection refused")


@pytest.mark.anyio
async def test_ipv6_first_then_ipv4_fallback(srv: ChallengeTestServer) -> None:
    # The HTTP server listens on 127.0.0.1 only, so [::1] refuses and the VA
    # must fall back to the first IPv4 address, as Boulder does.
    srv.add_aaaa("dual.example", ["::1"])
    srv.add_http01(TOKEN, KEYAUTHZ)
    result = await validate(config_for(srv), "dual.example")
    assert result.valid, result.problem
    (record,) = result.records
    assert record.addresses_resolved == ("::1", "127.0.0.1")
    assert record.address_used == "127.0.0.1"


@pytest.mark.anyio
async def test_cname_is_followed(srv: ChallengeTestServer) -> None:
    srv.set_default_ipv4(None)
    srv.set_cname("www.example", "target.example")
    srv.add_a("target.example", ["127.0.0.1"])
    srv.add_http01(TOKEN, KEYAUTHZ)
    result = await validate(config_for(srv), "www.example")
    assert result.valid, result.problem
    assert result.records[0].hostname == "www.example"


@pytest.mark.anyio
async def test_redirect_to_allowed_path(srv: ChallengeTestServer) -> None:
    other = "other-token-0123456789abcdefghij"
    srv.add_redirect(PATH, f"http://redirected.example/.well-known/acme-challenge/{other}")
    srv.add_http01(other, KEYAUTHZ)
    result = await validate(config_for(srv))
    assert result.valid, result.problem
    first, second = result.records
    assert first.url is not None and first.url.endswith(PATH)
    assert (
        second.url
        == f"http://redirected.example:{srv.http01_port}/.well-known/acme-challenge/{other}"
    )
    assert second.hostname == "redirected.example"
    hosts = [r.host for r in srv.http_history]
    assert hosts == ["example.com", "redirected.example"]


@pytest.mark.anyio
async def test_relative_redirect(srv: ChallengeTestServer) -> None:
    other = "relative-token-0123456789abcdef"
    srv.add_redirect(PATH, other)  # relative to the challenge directory
    srv.add_http01(other, KEYAUTHZ)
    result = await validate(config_for(srv))
    assert result.valid, result.problem
    assert len(result.records) == 2


@pytest.mark.anyio
async def test_redirect_to_disallowed_port(srv: ChallengeTestServer) -> None:
    srv.add_redirect(PATH, "http://example.com:9999/x")
    result = await validate(config_for(srv))
    kind, detail = problem_of(result)
    assert kind == ProblemType.CONNECTION
    assert "Invalid port in redirect target" in detail and "not 9999" in detail
    assert len(result.records) == 1


@pytest.mark.anyio
async def test_redirect_to_disallowed_scheme(srv: ChallengeTestServer) -> None:
    srv.add_redirect(PATH, "gopher://example.com/x")
    kind, detail = problem_of(await validate(config_for(srv)))
    assert kind == ProblemType.CONNECTION
    assert "Invalid protocol scheme" in detail


@pytest.mark.anyio
async def test_too_many_redirects(srv: ChallengeTestServer) -> None:
    srv.add_redirect(PATH, "/hop/1")
    for i in range(1, 6):
        srv.add_redirect(f"/hop/{i}", f"/hop/{i + 1}")
    result = await validate(config_for(srv, max_redirects=3))
    kind, detail = problem_of(result)
    assert kind == ProblemType.CONNECTION
    assert "Too many redirects" in detail
    assert len(result.records) == 4  # the request plus three followed redirects


@pytest.mark.anyio
async def test_redirect_loop(srv: ChallengeTestServer) -> None:
    srv.add_redirect(PATH, "/loop")
    srv.add_redirect("/loop", PATH)
    kind, detail = problem_of(await validate(config_for(srv)))
    assert kind == ProblemType.CONNECTION
    assert "Redirect loop detected" in detail


@pytest.mark.anyio
async def test_redirect_to_private_address_refused(srv: ChallengeTestServer) -> None:
    # Even when the first hop is allowed, every hop passes the same checks.
    srv.add_a("public.example", ["8.8.8.8"])
    result = await validate(config_for(srv, allow_private_addresses=False, total_timeout=1.0))
    kind, detail = problem_of(result)
    assert kind == ProblemType.CONNECTION
    assert "loopback" in detail


@pytest.mark.anyio
async def test_oversize_body(srv: ChallengeTestServer) -> None:
    srv.add_http01(TOKEN, KEYAUTHZ + " " * 9000 + "trailing junk")
    kind, detail = problem_of(await validate(config_for(srv)))
    assert kind == ProblemType.UNAUTHORIZED
    assert "body longer than 8192 bytes" in detail
    assert len(detail) < 400


@pytest.mark.anyio
async def test_slow_server_hits_the_deadline(srv: ChallengeTestServer) -> None:
    never = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await never.wait()  # accept, then never answer
        finally:
            writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # The configured 0.5 s deadline, not the 15 s default, must end it:
        # the outer bound fails the test long before the default would.
        with anyio.fail_after(10):
            result = await validate(config_for(srv, http01_port=port, total_timeout=0.5))
    finally:
        never.set()
        server.close()
        await server.wait_closed()
    kind, detail = problem_of(result)
    assert kind == ProblemType.CONNECTION
    assert "Timeout after connect" in detail
    assert result.records[0].address_used == "127.0.0.1"


@pytest.mark.anyio
async def test_private_address_refused_by_default(srv: ChallengeTestServer) -> None:
    srv.add_http01(TOKEN, KEYAUTHZ)
    result = await validate(config_for(srv, allow_private_addresses=False))
    kind, detail = problem_of(result)
    assert kind == ProblemType.CONNECTION
    assert "127.0.0.1, which is a loopback address" in detail
    (record,) = result.records
    assert record.addresses_resolved == ("127.0.0.1",)
    assert record.address_used is None
    assert not srv.http_history  # nothing was fetched


@pytest.mark.anyio
async def test_dns_rebinding_defence(srv: ChallengeTestServer) -> None:
    # The VA looks the name up exactly once per hop and connects to the
    # address it resolved; the name travels only in the Host header.
    srv.add_a("rebind.example", ["127.0.0.1"])
    srv.add_http01(TOKEN, KEYAUTHZ)
    result = await validate(config_for(srv), "rebind.example")
    assert result.valid, result.problem
    assert result.records[0].address_used == "127.0.0.1"
    queries = [
        (q.name, q.qtype)
        for q in srv.zone.history
        if q.name == "rebind.example" and q.qtype != "CAA"  # CAA is looked up once too
    ]
    assert sorted(queries) == [("rebind.example", "A"), ("rebind.example", "AAAA")]
    (request,) = srv.http_history
    assert (request.host, request.peer, request.path) == ("rebind.example", "127.0.0.1", PATH)


async def _https_server(tmp_path: Path, key_authorization: str) -> tuple[asyncio.Server, list[str]]:
    """A minimal HTTPS responder that records the SNI it was sent."""
    cert, key = tls_alpn01_certificate("secure.example", "unused.unused")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    seen: list[str] = []

    def remember(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.append(name or "")

    context.sni_callback = remember

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            body = key_authorization.encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    return server, seen


@pytest.mark.anyio
async def test_redirect_to_https_sends_sni_and_skips_verification(
    srv: ChallengeTestServer, tmp_path: Path
) -> None:
    server, seen = await _https_server(tmp_path, KEYAUTHZ)
    port = server.sockets[0].getsockname()[1]
    srv.add_redirect(PATH, f"https://secure.example{PATH}")
    try:
        result = await validate(config_for(srv, https_port=port))
    finally:
        server.close()
        await server.wait_closed()
    assert result.valid, result.problem
    assert seen == ["secure.example"]
    assert result.records[1].url == f"https://secure.example:{port}{PATH}"
    assert result.records[1].address_used == "127.0.0.1"


@pytest.mark.anyio
async def test_non_followed_redirect_status(srv: ChallengeTestServer) -> None:
    # 303 is not in BR 3.2.2.4.19's list: an invalid response, like a 404.
    async def see_other(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        writer.write(b"HTTP/1.1 303 See Other\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(see_other, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        kind, detail = problem_of(await validate(config_for(srv, http01_port=port)))
    finally:
        server.close()
        await server.wait_closed()
    assert kind == ProblemType.UNAUTHORIZED
    assert detail.endswith(": 303")


@pytest.mark.anyio
async def test_concurrent_validations(srv: ChallengeTestServer) -> None:
    srv.add_http01(TOKEN, KEYAUTHZ)
    va = ValidationAuthority(config_for(srv), FakeClock())
    request = ValidationRequest("http-01", "dns", "example.com", TOKEN, KEYAUTHZ)
    try:
        with anyio.fail_after(10):
            results = await asyncio.gather(*(va.validate(request) for _ in range(50)))
    finally:
        await va.aclose()
    assert all(r.valid for r in results)
