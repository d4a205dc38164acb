"""The VA's http-01 client against scripted HTTP servers on 127.0.0.1: what it
sends, and what it does with hostile or odd responses. IP identifiers keep DNS
out of the way; each server answers raw bytes from a script."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.protocol.problems import ProblemType
from certmint.testing.clock import FakeClock

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
PATH = f"/.well-known/acme-challenge/{TOKEN}"

# Given the request head (bytes up to the blank line) and the writer: answer.
Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    return "asyncio", {"use_uvloop": request.param == "uvloop"}


@asynccontextmanager
async def http_server(
    handler: Handler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """(port, request heads seen) of a server answering with ``handler``."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            heads.append(head)
            await handler(head, writer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the VA may hang up first; that is its right
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1], heads
    finally:
        server.close()
        await server.wait_closed()


def reply(raw: bytes) -> Handler:
    async def send(_head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)

    return send


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def validate(port: int, **changes: object) -> ValidationResult:
    fields: dict[str, object] = {
        "resolvers": ("127.0.0.1:9",),  # IP identifiers: never asked
        "http01_port": port,
        "allow_private_addresses": True,
        "connect_timeout": 1.0,
        "total_timeout": 3.0,
    }
    fields.update(changes)
    va = ValidationAuthority(VAConfig(**fields), FakeClock())  # type: ignore[arg-type]
    try:
        with anyio.fail_after(6):
            return await va.validate(
                ValidationRequest("http-01", "ip", "127.0.0.1", TOKEN, KEYAUTHZ)
            )
    finally:
        await va.aclose()


def problem_of(result: ValidationResult) -> tuple[str, str]:
    assert not result.valid and result.problem is not None
    return result.problem.type, result.problem.detail


@pytest.mark.anyio
async def test_request_is_minimal_and_cookies_never_travel() -> None:
    async def handler(head: bytes, writer: asyncio.StreamWriter) -> None:
        if head.startswith(b"GET " + PATH.encode()):
            writer.write(
                b"HTTP/1.1 302 Found\r\nSet-Cookie: session=secret; Path=/\r\n"
                b"Location: /second\r\nContent-Length: 0\r\n\r\n"
            )
        else:
            writer.write(ok(KEYAUTHZ.encode()))

    async with http_server(handler) as (port, heads):
        result = await validate(port)
    assert result.valid, result.problem
    first, second = heads
    assert (
        first
        == (
            f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: certmint-va/0.1\r\n"
            "Accept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    assert second.startswith(b"GET /second HTTP/1.1\r\n")
    for head in heads:
        assert b"cookie" not in head.lower()
        assert b"authorization" not in head.lower()


@pytest.mark.anyio
async def test_http10_body_until_close() -> None:
    async with http_server(reply(b"HTTP/1.0 200 OK\r\n\r\n" + KEYAUTHZ.encode())) as (port, _):
        result = await validate(port)
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_interim_responses_are_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(KEYAUTHZ.encode())
    async with http_server(reply(raw)) as (port, _):
        result = await validate(port)
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_endless_interim_responses_are_refused() -> None:
    raw = b"HTTP/1.1 102 Processing\r\n\r\n" * 50
    async with http_server(reply(raw)) as (port, _):
        kind, detail = problem_of(await validate(port))
    assert kind == ProblemType.CONNECTION
    assert detail.endswith("Error getting validation data")


@pytest.mark.anyio
async def test_declared_oversize_body_is_not_read() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + KEYAUTHZ.encode()
    async with http_server(reply(raw)) as (port, _):
        kind, detail = problem_of(await validate(port))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail.endswith('(got "", body longer than 8192 bytes)')


@pytest.mark.anyio
async def test_chunked_body_is_capped() -> None:
    chunk = b"2000\r\n" + b"x" * 0x2000 + b"\r\n"
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 4 + b"0\r\n\r\n"
    async with http_server(reply(raw)) as (port, _):
        kind, detail = problem_of(await validate(port, max_body_bytes=10_000))
    assert kind == ProblemType.UNAUTHORIZED
    assert "body longer than 10000 bytes" in detail
    assert len(detail) < 400


@pytest.mark.anyio
async def test_oversize_response_head_is_refused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * 40_000 + b"\r\n\r\n"
    async with http_server(reply(raw)) as (port, _):
        kind, detail = problem_of(await validate(port))
    assert kind == ProblemType.CONNECTION
    assert (
        detail
        == f"127.0.0.1: Fetching http://127.0.0.1:{port}{PATH}: Error getting validation data"
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\nshort",  # ends early
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"",  # closes without a response
    ],
)
async def test_broken_responses_are_connection_problems(raw: bytes) -> None:
    async with http_server(reply(raw)) as (port, _):
        kind, detail = problem_of(await validate(port))
    assert kind == ProblemType.CONNECTION
    assert detail.endswith("Error getting validation data")


@pytest.mark.anyio
async def test_multiple_location_headers_are_joined_and_refused() -> None:
    raw = b"HTTP/1.1 301 Moved\r\nLocation: /a\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n"
    async with http_server(reply(raw)) as (port, heads):
        result = await validate(port)
    # "/a, /b" is one odd path, as httpx read it; the script answers it with
    # the same redirect, which the loop check then stops.
    kind, detail = problem_of(result)
    assert kind == ProblemType.CONNECTION
    assert heads[1].startswith(b"GET /a,%20/b HTTP/1.1\r\n")
    assert "Redirect loop detected" in detail or "Too many redirects" in detail


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts TCP and then says nothing (a stalled TLS peer)."""
    stop = asyncio.Event()

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(stop.wait(), 3)
        except TimeoutError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        stop.set()
        server.close()
        await server.wait_closed()


def redirect_to_https() -> bytes:
    location = f"https://127.0.0.1{PATH}".encode()
    return b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.anyio
async def test_https_hop_whose_handshake_stalls_is_a_connect_timeout() -> None:
    async with silent_server() as tls_port, http_server(reply(redirect_to_https())) as (port, _):
        # The 0.3 s connect deadline, not the 15 s total default, must end it.
        with anyio.fail_after(10):
            result = await validate(port, https_port=tls_port, connect_timeout=0.3)
    kind, detail = problem_of(result)
    assert kind == ProblemType.CONNECTION
    assert detail == (
        f"127.0.0.1: Fetching https://127.0.0.1:{tls_port}{PATH}: "
        "Timeout during connect (likely firewall problem)"
    )


@pytest.mark.anyio
async def test_overall_deadline_during_handshake_is_after_connect() -> None:
    # TCP is up, so the overall deadline blames the server, not a firewall
    # (as httpx's connect_tcp.complete trace did); the socket is closed.
    async with silent_server() as tls_port, http_server(reply(redirect_to_https())) as (port, _):
        result = await validate(port, https_port=tls_port, connect_timeout=2.0, total_timeout=0.4)
    kind, detail = problem_of(result)
    assert kind == ProblemType.CONNECTION
    assert detail == (
        f"127.0.0.1: Fetching https://127.0.0.1:{tls_port}{PATH}: "
        "Timeout after connect (your server may be slow or overloaded)"
    )


@pytest.mark.anyio
async def test_https_hop_to_a_plain_server_is_an_error_connecting() -> None:
    async def plain(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # at once: not TLS
        await writer.drain()
        writer.close()

    plain_server = await asyncio.start_server(plain, "127.0.0.1", 0)
    plain_port = plain_server.sockets[0].getsockname()[1]
    try:
        async with http_server(reply(redirect_to_https())) as (port, _):
            kind, detail = problem_of(await validate(port, https_port=plain_port))
    finally:
        plain_server.close()
        await plain_server.wait_closed()
    assert kind == ProblemType.CONNECTION
    assert detail == f"127.0.0.1: Fetching https://127.0.0.1:{plain_port}{PATH}: Error connecting"
