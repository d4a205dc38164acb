"""http-01 validation: RFC 8555 §8.3, CA/B Forum BR 3.2.2.4.19.

The VA resolves the name once, then connects to exactly the address it
resolved (the socket goes to the IP, the ``Host`` header carries the name), so
a DNS-rebinding attacker cannot swap the target between the address check and
the fetch. Redirects are followed by hand so every hop passes the same checks.
Failure is returned as data (a ``Problem``); nothing here raises to the caller.

Each hop is one GET over one fresh connection: ``asyncio.open_connection``
(plus ``start_tls`` for https), the HTTP/1.1 framing done by h11 (RFC 9112).
A general client (httpx → httpcore → anyio → h11) cost several times more CPU
per validation for features the VA must not use anyway: pooling, cookies,
proxies and credentials from the environment, automatic redirects and
decompression. ``httpx.URL`` is kept only to resolve a redirect's Location
(RFC 3986 §5), which happens off the common path.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

import h11
import httpx

from certmint.ca.va.addresses import (
    AddressPolicy,
    format_host_for_url,
    normalize_hostname,
    parse_ip,
)
from certmint.ca.va.model import VAConfig, ValidationRecord, ValidationResult
from certmint.ca.va.resolver import DnsLookupError, VAResolver, plan_dial
from certmint.protocol.problems import Problem, ProblemType

log = logging.getLogger(__name__)

# RFC 8555 §8.3 names no codes; these are the ones BR 3.2.2.4.19 permits
# ("301, 302, or 307/308") and the ones Boulder follows.
REDIRECT_STATUSES = frozenset({301, 302, 307, 308})
# How much of a wrong body we echo back in the problem detail.
ECHO_LIMIT = 128
WELL_KNOWN_PREFIX = "/.well-known/acme-challenge/"
# Interim 1xx responses skipped before giving up on a final one.
MAX_INFORMATIONAL = 8
# Bytes read from the socket at a time.
READ_CHUNK = 16384


def connection_problem(detail: str) -> Problem:
    return Problem(type=ProblemType.CONNECTION, detail=detail, status=400)


def unauthorized_problem(detail: str) -> Problem:
    return Problem(type=ProblemType.UNAUTHORIZED, detail=detail, status=403)


def echo_text(body: bytes, limit: int = ECHO_LIMIT) -> str:
    """A printable, bounded rendering of hostile bytes for a problem detail."""
    text = body[: limit * 4].decode("utf-8", "replace")
    shown = "".join(ch if ch.isprintable() else "\ufffd" for ch in text[:limit])
    return shown + ("..." if len(text) > limit or len(body) > limit * 4 else "")


@dataclass(frozen=True)
class HttpTarget:
    """One hop's logical URL: the name as the applicant wrote it, not the IP."""

    scheme: str  # "http" or "https"
    host: str  # lower-case name or IP literal (no brackets)
    port: int
    path: str  # path plus query, starting with "/"

    @property
    def _standard_port(self) -> int:
        return 443 if self.scheme == "https" else 80

    @property
    def authority(self) -> str:
        host = format_host_for_url(self.host)
        return host if self.port == self._standard_port else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"

    def url_for_address(self, address: str) -> str:
        return f"{self.scheme}://{format_host_for_url(address)}:{self.port}{self.path}"


@dataclass
class _Progress:
    """Which phase the validation is in, so an overall timeout can say where."""

    phase: str = "dns"
    target: HttpTarget | None = None
    address: str | None = None


@dataclass(frozen=True)
class _Redirect:
    location: str


@dataclass(frozen=True)
class _Body:
    data: bytes
    over_limit: bool


@dataclass
class _Hop:
    target: HttpTarget
    resolved: tuple[str, ...] = ()
    used: str | None = None

    def record(self) -> ValidationRecord:
        return ValidationRecord(
            url=self.target.url,
            hostname=self.target.host,
            port=self.target.port,
            addresses_resolved=self.resolved,
            address_used=self.used,
        )


def build_tls_context() -> ssl.SSLContext:
    """For https redirect hops. Certificates are not verified, as Boulder does:
    control is proven by the body, not by TLS (BR 3.2.2.4.19 allows https
    redirects without requiring a trusted certificate)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996: not TLS 1.0/1.1
    context.set_alpn_protocols(["http/1.1"])
    return context


class _ConnectFailed(Exception):
    """Connecting failed: the one case where the next address is tried."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Http01Validator:
    def __init__(self, config: VAConfig, resolver: VAResolver) -> None:
        self._config = config
        self._resolver = resolver
        self._policy = AddressPolicy.for_config(config)
        self._tls = build_tls_context()

    async def validate(self, host: str, token: str, key_authorization: str) -> ValidationResult:
        """``host`` is an already-checked lower-case name or IP literal."""
        first = HttpTarget("http", host, self._config.http01_port, WELL_KNOWN_PREFIX + token)
        hops: list[_Hop] = []
        progress = _Progress()
        try:
            async with asyncio.timeout(self._config.total_timeout):
                problem = await self._follow(first, key_authorization, hops, progress)
        except TimeoutError:
            problem = self._deadline_problem(progress)
        return ValidationResult(
            valid=problem is None, problem=problem, records=tuple(h.record() for h in hops)
        )

    def _deadline_problem(self, progress: _Progress) -> Problem:
        target = progress.target
        where = (
            f"{progress.address}: Fetching {target.url}: " if target and progress.address else ""
        )
        if progress.phase == "dns" and target is not None:
            return Problem(
                type=ProblemType.DNS,
                detail=f"DNS problem: query timed out looking up {target.host}",
                status=400,
            )
        if progress.phase == "connect":
            return connection_problem(where + "Timeout during connect (likely firewall problem)")
        return connection_problem(
            where + "Timeout after connect (your server may be slow or overloaded)"
        )

    async def _follow(
        self, target: HttpTarget, key_authorization: str, hops: list[_Hop], progress: _Progress
    ) -> Problem | None:
        seen: set[str] = set()
        expected = key_authorization.encode("ascii")
        while True:
            if target.url in seen:
                return connection_problem(f"Fetching {target.url}: Redirect loop detected")
            seen.add(target.url)
            hop = _Hop(target)
            hops.append(hop)
            outcome = await self._fetch_hop(hop, progress)
            if isinstance(outcome, Problem):
                return outcome
            if isinstance(outcome, _Redirect):
                if len(hops) > self._config.max_redirects:
                    return connection_problem(
                        f"Fetching {target.url}: Too many redirects "
                        f"(more than {self._config.max_redirects})"
                    )
                next_target = self.redirect_target(target, outcome.location)
                if isinstance(next_target, Problem):
                    return next_target
                target = next_target
                continue
            return self._check_body(target, outcome, expected, key_authorization)

    def _check_body(
        self, target: HttpTarget, body: _Body, expected: bytes, key_authorization: str
    ) -> Problem | None:
        # RFC 8555 §8.3: the VA "verifies that the key authorization in the
        # body of the response ... matches"; Boulder trims surrounding
        # whitespace, and so do we, since editors append newlines.
        if not body.over_limit and body.data.strip() == expected:
            return None
        got = echo_text(body.data.strip())
        extra = f", body longer than {self._config.max_body_bytes} bytes" if body.over_limit else ""
        return unauthorized_problem(
            "The key authorization file from the server did not match this challenge. "
            f'Expected "{key_authorization}" (got "{got}"{extra})'
        )

    def redirect_target(self, current: HttpTarget, location: str) -> HttpTarget | Problem:
        """Check a Location header against the rules every hop must obey."""
        try:
            joined = httpx.URL(current.url).join(location)
        except (httpx.InvalidURL, ValueError, TypeError):
            return connection_problem(
                f"Fetching {current.url}: Invalid redirect target {echo_text(location.encode())!r}"
            )
        if joined.scheme not in ("http", "https"):
            scheme = echo_text(joined.scheme.encode(), 32)
            return connection_problem(
                f"Fetching {current.url}: Invalid protocol scheme in redirect target. "
                f'Only "http" and "https" protocol schemes are supported, not "{scheme}"'
            )
        if joined.userinfo:
            # RFC 9110 §4.2.4: userinfo in an http(s) URI from an untrusted
            # source is to be treated as an error (it disguises the authority),
            # and the VA sends no credentials anyway (BR 3.2.2.4.19 fetches
            # anonymously), so it is refused rather than stripped. Never
            # echoed: it may be a real secret the server leaked.
            return connection_problem(
                f"Fetching {current.url}: Redirect target carries credentials "
                "(user:password@ in its URL); the CA never sends credentials, "
                "so redirect to a URL without them"
            )
        configured = (
            self._config.https_port if joined.scheme == "https" else self._config.http01_port
        )
        standard = 443 if joined.scheme == "https" else 80
        port = joined.port if joined.port is not None else standard
        if port not in (standard, configured):
            return connection_problem(
                f"Fetching {current.url}: Invalid port in redirect target. Only ports "
                f"{self._config.http01_port} and {self._config.https_port} are supported, "
                f"not {port}"
            )
        raw_host = joined.host
        address = parse_ip(raw_host)
        host = str(address) if address is not None else normalize_hostname(raw_host)
        if not host:
            shown = echo_text(str(joined).encode())
            return connection_problem(
                f"Fetching {current.url}: Invalid host in redirect target {shown}"
            )
        path = joined.raw_path.decode("ascii", "replace") or "/"
        # The scheme decides the port the VA dials (Boulder: http→80, https→443,
        # or the configured stand-ins), whatever the URL says within the rules.
        return HttpTarget(joined.scheme, host, configured, path)

    async def _addresses(self, hop: _Hop, progress: _Progress) -> tuple[str, ...] | Problem:
        progress.phase, progress.target, progress.address = "dns", hop.target, None
        # Resolved with nothing filtered, then cut down by the one policy:
        # the addresses dialled below come from this lookup only.
        plan = await plan_dial(self._resolver, hop.target.host, allow_private=True)
        if isinstance(plan, DnsLookupError):
            return plan.problem
        plan = self._policy.restrict(plan, hop.target.host)
        hop.resolved = plan.resolved
        if plan.refusal is not None:
            return connection_problem(f"Fetching {hop.target.url}: {plan.refusal}")
        return plan.candidates

    async def _fetch_hop(self, hop: _Hop, progress: _Progress) -> _Redirect | _Body | Problem:
        candidates = await self._addresses(hop, progress)
        if isinstance(candidates, Problem):
            return candidates
        target = hop.target
        last_problem: Problem | None = None
        for address in candidates:
            hop.used = address
            progress.phase, progress.address = "connect", address
            prefix = f"{address}: Fetching {target.url}: "
            try:
                streams = await self._connect(target, address, progress)
            except _ConnectFailed as exc:
                # Boulder falls back from the first IPv6 to the first IPv4
                # address only when connecting fails, never after a response.
                last_problem = connection_problem(prefix + exc.what)
                continue
            reader, writer = streams
            try:
                return await self._exchange(target, address, reader, writer)
            except (h11.ProtocolError, OSError, ValueError) as exc:
                log.debug("http-01 fetch of %s via %s failed: %r", target.url, address, exc)
                return connection_problem(prefix + "Error getting validation data")
            finally:
                # One request per connection. No wait for the close to finish:
                # a TLS peer could stall its close_notify, and asyncio aborts
                # the transport itself after ssl_shutdown_timeout.
                writer.close()
        assert last_problem is not None  # candidates is never empty
        return last_problem

    async def _connect(
        self, target: HttpTarget, address: str, progress: _Progress
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """TCP (then TLS for https) to exactly ``address``, the one the lookup
        returned: the name is never resolved again (no DNS rebinding)."""
        try:
            async with asyncio.timeout(self._config.connect_timeout):
                reader, writer = await asyncio.open_connection(address, target.port)
                # Once TCP is up, a deadline means a slow server, not a firewall.
                progress.phase = "response"
                if target.scheme == "https":
                    # SNI carries the name (never an IP literal, RFC 6066 §3).
                    sni = None if parse_ip(target.host) is not None else target.host
                    try:
                        await writer.start_tls(self._tls, server_hostname=sni)
                    except BaseException:  # cancellation included: never leak the socket
                        writer.close()
                        raise
        except TimeoutError as exc:
            raise _ConnectFailed("Timeout during connect (likely firewall problem)") from exc
        except OSError as exc:  # ssl.SSLError included: a failed handshake
            refused = isinstance(exc, ConnectionRefusedError)
            raise _ConnectFailed("Connection refused" if refused else "Error connecting") from exc
        return reader, writer

    async def _exchange(
        self,
        target: HttpTarget,
        address: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> _Redirect | _Body | Problem:
        """One GET over a fresh connection, parsed by h11.

        Nothing is sent but these headers: no cookies, no credentials, no
        compression (a small compressed body could expand past the cap). Reads
        are bounded by the overall deadline, which reports a stall here as
        "Timeout after connect"; h11 caps the response head at 16 KiB
        (``max_incomplete_event_size``) and the body is read only up to the cap.
        """
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=target.path,
            headers=[
                ("Host", target.authority),
                ("User-Agent", self._config.user_agent),
                ("Accept", "*/*"),
                ("Accept-Encoding", "identity"),
                ("Connection", "close"),
            ],
        )
        writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
        await writer.drain()
        response = await self._read_head(connection, reader)
        status = response.status_code
        if status in REDIRECT_STATUSES:
            locations = [v for k, v in response.headers if k == b"location"]
            if not locations:
                return connection_problem(
                    f"{address}: Fetching {target.url}: {status} redirect without a Location header"
                )
            return _Redirect(", ".join(_header_text(v) for v in locations))
        if status != 200:
            # The server answered, so this is not a connection problem: it
            # did not serve the key authorization (Boulder: unauthorized).
            return unauthorized_problem(f"{address}: Invalid response from {target.url}: {status}")
        return await self._read_capped(connection, reader, response)

    async def _read_head(
        self, connection: h11.Connection, reader: asyncio.StreamReader
    ) -> h11.Response:
        informational = 0
        while True:
            event = await _next_event(connection, reader)
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.InformationalResponse) and informational < MAX_INFORMATIONAL:
                informational += 1  # 100 Continue and the like: skip, boundedly
                continue
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} before a response")

    async def _read_capped(
        self, connection: h11.Connection, reader: asyncio.StreamReader, response: h11.Response
    ) -> _Body:
        limit = self._config.max_body_bytes
        declared = [v for k, v in response.headers if k == b"content-length"]
        if declared and int(declared[0]) > limit:  # h11 checked it is one number
            return _Body(b"", over_limit=True)
        buffer = bytearray()
        while True:
            event = await _next_event(connection, reader)
            if isinstance(event, h11.Data):
                buffer += event.data
                if len(buffer) > limit:
                    # Stop reading: whatever follows cannot make the body valid.
                    return _Body(bytes(buffer[:limit]), over_limit=True)
            elif isinstance(event, h11.EndOfMessage):
                return _Body(bytes(buffer), over_limit=False)
            else:
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in the body")


async def _next_event(connection: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
    """The next h11 event, reading from the socket when h11 needs more bytes.

    At most ``READ_CHUNK`` bytes are handed to h11 per read; the callers stop
    at the first event past their cap, so what is buffered stays bounded.
    """
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Event):
            return event
        if event is not h11.NEED_DATA:  # PAUSED: only after a complete exchange
            raise h11.RemoteProtocolError("connection paused before the response ended")
        connection.receive_data(await reader.read(READ_CHUNK))  # b"" is EOF


def _header_text(value: bytes) -> str:
    """A header value as text: UTF-8 if it is, else Latin-1 (as httpx did);
    h11 has already refused CR, LF and NUL in it."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")
