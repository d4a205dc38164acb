"""The management API: roots, intermediates, AIA, CRLs and certificate status.

Like Pebble's management interface it listens on its own port over plain
HTTP (DESIGN.md §2): nothing here needs a JWS, and AIA/CRL fetches must be
plain HTTP anyway (BR 7.1.2.7.7, 7.1.2.11.2 — no TLS chicken-and-egg).

Routes::

    GET /roots/{n}                 PEM of hierarchy.roots[n] (0 = default)
    GET /intermediates/{n}         PEM of the n-th issuer's default-chain certificate
    GET /aia/{issuer_id}.der       DER issuer certificate (application/pkix-cert)
    GET /crl/{issuer_id}.crl       DER CRL (application/pkix-crl)
    GET /cert-status-by-serial/{serial}   Pebble-style JSON status, plus
                                   ReplacedBy and RenewalWindow (RFC 9773)
    POST /renewal-info/{serial}    {"start": RFC 3339, "end": RFC 3339}: the
                                   operator's ARI window for that certificate
    DELETE /renewal-info/{serial}  back to the default window
    GET /health

Every path segment is client input: it is matched against known values or a
strict pattern before it is used, and every error is a small JSON document.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from certmint.ca.ari import suggested_window
from certmint.ca.issuance.authority import CertificateAuthority
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.ca.issuance.profile import SERIAL_BYTES, serial_to_string
from certmint.ca.shared import RevocationCounter
from certmint.ca.storage.errors import StaleState
from certmint.ca.storage.records import CERT_REVOKED, CertificateRecord, RevokedEntry
from certmint.protocol.messages import MessageError, parse_rfc3339
from certmint.protocol.strictjson import strict_json_loads
from certmint.runtime import Clock

log = logging.getLogger(__name__)

PEM_CHAIN_TYPE = "application/pem-certificate-chain"  # RFC 8555 §9.1
PKIX_CERT_TYPE = "application/pkix-cert"  # RFC 2585 §4.1
PKIX_CRL_TYPE = "application/pkix-crl"  # RFC 2585 §4.2
PROBLEM_TYPE = "application/problem+json"  # RFC 7807

# A CRL is rebuilt when older than this, or at once after invalidate_crl().
CRL_MAX_AGE_SECONDS = 60.0

# At most 20 octets (RFC 5280 §4.1.2.2), i.e. 40 hex digits.
_SERIAL_PATH_RE = re.compile(r"[0-9a-fA-F]{1,40}")


class CertificateStatusSource(Protocol):
    """The read side of the SA that the management API needs."""

    def get_certificate(self, serial: str) -> CertificateRecord | None: ...

    def list_revoked(self, issuer_id: str, now: datetime) -> list[RevokedEntry]: ...


class RenewalWindowStore(Protocol):
    """The one SA write the management API makes (RFC 9773 operator windows)."""

    def set_renewal_window(
        self, serial: str, start: datetime | None, end: datetime | None
    ) -> CertificateRecord: ...


# A window request is two timestamps; anything bigger is not one.
MAX_WINDOW_BODY_BYTES = 1024


@dataclass(frozen=True)
class _CachedCrl:
    der: bytes
    built_at: float  # clock.monotonic()
    generation: int = 0  # RevocationCounter value when built


class CrlPublisher:
    """Builds CRLs on demand and caches them for ``max_age`` seconds per issuer.

    The RA calls :meth:`invalidate_crl` after a revocation so that the next
    fetch shows it at once instead of up to a minute later.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        status_source: CertificateStatusSource,
        clock: Clock,
        max_age: float = CRL_MAX_AGE_SECONDS,
        revocations: RevocationCounter | None = None,
    ) -> None:
        # With several worker processes a revocation lands in one of them;
        # the shared counter tells every worker's cache it is stale.
        self._revocations = revocations or RevocationCounter()
        self._ca = ca
        self._status_source = status_source
        self._clock = clock
        self._max_age = max_age
        # One lock for the cache: builds are rare and fast, and serialising
        # them keeps two racing fetches from signing two CRLs.
        self._lock = threading.Lock()
        self._cache: dict[str, _CachedCrl] = {}

    def invalidate_crl(self, issuer_id: str) -> None:
        self._revocations.increment()
        with self._lock:
            self._cache.pop(issuer_id, None)

    def crl_der(self, issuer_id: str) -> bytes:
        """The current DER CRL for ``issuer_id``; KeyError if there is no such issuer."""
        if issuer_id not in self._ca.issuer_ids:
            raise KeyError(issuer_id)
        with self._lock:
            generation = self._revocations.value()
            cached = self._cache.get(issuer_id)
            if (
                cached is not None
                and cached.generation == generation
                and self._clock.monotonic() - cached.built_at < self._max_age
            ):
                return cached.der
            revoked = self._status_source.list_revoked(issuer_id, self._clock.now())
            der = self._ca.build_crl(issuer_id, revoked)
            self._cache[issuer_id] = _CachedCrl(
                der=der, built_at=self._clock.monotonic(), generation=generation
            )
            return der


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=PROBLEM_TYPE,
    )


def _not_found(detail: str) -> JSONResponse:
    return _problem(404, "Not Found", detail)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _canonical_serial(text: str) -> str | None:
    """The stored form of a serial from a URL, or None if it cannot be one of ours."""
    if not _SERIAL_PATH_RE.fullmatch(text):
        return None
    value = int(text, 16)
    if value <= 0 or value.bit_length() > SERIAL_BYTES * 8:
        return None
    return serial_to_string(value)


# Path indices: a few digits, no sign. Starlette's {n:int} would hand
# 5,000-digit numbers to int(), which Python 3.11 refuses with ValueError.
_INDEX_RE = re.compile(r"[0-9]{1,4}")


def _index(request: Request) -> int | None:
    text = request.path_params["n"]
    if not isinstance(text, str) or not _INDEX_RE.fullmatch(text):
        return None
    return int(text)


def _status_document(record: CertificateRecord, now: datetime) -> dict[str, Any]:
    # Pebble's shape: Status, Serial, Reason, RevokedAt, Certificate; then
    # what RFC 9773 adds: which order replaced it, and the window ARI serves.
    revoked = record.status == CERT_REVOKED
    window = suggested_window(record, now)
    return {
        "Status": "Revoked" if revoked else "Valid",
        "Serial": record.serial,
        "Reason": record.revocation_reason if revoked else None,
        "RevokedAt": (
            _rfc3339(record.revoked_at) if revoked and record.revoked_at is not None else None
        ),
        "Certificate": _pem(x509.load_der_x509_certificate(record.der)),
        "ReplacedBy": record.replaced_by_order,
        "RenewalWindow": {
            "start": _rfc3339(window.start),
            "end": _rfc3339(window.end),
            "source": window.source,
        },
    }


def _parse_window(body: bytes) -> tuple[datetime, datetime] | str:
    """``{"start": RFC 3339, "end": RFC 3339}`` → (start, end), or what is wrong."""
    try:
        doc = strict_json_loads(body)
    except ValueError as exc:
        return f"body is not JSON: {exc}"
    if not isinstance(doc, dict) or set(doc) != {"start", "end"}:
        return 'body must have exactly the fields "start" and "end"'
    try:
        start, end = parse_rfc3339(doc["start"]), parse_rfc3339(doc["end"])
    except MessageError as exc:
        return str(exc)
    if not start < end:
        return "the window must end after it starts (RFC 9773 §4.2)"
    return start, end


def build_management_app(
    ca: CertificateAuthority,
    hierarchy: Hierarchy,
    status_source: CertificateStatusSource,
    clock: Clock,
    *,
    crl_publisher: CrlPublisher | None = None,
    renewal_windows: RenewalWindowStore | None = None,
) -> Starlette:
    """The management ASGI app. ``app.state.crl_publisher`` is its :class:`CrlPublisher`.

    Pass ``crl_publisher`` to share one publisher with the RA; otherwise one is
    created, and the RA can reach it through :func:`invalidate_crl`. Without
    ``renewal_windows`` the ``/renewal-info`` routes answer 404.
    """
    publisher = crl_publisher or CrlPublisher(ca, status_source, clock)
    issuers = {issuer.id: issuer for issuer in hierarchy.issuers}

    async def root(request: Request) -> Response:
        n = _index(request)
        if n is None or n >= len(hierarchy.roots):
            return _not_found(f"no root {n}")
        return Response(_pem(hierarchy.roots[n]), media_type=PEM_CHAIN_TYPE)

    async def intermediate(request: Request) -> Response:
        n = _index(request)
        if n is None or n >= len(hierarchy.issuers):
            return _not_found(f"no intermediate {n}")
        # The default chain's first certificate is the one that signed the leaf.
        return Response(_pem(hierarchy.issuers[n].chains[0][0]), media_type=PEM_CHAIN_TYPE)

    async def aia(request: Request) -> Response:
        issuer = issuers.get(request.path_params["issuer_id"])
        if issuer is None:
            return _not_found("unknown issuer")
        der = issuer.cert.public_bytes(serialization.Encoding.DER)
        return Response(der, media_type=PKIX_CERT_TYPE)

    async def crl(request: Request) -> Response:
        issuer_id = request.path_params["issuer_id"]
        if issuer_id not in issuers:
            return _not_found("unknown issuer")
        # The SA read and the signature are blocking work: keep them off the loop.
        der = await run_in_threadpool(publisher.crl_der, issuer_id)
        return Response(der, media_type=PKIX_CRL_TYPE)

    async def cert_status(request: Request) -> Response:
        serial = _canonical_serial(request.path_params["serial"])
        if serial is None:
            return _not_found("no certificate with that serial")
        record = await run_in_threadpool(status_source.get_certificate, serial)
        if record is None:
            return _not_found("no certificate with that serial")
        return JSONResponse(_status_document(record, clock.now()))

    async def renewal_window(request: Request) -> Response:
        serial = _canonical_serial(request.path_params["serial"])
        if renewal_windows is None or serial is None:
            return _not_found("no certificate with that serial")
        start: datetime | None = None
        end: datetime | None = None
        if request.method == "POST":
            body = await _read_limited(request, MAX_WINDOW_BODY_BYTES)
            parsed = None if body is None else _parse_window(body)
            if parsed is None:
                return _problem(413, "Payload Too Large", "a window body is two timestamps")
            if isinstance(parsed, str):
                return _problem(400, "Bad Request", parsed)
            start, end = parsed
        try:
            record = await run_in_threadpool(
                renewal_windows.set_renewal_window, serial, start, end
            )
        except StaleState:
            return _not_found("no certificate with that serial")
        return JSONResponse(_status_document(record, clock.now()))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {404: "Not Found", 405: "Method Not Allowed"}
        response = _problem(
            exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail or "")
        )
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Never a traceback on the wire; the details go to the log.
        log.exception("management API error on %s", request.url.path, exc_info=exc)
        return _problem(500, "Internal Server Error", "internal error")

    routes = [
        Route("/roots/{n}", root, methods=["GET"]),
        Route("/intermediates/{n}", intermediate, methods=["GET"]),
        Route("/aia/{issuer_id}.der", aia, methods=["GET"]),
        Route("/crl/{issuer_id}.crl", crl, methods=["GET"]),
        Route("/cert-status-by-serial/{serial}", cert_status, methods=["GET"]),
        Route("/renewal-info/{serial}", renewal_window, methods=["POST", "DELETE"]),
        Route("/health", health, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
    app.state.crl_publisher = publisher
    return app


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes (stop reading
    there instead of buffering whatever a client keeps sending)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def invalidate_crl(app: Starlette, issuer_id: str) -> None:
    """Make the next CRL fetch for ``issuer_id`` rebuild it (call after a revocation)."""
    publisher = app.state.crl_publisher
    assert isinstance(publisher, CrlPublisher)
    publisher.invalidate_crl(issuer_id)
