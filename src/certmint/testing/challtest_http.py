"""A deliberately small HTTP/1.1 server for the challenge test server.

One request per connection (``Connection: close``), parsed by h11 (already
installed with httpx), with bounded header size, body size and time, so that
a misbehaving client in a test cannot wedge or bloat the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import h11

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = 1024 * 1024
REQUEST_DEADLINE = 10.0


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # path plus query, as sent
    headers: dict[str, str]  # lower-case names; the last value wins
    body: bytes
    peer: str

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, peer: str
) -> HttpRequest | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_REQUEST_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
            return HttpRequest(
                method=head.method.decode("ascii", "replace"),
                target=head.target.decode("ascii", "replace"),
                headers=headers,
                body=bytes(body),
                peer=peer,
            )
        else:  # ConnectionClosed or PAUSED: nothing more to serve
            return None


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, resp: HttpResponse) -> None:
    headers = [
        ("Content-Type", resp.content_type),
        ("Content-Length", str(len(resp.body))),
        ("Connection", "close"),
        *resp.headers,
    ]
    out = conn.send(h11.Response(status_code=resp.status, headers=headers))
    out += conn.send(h11.Data(data=resp.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    writer.write(out or b"")
    await writer.drain()


def _peer_of(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


async def _serve_connection(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    try:
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                request = await _read_request(conn, reader, _peer_of(writer))
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400
                await _send(conn, writer, HttpResponse(status, b"bad request\n"))
            return
        if request is None:
            return
        response = await handler(request)
        if request.method == "HEAD":  # RFC 9110 §9.3.2: no content in a HEAD response
            response = replace(response, body=b"")
        await _send(conn, writer, response)
    except (TimeoutError, ConnectionError, h11.LocalProtocolError) as exc:
        log.debug("challtest http connection ended: %r", exc)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


async def start_http_server(handler: Handler, host: str, port: int) -> asyncio.Server:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(handler, reader, writer)

    return await asyncio.start_server(on_connect, host, port)


def bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])
