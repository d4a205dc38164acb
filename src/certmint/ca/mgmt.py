"""The management API: roots, intermediates, AIA, CRLs and certificate status.

Like Pebble's management interface it listens on its own port over plain
HTTP (DESIGN.md §2): nothing here needs a JWS, and AIA/CRL fetches must be
plain HTTP anyway (BR 7.1.2.7.7, 7.1.2.11.2 — no TLS chicken-and-egg).

Routes::

    GET /roots/{n}                 PEM of hierarchy.roots[n] (0 = default)
    GET /intermediates/{n}         PEM of the n-th issuer's default-chain certificate
    GET /aia/{issuer_id}.der       DER issuer certificate (application/pkix-cert)
    GET /crl/{issuer_id}/{shard}.crl  DER CRL of one shard (application/pkix-crl),
                                   the URL in each certificate's CRL DP
    GET /crl/{issuer_id}.crl       DER complete CRL of the issuer (the URL of
                                   certificates issued before sharding)
    GET /cert-status-by-serial/{serial}   Pebble-style JSON status, plus
                                   ReplacedBy and RenewalWindow (RFC 9773)
    POST /renewal-info/{serial}    {"start": RFC 3339, "end": RFC 3339}: the
                                   operator's ARI window for that certificate
    DELETE /renewal-info/{serial}  back to the default window
    GET /authz/{authz_id}/perspectives   each challenge's multi-perspective
                                   outcomes (BR 3.2.2.9), read-only
    POST /ocsp, GET /ocsp/{base64} OCSP (RFC 6960 §A.1), only with ``serve --ocsp``
                                   (``ca/ocsp.py``)
    GET /health

Every path segment is client input: it is matched against known values or a
strict pattern before it is used, and every error is a small JSON document.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
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
from certmint.ca.issuance.crl import FULL_CRL
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.ca.issuance.profile import SERIAL_BYTES, serial_to_string
from certmint.ca.ocsp import OcspResponder, ocsp_routes
from certmint.ca.request_body import read_limited
from certmint.ca.storage.errors import StaleState
from certmint.ca.storage.records import (
    CERT_REVOKED,
    AuthzRecord,
    CertificateRecord,
    StoredCrl,
)
from certmint.protocol.messages import MessageError, parse_rfc3339
from certmint.protocol.strictjson import strict_json_loads
from certmint.runtime import Clock

log = logging.getLogger(__name__)

PEM_CHAIN_TYPE = "application/pem-certificate-chain"  # RFC 8555 §9.1
PKIX_CERT_TYPE = "application/pkix-cert"  # RFC 2585 §4.1
PKIX_CRL_TYPE = "application/pkix-crl"  # RFC 2585 §4.2
PROBLEM_TYPE = "application/problem+json"  # RFC 7807

# Before the updater's first pass a CRL may not exist yet: ask again soon.
CRL_RETRY_AFTER_SECONDS = 1
# A shard number in a URL: a few digits, no sign, no leading zero.
_SHARD_PATH_RE = re.compile(r"[1-9][0-9]{0,3}")

# At most 20 octets (RFC 5280 §4.1.2.2), i.e. 40 hex digits.
_SERIAL_PATH_RE = re.compile(r"[0-9a-fA-F]{1,40}")
# Resource ids are base64url (ra.ID_BYTES); the column holds at most 64.
_AUTHZ_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class CertificateStatusSource(Protocol):
    """The read side of the SA that the management API needs."""

    def get_certificate(self, serial: str) -> CertificateRecord | None: ...


class AuthorizationSource(Protocol):
    """The SA read the perspectives route needs."""

    def get_authz(self, authz_id: str) -> AuthzRecord | None: ...


class RenewalWindowStore(Protocol):
    """The one SA write the management API makes (RFC 9773 operator windows)."""

    def set_renewal_window(
        self, serial: str, start: datetime | None, end: datetime | None
    ) -> CertificateRecord: ...


# A window request is two timestamps; anything bigger is not one.
MAX_WINDOW_BODY_BYTES = 1024


class CrlSource(Protocol):
    """Where the CRL updater (``ca/crl_updater.py``) stores each shard's CRL."""

    def get_crl_number(self, issuer_id: str, shard: int) -> int | None: ...

    def get_crl(self, issuer_id: str, shard: int) -> StoredCrl | None: ...


@dataclass(frozen=True)
class _CachedCrl:
    number: int
    der: bytes


class CrlPublisher:
    """Serves the CRLs the updater stored, with a per-process cache.

    Every fetch asks storage for the shard's current CRL number (one
    primary-key read) and reads the DER again only when it changed, so each
    worker process serves the updater's newest CRL at once and a big CRL
    crosses the database once per worker and version. Nothing is built
    here: building is the updater's (one process, off the serving loops).
    """

    def __init__(self, source: CrlSource, issuer_ids: Sequence[str], shards: int) -> None:
        self._source = source
        self._issuer_ids = frozenset(issuer_ids)
        self._shards = shards
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int], _CachedCrl] = {}

    def knows(self, issuer_id: str, shard: int) -> bool:
        """Whether (issuer, shard) is a CRL this CA publishes (or will)."""
        return issuer_id in self._issuer_ids and 0 <= shard <= self._shards

    def crl_der(self, issuer_id: str, shard: int) -> bytes | None:
        """The current DER CRL of one shard (0: the complete CRL), or None
        when there is none yet (or no such shard)."""
        if issuer_id not in self._issuer_ids:
            return None
        number = self._source.get_crl_number(issuer_id, shard)
        if number is None:
            return None
        key = (issuer_id, shard)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached.number == number:
            return cached.der
        stored = self._source.get_crl(issuer_id, shard)
        if stored is None:
            return None
        with self._lock:
            current = self._cache.get(key)
            if current is None or current.number < stored.crl_number:
                self._cache[key] = _CachedCrl(stored.crl_number, stored.der)
        return stored.der


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
    authorizations: AuthorizationSource | None = None,
    ocsp: OcspResponder | None = None,
) -> Starlette:
    """The management ASGI app. ``app.state.crl_publisher`` is its :class:`CrlPublisher`.

    Without ``crl_publisher`` the ``/crl`` routes answer 404. Without
    ``renewal_windows`` the ``/renewal-info`` routes answer 404, and without
    ``authorizations`` the ``/authz/.../perspectives`` route does, and
    without ``ocsp`` there is no ``/ocsp`` at all (it is off by default).
    """
    publisher = crl_publisher
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

    async def serve_crl(issuer_id: str, shard: int) -> Response:
        if publisher is None or issuer_id not in issuers:
            return _not_found("no such CRL")
        # Storage reads (a big CRL is megabytes): keep them off the loop.
        der = await run_in_threadpool(publisher.crl_der, issuer_id, shard)
        if der is not None:
            return Response(der, media_type=PKIX_CRL_TYPE)
        if not publisher.knows(issuer_id, shard):
            return _not_found("no such CRL")
        # The updater builds every shard on its first pass, within a second.
        response = _problem(503, "Service Unavailable", "this CRL has not been built yet")
        response.headers["Retry-After"] = str(CRL_RETRY_AFTER_SECONDS)
        return response

    async def complete_crl(request: Request) -> Response:
        # The pre-sharding URL, baked into certificates issued before
        # revision 0004: the issuer's complete CRL (no IDP).
        return await serve_crl(request.path_params["issuer_id"], FULL_CRL)

    async def shard_crl(request: Request) -> Response:
        text = request.path_params["shard"]
        if not isinstance(text, str) or not _SHARD_PATH_RE.fullmatch(text):
            return _not_found("no such CRL")
        return await serve_crl(request.path_params["issuer_id"], int(text))

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
            body = await read_limited(request, MAX_WINDOW_BODY_BYTES)
            parsed = None if body is None else _parse_window(body)
            if parsed is None:
                return _problem(413, "Payload Too Large", "a window body is two timestamps")
            if isinstance(parsed, str):
                return _problem(400, "Bad Request", parsed)
            start, end = parsed
        try:
            record = await run_in_threadpool(renewal_windows.set_renewal_window, serial, start, end)
        except StaleState:
            return _not_found("no certificate with that serial")
        return JSONResponse(_status_document(record, clock.now()))

    async def perspectives(request: Request) -> Response:
        # Read-only operator view of BR 3.2.2.9 corroboration; like Boulder,
        # the ACME authorization JSON does not carry it.
        authz_id = request.path_params["authz_id"]
        if authorizations is None or not _AUTHZ_ID_RE.fullmatch(authz_id):
            return _not_found("no authorization with that id")
        authz = await run_in_threadpool(authorizations.get_authz, authz_id)
        if authz is None:
            return _not_found("no authorization with that id")
        return JSONResponse(
            {
                "authorization": authz.id,
                "challenges": [
                    {
                        "type": c.type,
                        "status": c.status,
                        "perspectives": (
                            [] if c.perspectives_json is None else json.loads(c.perspectives_json)
                        ),
                    }
                    for c in authz.challenges
                ],
            }
        )

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
        Route("/crl/{issuer_id}.crl", complete_crl, methods=["GET"]),
        Route("/crl/{issuer_id}/{shard}.crl", shard_crl, methods=["GET"]),
        Route("/cert-status-by-serial/{serial}", cert_status, methods=["GET"]),
        Route("/renewal-info/{serial}", renewal_window, methods=["POST", "DELETE"]),
        Route("/authz/{authz_id}/perspectives", perspectives, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    if ocsp is not None:
        routes += ocsp_routes(ocsp)
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
    app.state.crl_publisher = publisher
    return app
