"""Setups for the hostile-network failure table (test_va_failure_table.py):
the row type, the per-row world (challenge test server, extra servers,
VAConfig changes), and the misbehaving servers and records the rows use."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.ca.va.model import ValidationResult
from certmint.protocol.challenges import (
    ID_PE_ACME_IDENTIFIER,
    dns01_txt_value,
    tls_alpn01_certificate,
)
from certmint.testing.challtest_dns import CAAPolicy
from certmint.testing.challtestsrv import ChallengeTestServer

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
THUMBPRINT = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
KEYAUTHZ = f"{TOKEN}.{THUMBPRINT}"
OTHER_TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
OTHER_THUMBPRINT = "AAAAWB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
PATH = f"/.well-known/acme-challenge/{TOKEN}"
US = "certmint.invalid"
ACCOUNT = "https://127.0.0.1:14000/acme/acct/abc"
# How long a misbehaving server keeps trickling at most: far beyond the VA's
# deadline in these rows, so the VA always gives up first.
TRICKLE_STEPS, TRICKLE_PAUSE = 100, 0.05


@dataclass
class World:
    """What a row's setup may touch: the challenge test server, extra servers
    (closed after the row), VAConfig changes and values for the detail."""

    srv: ChallengeTestServer
    stack: AsyncExitStack
    config: dict[str, Any] = field(default_factory=dict)
    values: dict[str, object] = field(default_factory=dict)
    heads: list[bytes] = field(default_factory=list)  # what scripted servers were sent
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> int:
        """A TCP server for this row only; its handlers end when the row does."""

        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                pass  # the VA hangs up when it has seen enough: its right
            finally:
                writer.close()

        server = await asyncio.start_server(guarded, host, port)

        async def close() -> None:
            self.stop.set()
            server.close()
            await server.wait_closed()

        self.stack.push_async_callback(close)
        return int(server.sockets[0].getsockname()[1])

    async def read_head(self, reader: asyncio.StreamReader) -> bytes:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        self.heads.append(head)
        return head

    async def trickle(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Send ``data`` a byte at a time, boundedly (slowloris)."""
        for byte in data[:TRICKLE_STEPS]:
            if self.stop.is_set():
                return
            writer.write(bytes((byte,)))
            await writer.drain()
            try:
                await asyncio.wait_for(self.stop.wait(), TRICKLE_PAUSE)
            except TimeoutError:
                continue


Setup = Callable[[World], Awaitable[None]]
Check = Callable[[World, ValidationResult], None]


@dataclass(frozen=True)
class Row:
    id: str
    challenge: str  # "http-01", "dns-01", "tls-alpn-01"
    name: str  # the identifier
    setup: Setup
    expected: str  # the exact problem type
    # Each must occur in the detail; "{http}", "{tls}" and World.values are filled in.
    detail: tuple[str, ...]
    identifier_type: str = "dns"
    wildcard: bool = False
    check: Check | None = None
    config: dict[str, Any] = field(default_factory=dict)  # VAConfig changes


# Misbehaving servers must run into the VA's overall deadline: keep it short.
QUICK = {"total_timeout": 0.5}


def nothing() -> Setup:
    async def setup(_w: World) -> None:
        pass

    return setup


def steps(*actions: Callable[[ChallengeTestServer], object]) -> Setup:
    """A setup made of plain calls on the challenge test server."""

    async def setup(w: World) -> None:
        for action in actions:
            action(w.srv)

    return setup


def http01(body: str) -> Callable[[ChallengeTestServer], object]:
    return lambda s: s.add_http01(TOKEN, body)


def redirect(location: str) -> Callable[[ChallengeTestServer], object]:
    return lambda s: s.add_redirect(PATH, location)


def redirect_chain(hops: int) -> Setup:
    """PATH → /hop/1 → … → /hop/<hops>: that many redirects, and more."""

    async def setup(w: World) -> None:
        w.srv.add_redirect(PATH, "/hop/1")
        for i in range(1, hops):
            w.srv.add_redirect(f"/hop/{i}", f"/hop/{i + 1}")

    return setup


def a_record(name: str, *addresses: str) -> Callable[[ChallengeTestServer], object]:
    return lambda s: s.add_a(name, list(addresses))


def cname_loop(first: str, second: str) -> Setup:
    return steps(lambda s: s.set_cname(first, second), lambda s: s.set_cname(second, first))


def caa(*policies: CAAPolicy, dns01: bool = False) -> Setup:
    """CAA at example.com (the VA climbs to it from www.example.com) and a
    correct challenge response, so only CAA can refuse."""

    async def setup(w: World) -> None:
        w.srv.add_caa("example.com", list(policies))
        if dns01:
            w.srv.set_txt("_acme-challenge.www.example.com", dns01_txt_value(KEYAUTHZ))
        else:
            w.srv.add_http01(TOKEN, KEYAUTHZ)

    return setup


def scripted_http(
    respond: Callable[[World, bytes, asyncio.StreamWriter], Awaitable[None]],
) -> Setup:
    """Point the VA's http-01 port at a server answering with ``respond``."""

    async def setup(w: World) -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await respond(w, await w.read_head(reader), writer)

        w.config["http01_port"] = await w.serve(handler)
        w.values["http"] = w.config["http01_port"]

    return setup


async def slow_head(w: World, _head: bytes, writer: asyncio.StreamWriter) -> None:
    await w.trickle(writer, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * TRICKLE_STEPS)


async def slow_body(w: World, _head: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(KEYAUTHZ))
    await w.trickle(writer, KEYAUTHZ.encode())


async def cookie_then_credentials(w: World, head: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 302 Found\r\nSet-Cookie: session=s3cret; Path=/\r\n"
        b"Location: http://admin:s3cret@example.com/.well-known/acme-challenge/x\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


async def asks_for_credentials(w: World, head: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(
        b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="x"\r\n'
        b"Set-Cookie: session=s3cret\r\nContent-Length: 0\r\n\r\n"
    )


async def not_http(w: World, _head: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")  # another service on the port


async def declared_oversize(w: World, head: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + KEYAUTHZ.encode())


def no_secrets_sent(w: World, _result: ValidationResult) -> None:
    assert len(w.heads) == 1  # the credentials were not followed, nor retried with
    for head in w.heads:
        assert b"cookie" not in head.lower()
        assert b"authorization" not in head.lower()


def rebinding() -> Setup:
    """The first A answer is the challenge test server (127.0.0.1), every
    later one 127.0.0.2, where a server on the same port serves the right key
    authorization: only a VA that looked the name up again could succeed."""

    async def setup(w: World) -> None:
        w.srv.add_a("rebind.example", ["127.0.0.2"])
        w.srv.add_a_once("rebind.example", ["127.0.0.1"])

        async def rebound(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await w.read_head(reader)
            body = KEYAUTHZ.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

        await w.serve(rebound, "127.0.0.2", w.srv.http01_port)

    return setup


def connected_to_first_answer_only(w: World, result: ValidationResult) -> None:
    assert w.heads == []  # 127.0.0.2 never saw a request
    assert result.records[0].address_used == "127.0.0.1"
    lookups = [q for q in w.srv.zone.history if q.name == "rebind.example" and q.qtype == "A"]
    assert len(lookups) == 1


def followed_ten(_w: World, result: ValidationResult) -> None:
    assert len(result.records) == 11  # the request and ten redirects; the 11th refused


def silent_resolver() -> Setup:
    """A nameserver that takes queries and never answers."""

    async def setup(w: World) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        w.stack.callback(sock.close)
        w.config.update(resolvers=(f"127.0.0.1:{sock.getsockname()[1]}",), dns_timeout=0.3)

    return setup


def closed_port(setting: str, value: str) -> Setup:
    """Point ``setting`` at a port where nothing listens (connection refused)."""

    async def setup(w: World) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            w.config[setting] = w.values[value] = sock.getsockname()[1]

    return setup


def plain_http_on_tls_port() -> Setup:
    """An ordinary HTTP server where the VA expects TLS (a misrouted port)."""

    async def setup(w: World) -> None:
        async def plain(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

        w.config["tlsalpn01_port"] = w.values["tls"] = await w.serve(plain)

    return setup


def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def crafted_cert(
    names: list[str], *, value: bytes | None, critical: bool = True
) -> Callable[[ChallengeTestServer], object]:
    """A challenge certificate for example.com that is wrong in one way."""
    private = key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crafted")])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(7)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    )
    if value is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, value), critical=critical
        )
    cert = builder.sign(private, hashes.SHA256())
    return lambda s: s.add_tlsalpn01_certificate("example.com", cert, private)


def without_alpn() -> Callable[[ChallengeTestServer], object]:
    cert, private = tls_alpn01_certificate("example.com", KEYAUTHZ)
    return lambda s: s.add_tlsalpn01_certificate("example.com", cert, private, alpn=False)


def alpn_alert() -> Setup:
    """A server that answers the ClientHello with a fatal
    no_application_protocol alert (RFC 7301 §3.2): TLS record type 21,
    version 3.3, length 2, level fatal (2), description 120."""

    async def setup(w: World) -> None:
        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.wait_for(reader.read(16384), 2)
            writer.write(b"\x15\x03\x03\x00\x02\x02\x78")
            await writer.drain()

        w.config["tlsalpn01_port"] = await w.serve(refuse)
        w.values["tls"] = w.config["tlsalpn01_port"]

    return setup
