"""Challenge test server: mock DNS, HTTP-01 and TLS-ALPN-01 with a control API.

Mirrors Pebble's ``pebble-challtestsrv`` (same management paths and JSON
bodies) so scripts written for it work here. Usable in-process from async
tests (``await server.start()``), from sync tests and the CLI
(``with server.run_in_thread(): ...``), and as ``certmint-challtestsrv``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from cryptography import x509

from certmint.protocol.jwk import PrivateKey
from certmint.testing.challtest_dns import CAAPolicy, DnsListener, MockZone
from certmint.testing.challtest_http import (
    HttpRequest,
    HttpResponse,
    bound_port,
    start_http_server,
)
from certmint.testing.challtest_tls import TlsAlpnResponder

Address = tuple[str, int]
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
THREAD_DEADLINE = 15.0


class BadRequest(ValueError):
    """A management request we refuse with 400 and a one-line message."""


@dataclass(frozen=True)
class HttpRequestRecord:
    method: str
    path: str
    host: str
    peer: str


class ChallengeTestServer:
    def __init__(
        self,
        *,
        dns_address: Address | None = ("127.0.0.1", 0),
        http01_address: Address | None = ("127.0.0.1", 0),
        tlsalpn01_address: Address | None = ("127.0.0.1", 0),
        management_address: Address | None = ("127.0.0.1", 0),
        default_ipv4: str | None = "127.0.0.1",
        default_ipv6: str | None = None,
    ) -> None:
        self._addresses = {
            "dns": dns_address,
            "http01": http01_address,
            "tlsalpn01": tlsalpn01_address,
            "management": management_address,
        }
        self.zone = MockZone(None, None)
        self.zone.set_default_ipv4(default_ipv4)
        self.zone.set_default_ipv6(default_ipv6)
        self._lock = threading.Lock()
        self._http01: dict[str, str] = {}
        self._redirects: dict[str, str] = {}
        self.http_history: deque[HttpRequestRecord] = deque(maxlen=1000)
        self._dns = DnsListener(self.zone)
        self._tls: TlsAlpnResponder | None = None
        self._http_servers: list[asyncio.Server] = []
        self.dns_port = 0
        self.http01_port = 0
        self.tlsalpn01_port = 0
        self.management_port = 0
        self._route_table = self._routes()

    # -- lifecycle --

    async def start(self) -> None:
        try:
            if (where := self._addresses["dns"]) is not None:
                await self._dns.start(*where)
                self.dns_port = self._dns.port
            if (where := self._addresses["http01"]) is not None:
                server = await start_http_server(self._serve_http01, *where)
                self._http_servers.append(server)
                self.http01_port = bound_port(server)
            if (where := self._addresses["tlsalpn01"]) is not None:
                self._tls = TlsAlpnResponder()
                await self._tls.start(*where)
                self.tlsalpn01_port = self._tls.port
            if (where := self._addresses["management"]) is not None:
                server = await start_http_server(self._serve_management, *where)
                self._http_servers.append(server)
                self.management_port = bound_port(server)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self._dns.stop()
        if self._tls is not None:
            await self._tls.stop()
            self._tls = None
        servers, self._http_servers = self._http_servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    @contextmanager
    def run_in_thread(self) -> Iterator[ChallengeTestServer]:
        """Serve from a private event loop in a daemon thread while inside."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="challtestsrv", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(THREAD_DEADLINE)
            try:
                yield self
            finally:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(THREAD_DEADLINE)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(THREAD_DEADLINE)
            loop.close()

    # -- in-process API (same operations as the management paths) --

    def set_default_ipv4(self, ip: str | None) -> None:
        self.zone.set_default_ipv4(ip)

    def set_default_ipv6(self, ip: str | None) -> None:
        self.zone.set_default_ipv6(ip)

    def add_a(self, host: str, addresses: Sequence[str]) -> None:
        self.zone.add_a(host, list(addresses))

    def clear_a(self, host: str) -> None:
        self.zone.clear_a(host)

    def add_a_once(self, host: str, addresses: Sequence[str]) -> None:
        """The next A answer for ``host`` only (a DNS-rebinding name; in-process
        tests only, like ``add_tlsalpn01_certificate``)."""
        self.zone.add_a_once(host, list(addresses))

    def add_aaaa(self, host: str, addresses: Sequence[str]) -> None:
        self.zone.add_aaaa(host, list(addresses))

    def clear_aaaa(self, host: str) -> None:
        self.zone.clear_aaaa(host)

    def add_caa(self, host: str, policies: Sequence[CAAPolicy | tuple[str, str]]) -> None:
        self.zone.add_caa(
            host, [p if isinstance(p, CAAPolicy) else CAAPolicy(p[0], p[1]) for p in policies]
        )

    def clear_caa(self, host: str) -> None:
        self.zone.clear_caa(host)

    def set_txt(self, host: str, value: str) -> None:
        self.zone.set_txt(host, value)

    def clear_txt(self, host: str) -> None:
        self.zone.clear_txt(host)

    def set_cname(self, host: str, target: str) -> None:
        self.zone.set_cname(host, target)

    def clear_cname(self, host: str) -> None:
        self.zone.clear_cname(host)

    def set_servfail(self, host: str) -> None:
        self.zone.set_servfail(host)

    def clear_servfail(self, host: str) -> None:
        self.zone.clear_servfail(host)

    def add_http01(self, token: str, content: str) -> None:
        with self._lock:
            self._http01[token] = content

    def del_http01(self, token: str) -> None:
        with self._lock:
            self._http01.pop(token, None)

    def add_redirect(self, path: str, target_url: str) -> None:
        with self._lock:
            self._redirects[path] = target_url

    def del_redirect(self, path: str) -> None:
        with self._lock:
            self._redirects.pop(path, None)

    def add_tlsalpn01(self, host: str, content: str) -> None:
        if self._tls is None:
            raise RuntimeError("the TLS-ALPN-01 listener is not running")
        self._tls.add(host, content)

    def add_tlsalpn01_certificate(
        self, host: str, cert: x509.Certificate, key: PrivateKey, *, alpn: bool = True
    ) -> None:
        """A crafted certificate for ``host`` (in-process tests only)."""
        if self._tls is None:
            raise RuntimeError("the TLS-ALPN-01 listener is not running")
        self._tls.add_certificate(host, cert, key, alpn=alpn)

    def del_tlsalpn01(self, host: str) -> None:
        if self._tls is not None:
            self._tls.delete(host)

    # -- HTTP-01 responder --

    async def _serve_http01(self, request: HttpRequest) -> HttpResponse:
        host = request.headers.get("host", "").partition(":")[0].lower()
        self.http_history.append(
            HttpRequestRecord(request.method, request.path, host, request.peer)
        )
        with self._lock:
            redirect = self._redirects.get(request.path)
            token = request.path.removeprefix(CHALLENGE_PREFIX)
            content = self._http01.get(token) if request.path.startswith(CHALLENGE_PREFIX) else None
        if redirect is not None:
            return HttpResponse(302, headers=(("Location", redirect),))
        if content is None or request.method not in ("GET", "HEAD"):
            return HttpResponse(404, b"404 page not found\n")
        return HttpResponse(200, content.encode())

    # -- management API --

    async def _serve_management(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/health":
            return HttpResponse(200, b"ok\n")
        route = self._route_table.get(request.path)
        if route is None:
            return HttpResponse(404, b"unknown management path\n")
        if request.method != "POST":
            return HttpResponse(405, b"use POST with a JSON body\n", headers=(("Allow", "POST"),))
        try:
            try:
                body = json.loads(request.body or b"{}")
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequest(f"invalid JSON body: {exc}") from exc
            if not isinstance(body, dict):
                raise BadRequest("JSON body must be an object")
            result = await route(body)
        except (BadRequest, ValueError) as exc:
            line = str(exc).splitlines()[0] if str(exc) else "bad request"
            return HttpResponse(400, (line + "\n").encode())
        if result is None:
            return HttpResponse(200)
        return HttpResponse(200, json.dumps(result).encode(), content_type="application/json")

    def _routes(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        def op(fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Awaitable[Any]]:
            async def run(body: dict[str, Any]) -> Any:
                return fn(body)

            return run

        return {
            "/set-default-ipv4": op(lambda b: self.set_default_ipv4(_str(b, "ip", empty=True))),
            "/set-default-ipv6": op(lambda b: self.set_default_ipv6(_str(b, "ip", empty=True))),
            "/add-a": op(lambda b: self.add_a(_str(b, "host"), _strs(b, "addresses"))),
            "/clear-a": op(lambda b: self.clear_a(_str(b, "host"))),
            "/add-aaaa": op(lambda b: self.add_aaaa(_str(b, "host"), _strs(b, "addresses"))),
            "/clear-aaaa": op(lambda b: self.clear_aaaa(_str(b, "host"))),
            "/add-caa": op(lambda b: self.add_caa(_str(b, "host"), _policies(b))),
            "/clear-caa": op(lambda b: self.clear_caa(_str(b, "host"))),
            "/set-txt": op(lambda b: self.set_txt(_str(b, "host"), _str(b, "value", empty=True))),
            "/clear-txt": op(lambda b: self.clear_txt(_str(b, "host"))),
            "/set-cname": op(lambda b: self.set_cname(_str(b, "host"), _str(b, "target"))),
            "/clear-cname": op(lambda b: self.clear_cname(_str(b, "host"))),
            "/set-servfail": op(lambda b: self.set_servfail(_str(b, "host"))),
            "/clear-servfail": op(lambda b: self.clear_servfail(_str(b, "host"))),
            "/add-http01": op(
                lambda b: self.add_http01(_str(b, "token"), _str(b, "content", empty=True))
            ),
            "/del-http01": op(lambda b: self.del_http01(_str(b, "token"))),
            "/add-redirect": op(
                lambda b: self.add_redirect(_str(b, "path"), _str(b, "targetURL", "target_url"))
            ),
            "/del-redirect": op(lambda b: self.del_redirect(_str(b, "path"))),
            "/add-tlsalpn01": op(lambda b: self.add_tlsalpn01(_str(b, "host"), _str(b, "content"))),
            "/del-tlsalpn01": op(lambda b: self.del_tlsalpn01(_str(b, "host"))),
            "/http-request-history": op(
                lambda b: [
                    asdict(r) for r in self.http_history if r.host == _str(b, "host").lower()
                ]
            ),
            "/dns-request-history": op(
                lambda b: [
                    asdict(r)
                    for r in self.zone.history
                    if r.name == _str(b, "host").lower().rstrip(".")
                ]
            ),
        }


def _str(body: dict[str, Any], *names: str, empty: bool = False) -> str:
    """The first present field of ``names`` as a string (Pebble's spellings
    first, our snake_case alternative second)."""
    for name in names:
        if name in body:
            value = body[name]
            if not isinstance(value, str) or (not value and not empty):
                raise BadRequest(f'field "{name}" must be a non-empty string')
            return value
    raise BadRequest(f'missing field "{names[0]}"')


def _strs(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f'field "{name}" must be a list of strings')
    return value


def _policies(body: dict[str, Any]) -> list[CAAPolicy]:
    raw = body.get("policies")
    if not isinstance(raw, list):
        raise BadRequest('field "policies" must be a list of {"tag","value"} objects')
    policies = []
    for item in raw:
        if not isinstance(item, dict):
            raise BadRequest('each policy must be a {"tag","value"} object')
        flags = item.get("flags", 0)
        if not isinstance(flags, int) or not 0 <= flags <= 255:
            raise BadRequest('policy "flags" must be an integer 0-255')
        policies.append(CAAPolicy(_str(item, "tag"), _str(item, "value", empty=True), flags))
    return policies


# -- command line --


def parse_listen(text: str) -> Address | None:
    """``host:port``, ``[v6]:port`` or ``:port`` (all interfaces, as in Go and
    pebble-challtestsrv); an empty string disables the listener."""
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ":port" means every interface
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certmint-challtestsrv",
        description="Mock DNS, HTTP-01 and TLS-ALPN-01 responders with a management API "
        "(pebble-challtestsrv compatible paths).",
    )
    add = parser.add_argument
    add(
        "--dns",
        "-dns01",
        type=parse_listen,
        default=("127.0.0.1", 8053),
        help="DNS listen address (UDP+TCP), default 127.0.0.1:8053; '' disables",
    )
    add(
        "--http01",
        "-http01",
        type=parse_listen,
        default=("127.0.0.1", 5002),
        help="HTTP-01 listen address, default 127.0.0.1:5002; '' disables",
    )
    add(
        "--tlsalpn01",
        "-tlsalpn01",
        type=parse_listen,
        default=("127.0.0.1", 5001),
        help="TLS-ALPN-01 listen address, default 127.0.0.1:5001; '' disables",
    )
    add(
        "--management",
        "-management",
        type=parse_listen,
        default=("127.0.0.1", 8055),
        help="management API listen address, default 127.0.0.1:8055",
    )
    add(
        "--default-ipv4",
        "-defaultIPv4",
        default="127.0.0.1",
        help="A answer for names without explicit records; '' for none",
    )
    add(
        "--default-ipv6",
        "-defaultIPv6",
        default="",
        help="AAAA answer for names without explicit records; '' (default) for none",
    )
    return parser


async def _serve_until_signalled(server: ChallengeTestServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    try:
        for label, port, kind in (
            ("DNS", server.dns_port, "dns"),
            ("HTTP-01", server.http01_port, "http01"),
            ("TLS-ALPN-01", server.tlsalpn01_port, "tlsalpn01"),
            ("management", server.management_port, "management"),
        ):
            where = server._addresses[kind]
            if where is not None:
                print(f"certmint-challtestsrv: {label} listening on {where[0]}:{port}", flush=True)
        await stop.wait()
    finally:
        await server.stop()
        print("certmint-challtestsrv: stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        server = ChallengeTestServer(
            dns_address=args.dns,
            http01_address=args.http01,
            tlsalpn01_address=args.tlsalpn01,
            management_address=args.management,
            default_ipv4=args.default_ipv4 or None,
            default_ipv6=args.default_ipv6 or None,
        )
        asyncio.run(_serve_until_signalled(server))
    except (OSError, ValueError) as exc:
        print(f"certmint-challtestsrv: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
