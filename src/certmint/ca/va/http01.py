"""http-01 validation: RFC 8555 §8.3, CA/B Forum BR 3.2.2.4.19.

The VA resolves the name once, then connects to exactly the address it
resolved (the URL carries the IP and the ``Host`` header the name), so a
DNS-rebinding attacker cannot swap the target between the address check and
the fetch. Redirects are followed by hand so every hop passes the same checks.
Failure is returned as data (a ``Problem``); nothing here raises to the caller.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import ssl
from dataclasses import dataclass

import httpx

from certmint.ca.va.addresses import format_host_for_url, normalize_hostname, parse_ip
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


def connection_problem(detail: str) -> Problem:
    return Problem(type=ProblemType.CONNECTION, detail=detail, status=400)


def unauthorized_problem(detail: str) -> Problem:
    return Problem(type=ProblemType.UNAUTHORIZED, detail=detail, status=403)


def echo_text(body: bytes, limit: int = ECHO_LIMIT) -> str:
    """A printable, bounded rendering of hostile bytes for a problem detail."""
    text = body[: limit * 4].decode("utf-8", "replace")
    shown = "".join(ch if ch.isprintable() else "\ufffd" for ch in text[:limit])
    return shown + ("..." if len(text) > limit or len(body) > limit * 4 else "")


def _refused(exc: BaseException) -> bool:
    """Whether a connect error was, somewhere down its cause chain, ECONNREFUSED."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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


def build_http_client(config: VAConfig) -> httpx.AsyncClient:
    """The one shared client: no keep-alive, no cookies, no environment.

    ``trust_env=False`` keeps proxies and .netrc credentials out; the cookie
    jar's policy refuses every cookie so nothing one applicant's server sets
    is ever sent to another's. Certificates are not verified on https
    redirects, as Boulder does: control is proven by the body, not by TLS.
    """
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        verify=tls,
        trust_env=False,
        follow_redirects=False,
        cookies=jar,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        timeout=httpx.Timeout(config.total_timeout, connect=config.connect_timeout),
    )


class Http01Validator:
    def __init__(self, config: VAConfig, resolver: VAResolver, client: httpx.AsyncClient) -> None:
        self._config = config
        self._resolver = resolver
        self._client = client

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
            # Never echo them: they may be real secrets the server leaked.
            return connection_problem(
                f"Fetching {current.url}: Redirect target carries credentials"
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
        plan = await plan_dial(
            self._resolver, hop.target.host, allow_private=self._config.allow_private_addresses
        )
        if isinstance(plan, DnsLookupError):
            return plan.problem
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
                return await self._get(target, address, progress)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Boulder falls back from the first IPv6 to the first IPv4
                # address only when connecting fails, never after a response.
                what = (
                    "Timeout during connect (likely firewall problem)"
                    if isinstance(exc, httpx.ConnectTimeout)
                    else "Connection refused"
                    if _refused(exc)
                    else "Error connecting"
                )
                last_problem = connection_problem(prefix + what)
            except httpx.TimeoutException:
                return connection_problem(
                    prefix + "Timeout after connect (your server may be slow or overloaded)"
                )
            except (httpx.HTTPError, OSError, ValueError) as exc:
                log.debug("http-01 fetch of %s via %s failed: %r", target.url, address, exc)
                return connection_problem(prefix + "Error getting validation data")
        assert last_problem is not None  # candidates is never empty
        return last_problem

    async def _get(
        self, target: HttpTarget, address: str, progress: _Progress
    ) -> _Redirect | _Body | Problem:
        headers = {
            "Host": target.authority,
            "User-Agent": self._config.user_agent,
            "Accept": "*/*",
            # No compression: a small compressed body could expand past the cap.
            "Accept-Encoding": "identity",
            "Connection": "close",
        }

        async def trace(event: str, _info: dict[str, object]) -> None:
            # Once TCP is up, a deadline means a slow server, not a firewall.
            if event == "connection.connect_tcp.complete":
                progress.phase = "response"

        extensions: dict[str, object] = {"trace": trace}
        if target.scheme == "https" and parse_ip(target.host) is None:
            extensions["sni_hostname"] = target.host
        request = self._client.build_request(
            "GET", target.url_for_address(address), headers=headers, extensions=extensions
        )
        response = await self._client.send(request, stream=True)
        try:
            progress.phase = "response"
            if response.status_code in REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    return connection_problem(
                        f"{address}: Fetching {target.url}: "
                        f"{response.status_code} redirect without a Location header"
                    )
                return _Redirect(location)
            if response.status_code != 200:
                return connection_problem(
                    f"{address}: Invalid response from {target.url}: {response.status_code}"
                )
            return await self._read_capped(response)
        finally:
            await response.aclose()

    async def _read_capped(self, response: httpx.Response) -> _Body:
        limit = self._config.max_body_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _Body(b"", over_limit=True)
        buffer = bytearray()
        async for chunk in response.aiter_raw():
            buffer += chunk
            if len(buffer) > limit:
                # Stop reading: whatever follows cannot make the body valid.
                return _Body(bytes(buffer[:limit]), over_limit=True)
        return _Body(bytes(buffer), over_limit=False)
