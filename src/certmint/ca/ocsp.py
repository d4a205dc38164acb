"""An optional OCSP responder (RFC 6960), off by default.

Let's Encrypt ended OCSP in 2025 and certmint publishes revocation in CRLs;
this responder is for operators of private CAs whose relying parties still
ask OCSP. ``certmint-ca serve --ocsp`` turns it on: the management port then
answers ``POST /ocsp`` and ``GET /ocsp/{base64 request}`` (RFC 6960 §A.1),
and subscriber certificates carry that URL in their AIA.

Shape of an answer (one per request, RFC 5019 §2.1.1's single-request
profile, which is also all ``cryptography`` parses):

- the request names an issuer by hashes of its name and key (RFC 6960
  §4.1.1 CertID); an issuer we do not serve → ``unauthorized`` (RFC 6960
  §2.3, RFC 5019 §2.2.3);
- the serial's status comes from storage: ``good``, ``revoked`` with its
  time and reason, or ``unknown`` for a serial this issuer never issued
  (RFC 6960 §2.2);
- thisUpdate is now (the injected clock), nextUpdate four days later (BR
  4.9.10: between eight hours and ten days);
- a request nonce is echoed (RFC 9654, which obsoletes RFC 8954 and allows
  1 to 128 octets; any other length is ``malformedRequest``);
- anything that does not parse, or is too big, is ``malformedRequest``; a
  storage or signing failure is ``internalError``. Never a traceback.

Responses are signed by a delegated responder (RFC 6960 §4.2.2.2): per
issuer, a certificate with id-kp-OCSPSigning, id-pkix-ocsp-nocheck and a
short validity (BR 7.1.2.8), its key a fresh P-256 key that lives only in
this process's memory. The issuer signs it through ``signing.sign_certificate``
like every other certificate; it is re-issued well before it expires.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from certmint.ca.issuance.crl import CRL_REASONS
from certmint.ca.issuance.hierarchy import IssuerMaterial
from certmint.ca.issuance.lint import PkilintTls
from certmint.ca.issuance.profile import (
    SERIAL_BYTES,
    key_usage,
    new_serial,
    serial_to_string,
    truncate_to_seconds,
)
from certmint.ca.issuance.signing import CertificateLint, LintError, SigningError, sign_certificate
from certmint.ca.request_body import read_limited
from certmint.ca.storage.records import CERT_REVOKED, CertificateRecord
from certmint.runtime import Clock, Entropy

log = logging.getLogger(__name__)

OCSP_REQUEST_TYPE = "application/ocsp-request"  # RFC 6960 §A.1
OCSP_RESPONSE_TYPE = "application/ocsp-response"

# A single-request OCSPRequest is about 100 bytes (more with a nonce, a
# requestorName or a signature and its certificates); 8 KiB leaves room for
# those and refuses bodies that are not OCSP at all.
MAX_REQUEST_BYTES = 8 * 1024

# BR 4.9.10: a response's validity interval is at least eight hours and at
# most ten days; we sign every response fresh, so four days is plenty.
RESPONSE_VALIDITY = timedelta(days=4)
# RFC 6960 §4.2.2.2.1: with id-pkix-ocsp-nocheck nobody checks the responder
# certificate's own status, so it must be short-lived. It is re-issued once
# less than a response's validity (and a day's margin) remains, so no
# response outlives the certificate that signed it.
RESPONDER_VALIDITY = timedelta(days=10)
RESPONDER_RENEW_BEFORE = RESPONSE_VALIDITY + timedelta(days=1)
# Relying parties with slow clocks must not see a responder from the future.
RESPONDER_BACKDATE = timedelta(hours=1)

# RFC 9654 §2.1: a nonce is 1 to 128 octets; other lengths are refused with
# malformedRequest.
NONCE_MAX_OCTETS = 128

# What GET responses may be cached for (RFC 5019 §6.2 wants caching headers):
# one minute, like the CRL cache, so a revocation shows within a minute.
GET_CACHE_SECONDS = 60

# CertID hash algorithms we can match (RFC 6960 §4.1.1; SHA-1 is what most
# clients, openssl included, still send).
_CERT_ID_HASHES: tuple[hashes.HashAlgorithm, ...] = (
    hashes.SHA1(),  # noqa: S303 - an identifier (RFC 5019 §2.1.1 mandates it), not a signature
    hashes.SHA224(),
    hashes.SHA256(),
    hashes.SHA384(),
    hashes.SHA512(),
)


class CertificateLookup(Protocol):
    """The one SA read the responder needs."""

    def get_certificate(self, serial: str) -> CertificateRecord | None: ...


@dataclass(frozen=True)
class OcspAnswer:
    der: bytes  # a DER OCSPResponse
    # "good", "revoked", "unknown", or the unsuccessful responseStatus
    # ("malformedRequest", "unauthorized", "internalError").
    outcome: str
    # May an HTTP cache keep it (a successful answer to a request without
    # a nonce: a cached nonce would not match the next client's)?
    cacheable: bool = False


@dataclass(frozen=True)
class _Responder:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _unsuccessful(status: ocsp.OCSPResponseStatus, outcome: str) -> OcspAnswer:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return OcspAnswer(response.public_bytes(serialization.Encoding.DER), outcome)


def _malformed() -> OcspAnswer:
    return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformedRequest")


def _key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value, which issuerKeyHash hashes
    (RFC 6960 §4.1.1: "excluding the tag and length fields")."""
    public_key = cert.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    raise ValueError(f"issuing keys are RSA or ECDSA, not {type(public_key).__name__}")


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize()


def _responder_name(issuer: x509.Certificate) -> x509.Name:
    # The issuer's country and organization, and a commonName that says
    # what this certificate is for.
    kept = [a for a in issuer.subject if a.oid != NameOID.COMMON_NAME]
    common = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    base = str(common[0].value) if common else "certmint"
    return x509.Name([*kept, x509.NameAttribute(NameOID.COMMON_NAME, f"{base} OCSP Responder")])


def responder_certificate_builder(
    *,
    issuer_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """A delegated OCSP responder certificate (RFC 6960 §4.2.2.2, BR 7.1.2.8)."""
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(issuer_cert.subject)
        .subject_name(_responder_name(issuer_cert))
        .public_key(public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # BR 7.1.2.8.4: if present, cA FALSE.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # BR 7.1.2.8.7: digitalSignature only, critical.
        .add_extension(
            key_usage(digital_signature=True),
            critical=True,
        )
        # RFC 6960 §4.2.2.2 / BR 7.1.2.8.5: id-kp-OCSPSigning and nothing else;
        # that is what makes it a delegated responder for this issuer.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        # RFC 6960 §4.2.2.2.1 / BR 7.1.2.8.6: id-pkix-ocsp-nocheck.
        .add_extension(x509.OCSPNoCheck(), critical=False)
        # BR 7.1.2.8.2: authorityKeyIdentifier MUST, subjectKeyIdentifier SHOULD.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def lint_responder_certificate(draft: x509.Certificate) -> None:
    """The default lint hook for responder certificates: pkilint's BR 7.1.2.8
    checks; any warning or error refuses (``LintError``), nothing is signed."""
    der = draft.public_bytes(serialization.Encoding.DER)
    # BR 7.1.2.8's profile; the responder certificate is signed by an
    # issuing key, so it is linted first like every other certificate.
    findings = PkilintTls.shared("OCSP_RESPONDER").findings(der)
    refusals = tuple(str(f) for f in findings if f.refuses)
    if refusals:
        raise LintError("OCSP responder certificate", refusals)


class OcspResponder:
    """Answers OCSP requests for the CA's issuers from storage."""

    def __init__(
        self,
        issuers: Sequence[IssuerMaterial],
        certificates: CertificateLookup,
        clock: Clock,
        entropy: Entropy,
        *,
        lint: CertificateLint = lint_responder_certificate,
    ) -> None:
        if not issuers:
            raise ValueError("an OCSP responder needs at least one issuer")
        self._issuers = {issuer.id: issuer for issuer in issuers}
        self._certificates = certificates
        self._clock = clock
        self._entropy = entropy
        self._lint = lint
        # (hash name, issuerNameHash, issuerKeyHash) → issuer id (RFC 6960 §4.1.1).
        self._cert_ids: dict[tuple[str, bytes, bytes], str] = {}
        for issuer in issuers:
            name_der = issuer.cert.subject.public_bytes()
            key_bits = _key_bits(issuer.cert)
            for algorithm in _CERT_ID_HASHES:
                key = (algorithm.name, _digest(algorithm, name_der), _digest(algorithm, key_bits))
                self._cert_ids[key] = issuer.id
        # Responder certificates are made on first use and renewed under
        # this lock, so racing requests never sign two at once.
        self._lock = threading.Lock()
        self._responders: dict[str, _Responder] = {}

    def responder_certificate(self, issuer_id: str) -> x509.Certificate:
        """The current responder certificate for ``issuer_id`` (made if needed)."""
        return self._responder(self._issuers[issuer_id]).cert

    def respond(self, request_der: bytes) -> OcspAnswer:
        """The DER OCSPResponse for a DER OCSPRequest. Never raises."""
        try:
            return self._respond(request_der)
        except Exception:  # a bug must still answer in OCSP, and be logged
            log.exception("OCSP responder error")
            return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR, "internalError")

    def _respond(self, request_der: bytes) -> OcspAnswer:
        if len(request_der) > MAX_REQUEST_BYTES:
            return _malformed()
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            algorithm = request.hash_algorithm
            name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
            serial = request.serial_number
            extensions = request.extensions
        except (ValueError, NotImplementedError, UnsupportedAlgorithm):
            # Not DER, not an OCSPRequest, several requests in one (RFC 5019
            # §2.1.1 allows one; cryptography parses only that), an unknown
            # hash, or a malformed extension.
            return _malformed()
        nonce: bytes | None = None
        for extension in extensions:
            if isinstance(extension.value, x509.OCSPNonce):
                nonce = extension.value.nonce
            elif extension.critical:
                return _malformed()  # a critical extension we do not understand
        if nonce is not None and not 1 <= len(nonce) <= NONCE_MAX_OCTETS:
            return _malformed()  # RFC 9654 §2.1

        issuer_id = self._cert_ids.get((algorithm.name, name_hash, key_hash))
        if issuer_id is None:
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized")
        issuer = self._issuers[issuer_id]

        record: CertificateRecord | None = None
        if 0 < serial < 2 ** (SERIAL_BYTES * 8):  # else never one of ours
            try:
                record = self._certificates.get_certificate(serial_to_string(serial))
            except Exception:
                log.exception("OCSP: storage lookup of serial %x failed", serial)
                return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR, "internalError")

        revoked_at: datetime | None = None
        reason: x509.ReasonFlags | None = None
        if record is None or record.issuer_id != issuer.id:
            # RFC 6960 §2.2: "unknown" — this issuer never issued it.
            status, outcome = ocsp.OCSPCertStatus.UNKNOWN, "unknown"
        elif record.status == CERT_REVOKED:
            status, outcome = ocsp.OCSPCertStatus.REVOKED, "revoked"
            # The SA always records the time; never answer "good" without it.
            when = record.revoked_at or record.issued_at
            revoked_at = truncate_to_seconds(when.astimezone(UTC))
            code = record.revocation_reason
            # The CRL's table, so OCSP and the CRL say the same thing (0 omitted).
            reason = CRL_REASONS.get(code) if code is not None else None
        else:
            status, outcome = ocsp.OCSPCertStatus.GOOD, "good"

        try:
            responder = self._responder(issuer)
        except (SigningError, LintError):
            log.exception("OCSP: cannot issue a responder certificate for %s", issuer.id)
            return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR, "internalError")

        this_update = truncate_to_seconds(self._clock.now().astimezone(UTC))
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash,
                issuer_key_hash=key_hash,
                serial_number=serial,
                algorithm=algorithm,
                cert_status=status,
                this_update=this_update,
                next_update=this_update + RESPONSE_VALIDITY,
                revocation_time=revoked_at,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.cert)
            # The responder certificate travels with the response so that a
            # client holding the issuer can verify it (RFC 6960 §4.2.2.2).
            .certificates([responder.cert])
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        # The responder key is not an issuing key, so the lint-before-sign
        # rule (signing.py) does not apply: this signs a status statement,
        # not a certificate or CRL. producedAt is set by cryptography from
        # the system clock, the only time here not from the injected Clock.
        response = builder.sign(responder.key, hashes.SHA256())
        return OcspAnswer(
            response.public_bytes(serialization.Encoding.DER), outcome, cacheable=nonce is None
        )

    def _responder(self, issuer: IssuerMaterial) -> _Responder:
        now = self._clock.now().astimezone(UTC)
        with self._lock:
            current = self._responders.get(issuer.id)
            if current is None or now >= current.cert.not_valid_after_utc - RESPONDER_RENEW_BEFORE:
                current = self._issue_responder(issuer, now)
                self._responders[issuer.id] = current
            return current

    def _issue_responder(self, issuer: IssuerMaterial, now: datetime) -> _Responder:
        key = ec.generate_private_key(ec.SECP256R1())
        not_before = truncate_to_seconds(now - RESPONDER_BACKDATE)
        # RFC 5280 §4.1.2.5 counts validity inclusively: end one second early.
        not_after = not_before + RESPONDER_VALIDITY - timedelta(seconds=1)
        builder = responder_certificate_builder(
            issuer_cert=issuer.cert,
            public_key=key.public_key(),
            serial=new_serial(self._entropy),
            not_before=not_before,
            not_after=not_after,
        )
        cert = sign_certificate(builder, issuer.signer, self._lint)
        # Not stored with subscriber certificates (nocheck: nobody asks its
        # status), so the log is its record.
        log.info(
            "issued OCSP responder certificate %s for issuer %s, valid until %s",
            serial_to_string(cert.serial_number),
            issuer.id,
            cert.not_valid_after_utc.isoformat(),
        )
        return _Responder(cert=cert, key=key)


# -- HTTP (RFC 6960 §A.1) -----------------------------------------------------


def decode_get_request(encoded: str) -> bytes | None:
    """The DER request from a GET path segment, or None.

    RFC 6960 §A.1: the URL-encoding of the base64 of the DER. The server has
    already undone the URL-encoding; some clients send base64url or drop
    the padding, which costs nothing to accept.
    """
    if not encoded or len(encoded) > MAX_REQUEST_BYTES * 4 // 3 + 4:
        return None
    text = encoded.replace("-", "+").replace("_", "/").replace(" ", "+")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _http_answer(answer: OcspAnswer, *, get: bool) -> Response:
    # OCSP errors are OCSP responses with HTTP 200 (RFC 6960 §2.3, §A.1):
    # clients read the responseStatus, not the HTTP status.
    headers: dict[str, str] = {}
    if get and answer.cacheable:
        headers["Cache-Control"] = f"max-age={GET_CACHE_SECONDS}, public, no-transform"
    else:
        headers["Cache-Control"] = "no-store"
    return Response(answer.der, media_type=OCSP_RESPONSE_TYPE, headers=headers)


def ocsp_routes(responder: OcspResponder) -> list[Route]:
    """``POST /ocsp`` and ``GET /ocsp/{base64}`` for the management app."""

    async def post(request: Request) -> Response:
        body = await read_limited(request, MAX_REQUEST_BYTES)
        if body is None:
            return _http_answer(_malformed(), get=False)
        # The SA read and the signatures are blocking work: off the loop.
        answer = await run_in_threadpool(responder.respond, body)
        return _http_answer(answer, get=False)

    async def get(request: Request) -> Response:
        der = decode_get_request(request.path_params["encoded"])
        if der is None:
            return _http_answer(_malformed(), get=True)
        answer = await run_in_threadpool(responder.respond, der)
        return _http_answer(answer, get=True)

    return [
        Route("/ocsp", post, methods=["POST"]),
        # base64 has "/" in it, and not every client escapes it: take the rest of the path.
        Route("/ocsp/{encoded:path}", get, methods=["GET"]),
    ]
