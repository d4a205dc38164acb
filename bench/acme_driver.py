"""A compact asyncio ACME client for the issuance-flow benchmark.

It drives exactly one path — RFC 8555 §7.4 new order → §7.5 authorization →
§8.3 http-01 → §7.4 finalize → certificate download — as cheaply as possible,
so that at concurrency 64 on two cores the server, not this client, is the
bottleneck: one process, one event loop, keep-alive HTTP/1.1, one nonce chain
per worker (§7.2: every response carries a fresh Replay-Nonce), certificate
keys generated before the measured window.

JWS, JWK and key authorizations come from certmint's own protocol code, so the
benchmark also exercises it against Pebble.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.protocol.b64 import b64url_encode
from certmint.protocol.challenges import key_authorization
from certmint.protocol.jwk import PrivateKey, generate_private_key, jwk_thumbprint
from certmint.protocol.jws import sign_acme_request

JOSE_CONTENT_TYPE = "application/jose+json"
PEM_CHAIN_TYPE = "application/pem-certificate-chain"
BAD_NONCE = "urn:ietf:params:acme:error:badNonce"

# Retry-After (RFC 8555 §7.4, §8.2) is honoured but capped: the benchmark asks
# "how fast can the CA go", and a CA that says "come back in 3 s" while the
# work is already done would otherwise measure our sleep, not its speed.
RETRY_AFTER_CAP_SECONDS = 0.02
# Polls per flow step; at 15 ms this is a 30 s ceiling, the stall threshold.
MAX_POLLS = 2000


class FlowError(Exception):
    """A flow step that failed; ``reason`` is short and groupable for reports."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# -- HTTP transport -------------------------------------------------------------
#
# httpx costs ~0.6 ms of client CPU per request on this machine (measured:
# 3000 keep-alive POSTs to pebble-challtestsrv), a raw asyncio stream ~0.03 ms.
# At 8 requests per flow httpx alone caps one client core near 150 flows/s,
# below what Pebble serves, so the default transport is the small HTTP/1.1
# client below; ``HttpxConnection`` stays available (--http-client httpx) to
# cross-check the figures with a well-known client.

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_LINES = 200
MAX_BODY_BYTES = 1024 * 1024  # a PEM chain or an ACME object is far smaller


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


class HttpConnection(Protocol):
    async def request(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> HttpResponse: ...

    async def aclose(self) -> None: ...


class HttpxConnection:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def request(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> HttpResponse:
        response = await self._client.request(method, url, content=body, headers=headers)
        return HttpResponse(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


class RawHttp1Connection:
    """One keep-alive HTTP/1.1 connection to one origin (RFC 9112).

    Everything read is bounded: header block, body length, chunk sizes. A
    request on a reused connection that the server closed while idle is sent
    again once on a fresh connection (RFC 9112 §9.3.1 allows it only before
    any response byte arrived, which is the only case retried).
    """

    def __init__(self, origin: str, ssl_context: ssl.SSLContext | None, timeout: float) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported origin {origin!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._ssl = ssl_context if parts.scheme == "https" else None
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._reader, self._writer = await asyncio.open_connection(
            self._host, self._port, ssl=self._ssl, limit=MAX_HEADER_BYTES
        )
        return self._reader, self._writer

    async def request(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> HttpResponse:
        if not url.startswith(self._origin + "/"):
            raise FlowError("cross-origin URL", url[:200])
        path = url[len(self._origin):]
        head = [f"{method} {path} HTTP/1.1", f"host: {self._host}:{self._port}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method == "POST":
            head.append(f"content-length: {len(body)}")
        wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        async with asyncio.timeout(self._timeout):
            status_line, reader = await self._send(wire)
            try:
                return await self._read_response(status_line, reader, method)
            except BaseException:
                await self.aclose()
                raise

    async def _send(self, wire: bytes) -> tuple[bytes, asyncio.StreamReader]:
        """Write the request, read the status line; one retry on a fresh
        connection if a reused one turns out closed."""
        for attempt in range(2):
            if self._reader is not None and self._writer is not None:
                reused, reader, writer = True, self._reader, self._writer
            else:
                reused, (reader, writer) = False, await self._connect()
            try:
                writer.write(wire)
                return await reader.readuntil(b"\r\n"), reader
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.aclose()
                if not (reused and attempt == 0):
                    raise
        raise ConnectionError("unreachable: second attempt returns or raises")

    async def _read_response(
        self, status_line: bytes, reader: asyncio.StreamReader, method: str
    ) -> HttpResponse:
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise FlowError("bad HTTP status line", repr(status_line[:80]))
        status = int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            line = await reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, sep, value = line.partition(b":")
            if not sep:
                raise FlowError("bad HTTP header line", repr(line[:80]))
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        else:
            raise FlowError("too many HTTP header lines")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            content = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            content = await self._read_chunked(reader)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if not 0 <= length <= MAX_BODY_BYTES:
                raise FlowError("HTTP body too large", str(length))
            content = await reader.readexactly(length)
        else:
            # Neither length nor chunking: the body ends when the server
            # closes (RFC 9112 §6.3 rule 8). Each read returns >= 1 byte or EOF.
            parts_read: list[bytes] = []
            for _ in range(MAX_BODY_BYTES + 1):
                data = await reader.read(65536)
                if not data or sum(map(len, parts_read)) > MAX_BODY_BYTES:
                    break
                parts_read.append(data)
            content = b"".join(parts_read)
            headers["connection"] = "close"
        if len(content) > MAX_BODY_BYTES:
            raise FlowError("HTTP body too large")
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return HttpResponse(status, headers, content)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        total = 0
        for _ in range(MAX_BODY_BYTES):
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailer section, then the final CRLF (RFC 9112 §7.1.2).
                for _ in range(100):
                    if await reader.readuntil(b"\r\n") == b"\r\n":
                        return b"".join(chunks)
                raise FlowError("HTTP trailer section too long")
            total += size
            if total > MAX_BODY_BYTES:
                raise FlowError("HTTP body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        raise FlowError("HTTP chunked body has too many chunks")

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)



@dataclass(frozen=True)
class Directory:
    new_nonce: str
    new_account: str
    new_order: str


@dataclass
class Progress:
    """Last time a flow advanced a step (read by the stall watchdog), and how
    long each step took (reported, to show where a flow spends its time)."""

    last: float = field(default_factory=time.monotonic)
    step: str = "start"
    step_seconds: dict[str, float] = field(default_factory=dict)
    polls: int = 0

    def advance(self, step: str) -> None:
        now = time.monotonic()
        self.step_seconds[step] = now - self.last
        self.step = step
        self.last = now


def _problem_type(response: HttpResponse) -> str:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    value = body.get("type", "") if isinstance(body, dict) else ""
    return value if isinstance(value, str) else ""


def _json_object(response: HttpResponse, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise FlowError(f"{what}: body is not JSON") from None
    if not isinstance(body, dict):
        raise FlowError(f"{what}: body is not a JSON object")
    return body


def _retry_after(response: HttpResponse, default: float, cap: float) -> float:
    raw = response.headers.get("retry-after", "")
    try:
        seconds = float(raw)
    except ValueError:
        return default
    return min(max(seconds, default), cap)


class CertificateKeyPool:
    """Certificate keys made before the measured window, so the client's
    key generation does not compete with the server for the two cores."""

    def __init__(self, size: int) -> None:
        self._keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(max(1, size))]
        self._next = 0

    def take(self) -> ec.EllipticCurvePrivateKey:
        key = self._keys[self._next % len(self._keys)]
        self._next += 1
        return key


def make_csr_der(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


class ChallengeResponder:
    """The management API of certmint-challtestsrv / pebble-challtestsrv."""

    def __init__(self, connection: HttpConnection, management_url: str) -> None:
        self._connection = connection
        self._url = management_url.rstrip("/")

    async def add_http01(self, token: str, content: str) -> None:
        body = json.dumps({"token": token, "content": content}).encode()
        response = await self._connection.request(
            "POST", f"{self._url}/add-http01", body, {"content-type": "application/json"}
        )
        if response.status_code != 200:
            raise FlowError("responder add-http01", f"HTTP {response.status_code}")


async def fetch_directory(connection: HttpConnection, directory_url: str) -> Directory:
    response = await connection.request("GET", directory_url)
    if response.status_code != 200:
        raise FlowError("directory", f"HTTP {response.status_code}")
    body = _json_object(response, "directory")
    try:
        return Directory(body["newNonce"], body["newAccount"], body["newOrder"])
    except KeyError as exc:
        raise FlowError("directory", f"missing {exc}") from None


class AcmeWorker:
    """One account and one nonce chain; runs flows one after another."""

    def __init__(
        self,
        connection: HttpConnection,
        directory: Directory,
        responder: ChallengeResponder,
        keys: CertificateKeyPool,
        *,
        poll_interval: float = 0.015,
        retry_after_cap: float = RETRY_AFTER_CAP_SECONDS,
        domain: str = "bench.test",
    ) -> None:
        self._connection = connection
        self._directory = directory
        self._responder = responder
        self._keys = keys
        self._poll_interval = poll_interval
        self._retry_after_cap = max(retry_after_cap, poll_interval)
        self._domain = domain
        self._account_key: PrivateKey = generate_private_key("ES256")
        self._thumbprint = jwk_thumbprint(self._account_key.public_key())
        self._kid: str | None = None
        self._nonce: str | None = None
        self.bad_nonce_retries = 0

    # -- transport ---------------------------------------------------------

    async def _fresh_nonce(self) -> str:
        response = await self._connection.request("HEAD", self._directory.new_nonce)
        nonce = response.headers.get("replay-nonce")
        if not nonce:
            raise FlowError("newNonce", f"HTTP {response.status_code} without Replay-Nonce")
        return nonce

    async def _post(
        self, url: str, payload: dict[str, Any] | None, *, accept: str | None = None
    ) -> HttpResponse:
        """Signed POST (RFC 8555 §6.2); ``payload=None`` is POST-as-GET (§6.3).

        badNonce is retried once with the nonce from the error (§6.5): a
        bounded loop, never an unbounded one.
        """
        headers = {"content-type": JOSE_CONTENT_TYPE}
        if accept:
            headers["accept"] = accept
        response: HttpResponse | None = None
        for _attempt in range(2):
            nonce = self._nonce or await self._fresh_nonce()
            self._nonce = None
            body = sign_acme_request(
                self._account_key, payload, url=url, nonce=nonce, kid=self._kid
            )
            response = await self._connection.request("POST", url, body, headers)
            self._nonce = response.headers.get("replay-nonce")
            if response.status_code == 400 and _problem_type(response) == BAD_NONCE:
                self.bad_nonce_retries += 1
                continue
            return response
        assert response is not None
        return response

    async def _post_json(
        self, url: str, payload: dict[str, Any] | None, what: str, ok: tuple[int, ...] = (200,)
    ) -> tuple[HttpResponse, dict[str, Any]]:
        response = await self._post(url, payload)
        if response.status_code not in ok:
            problem = _problem_type(response) or "no problem document"
            raise FlowError(f"{what}: HTTP {response.status_code} {problem}")
        return response, _json_object(response, what)

    # -- account -----------------------------------------------------------

    async def create_account(self) -> None:
        """RFC 8555 §7.3; done once per worker, outside the measured window."""
        self._kid = None
        response, _ = await self._post_json(
            self._directory.new_account,
            {"termsOfServiceAgreed": True},
            "newAccount",
            ok=(200, 201),
        )
        location = response.headers.get("location")
        if not location:
            raise FlowError("newAccount: no Location header")
        self._kid = location

    # -- one complete flow -------------------------------------------------

    async def _poll(
        self, url: str, what: str, done: Callable[[str], bool], first: HttpResponse,
        progress: Progress, *, settled: bool = False,
    ) -> dict[str, Any]:
        # ``settled``: the previous answer already showed the final state (a
        # CA that validates inline answers the challenge POST with "valid"),
        # so fetch the result at once rather than sleeping a poll interval.
        delay = 0.0 if settled else _retry_after(
            first, self._poll_interval, self._retry_after_cap)
        for _ in range(MAX_POLLS):
            await asyncio.sleep(delay)
            progress.polls += 1
            response, body = await self._post_json(url, None, what)
            status = body.get("status")
            if isinstance(status, str) and done(status):
                return body
            delay = _retry_after(response, self._poll_interval, self._retry_after_cap)
        raise FlowError(f"{what}: still not done after {MAX_POLLS} polls")

    async def run_flow(self, progress: Progress) -> None:
        """One complete issuance for a fresh random name; raises FlowError."""
        if self._kid is None:
            raise FlowError("no account")
        name = f"{secrets.token_hex(8)}.{self._domain}"
        order_response, order = await self._post_json(
            self._directory.new_order,
            {"identifiers": [{"type": "dns", "value": name}]},
            "newOrder",
            ok=(201,),
        )
        order_url = order_response.headers.get("location")
        authz_urls = order.get("authorizations")
        finalize_url = order.get("finalize")
        if not order_url or not isinstance(authz_urls, list) or len(authz_urls) != 1:
            raise FlowError("newOrder: malformed order")
        progress.advance("order")

        authz_url = authz_urls[0]
        _, authz = await self._post_json(authz_url, None, "authz")
        if authz.get("status") != "valid":
            challenge_response = await self._answer_http01(authz, progress)
            challenge_status = _json_object(challenge_response, "challenge").get("status")
            authz = await self._poll(
                authz_url, "authz poll", lambda s: s != "pending", challenge_response, progress,
                settled=challenge_status in ("valid", "invalid"),
            )
            if authz.get("status") != "valid":
                raise FlowError(f"authz {authz.get('status')}", str(authz.get("challenges")))
        progress.advance("authz valid")

        if not isinstance(finalize_url, str):
            raise FlowError("newOrder: no finalize URL")
        csr = make_csr_der(self._keys.take(), name)
        final_response, order = await self._post_json(
            finalize_url, {"csr": b64url_encode(csr)}, "finalize"
        )
        progress.advance("finalized")
        if order.get("status") != "valid":
            order = await self._poll(
                order_url, "order poll", lambda s: s not in ("processing", "ready"),
                final_response, progress,
            )
        certificate_url = order.get("certificate")
        if order.get("status") != "valid" or not isinstance(certificate_url, str):
            raise FlowError(f"order {order.get('status')}")
        progress.advance("order valid")

        response = await self._post(certificate_url, None, accept=PEM_CHAIN_TYPE)
        if response.status_code != 200 or b"-----BEGIN CERTIFICATE-----" not in response.content:
            raise FlowError(f"certificate: HTTP {response.status_code}")
        progress.advance("downloaded")

    async def _answer_http01(self, authz: dict[str, Any], progress: Progress) -> HttpResponse:
        challenges = authz.get("challenges")
        if not isinstance(challenges, list):
            raise FlowError("authz: no challenges")
        for challenge in challenges:
            if isinstance(challenge, dict) and challenge.get("type") == "http-01":
                break
        else:
            raise FlowError("authz: no http-01 challenge")
        token, url = challenge.get("token"), challenge.get("url")
        if not isinstance(token, str) or not isinstance(url, str):
            raise FlowError("authz: malformed http-01 challenge")
        # RFC 8555 §8.3: the resource body is the key authorization.
        await self._responder.add_http01(token, key_authorization(token, self._thumbprint))
        progress.advance("provisioned")
        response, _ = await self._post_json(url, {}, "challenge")
        progress.advance("challenge posted")
        return response
