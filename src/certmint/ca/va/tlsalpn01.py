"""tls-alpn-01 validation: RFC 8737, CA/B Forum BR 3.2.2.4.20.

The VA opens TLS to port 443 offering only the ALPN protocol ``acme-tls/1``
with SNI set to the name being validated, and checks the self-signed
certificate it gets: exactly one subjectAltName, equal to the identifier, and
a critical acmeIdentifier extension carrying SHA-256 of the key authorization
(RFC 8737 §3). Certificate chains are not verified: control is proven by the
extension, not by any trust anchor.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from dataclasses import dataclass

from cryptography import x509

from certmint.ca.va.addresses import AddressPolicy, parse_ip
from certmint.ca.va.http01 import connection_problem, unauthorized_problem
from certmint.ca.va.model import VAConfig, ValidationRecord, ValidationResult
from certmint.ca.va.resolver import DnsLookupError, VAResolver, plan_dial
from certmint.protocol.challenges import (
    ACME_TLS_ALPN_PROTOCOL,
    ID_PE_ACME_IDENTIFIER,
    tls_alpn01_extension_value,
)
from certmint.protocol.problems import Problem, ProblemType

_WRONG_CERT = "Incorrect validation certificate for tls-alpn-01 challenge."


@dataclass(frozen=True)
class _DialFailure:
    """Connecting failed: the one case where the next address is tried."""

    problem: Problem


def tls_problem(detail: str) -> Problem:
    return Problem(type=ProblemType.TLS, detail=detail, status=400)


def alpn_refused(where: str) -> Problem:
    """The server did not select ``acme-tls/1`` (RFC 8737 §3 requires it).

    Whether it refused with a no_application_protocol alert (RFC 7301 §3.2),
    which fails the handshake, or silently went on without ALPN, the fault is
    the same and so is the problem: ``tls``. Boulder reports the silent case
    as ``unauthorized``; see docs/divergences.md.
    """
    return tls_problem(
        f'{where}: Cannot negotiate ALPN protocol "{ACME_TLS_ALPN_PROTOCOL}" '
        "for tls-alpn-01 challenge: the server there must select it and present "
        "the challenge certificate (RFC 8737 §3); a proxy or CDN that terminates "
        "TLS in front of it cannot"
    )


def ssl_error_text(exc: ssl.SSLError) -> str:
    """OpenSSL's reason for a failed handshake, for the detail: Python has no
    ``reason`` name for newer alerts (no_application_protocol), so fall back
    to the message without its "[SSL]" prefix and source location."""
    if exc.reason:
        return str(exc.reason)
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    text = re.sub(r"^\[[A-Z0-9_]+\]\s*", "", text)
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)
    return text[:120] or "unknown reason"


def build_tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # RFC 8737 §4: "ACME servers ... MUST NOT" negotiate below TLS 1.2.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_ALPN_PROTOCOL])
    return context


def sni_for(host: str) -> str:
    """RFC 8738 §6: an IP identifier's SNI is its reverse-DNS name."""
    address = parse_ip(host)
    return address.reverse_pointer if address is not None else host


def check_certificate(host: str, der: bytes, key_authorization: str, where: str) -> Problem | None:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return unauthorized_problem(f"{_WRONG_CERT} {where} sent a certificate that does not parse")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return unauthorized_problem(f"{_WRONG_CERT} {where} sent a certificate without SANs")
    names = list(san)
    address = parse_ip(host)
    if address is not None:
        wanted: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address))
    else:
        wanted = x509.DNSName(host)
    matches = (
        len(names) == 1
        and type(names[0]) is type(wanted)
        and str(names[0].value).lower() == str(wanted.value).lower()
    )
    if not matches:
        shown = ", ".join(str(n.value) for n in names[:5])
        return unauthorized_problem(
            f"{_WRONG_CERT} Requested {host} from {where}. "
            f'Received a certificate with names "{shown}"; exactly one, {host}, is required'
        )
    try:
        extension = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    except (x509.ExtensionNotFound, ValueError):
        return unauthorized_problem(
            f"{_WRONG_CERT} Missing acmeIdentifier extension: the certificate from {where} "
            f"must carry it ({ID_PE_ACME_IDENTIFIER.dotted_string}, RFC 8737 §3)"
        )
    if not extension.critical:
        return unauthorized_problem(
            f"{_WRONG_CERT} The acmeIdentifier extension of the certificate from {where} "
            "is not critical; RFC 8737 §3 requires it to be"
        )
    value = getattr(extension.value, "value", b"")
    expected = tls_alpn01_extension_value(key_authorization)
    if value != expected:
        return unauthorized_problem(
            f"{_WRONG_CERT} Invalid acmeIdentifier extension value in the certificate from "
            f"{where}. Expected {expected[2:].hex()}, the SHA-256 of this challenge's key "
            f"authorization (got {bytes(value)[2:34].hex()})"
        )
    return None


class TlsAlpn01Validator:
    def __init__(self, config: VAConfig, resolver: VAResolver) -> None:
        self._config = config
        self._resolver = resolver
        self._policy = AddressPolicy.for_config(config)
        self._tls = build_tls_context()

    async def validate(self, host: str, key_authorization: str) -> ValidationResult:
        port = self._config.tlsalpn01_port
        record = ValidationRecord(
            url=None, hostname=host, port=port, addresses_resolved=(), address_used=None
        )
        try:
            async with asyncio.timeout(self._config.total_timeout):
                problem, record = await self._run(host, key_authorization, record)
        except TimeoutError:
            problem = connection_problem(
                f"{record.address_used or host}: Timeout during tls-alpn-01 validation"
            )
        return ValidationResult(valid=problem is None, problem=problem, records=(record,))

    async def _run(
        self, host: str, key_authorization: str, record: ValidationRecord
    ) -> tuple[Problem | None, ValidationRecord]:
        plan = await plan_dial(self._resolver, host, allow_private=True)
        if isinstance(plan, DnsLookupError):
            return plan.problem, record
        plan = self._policy.restrict(plan, host)
        record = ValidationRecord(
            url=None,
            hostname=host,
            port=record.port,
            addresses_resolved=plan.resolved,
            address_used=None,
        )
        if plan.refusal is not None:
            return connection_problem(plan.refusal), record
        problem: Problem | None = None
        for address in plan.candidates:
            record = ValidationRecord(
                url=None,
                hostname=host,
                port=record.port,
                addresses_resolved=plan.resolved,
                address_used=address,
            )
            outcome = await self._handshake(host, address, record.port)
            if isinstance(outcome, _DialFailure):
                problem = outcome.problem
                continue  # fall back to the IPv4 address only when dialling failed
            if isinstance(outcome, Problem):
                return outcome, record
            der, alpn = outcome
            where = f"{address}:{record.port}"
            if alpn != ACME_TLS_ALPN_PROTOCOL:
                return alpn_refused(where), record
            return check_certificate(host, der, key_authorization, where), record
        return problem, record

    async def _handshake(
        self, host: str, address: str, port: int
    ) -> tuple[bytes, str | None] | Problem | _DialFailure:
        where = f"{address}:{port}"
        try:
            async with asyncio.timeout(self._config.connect_timeout):
                _reader, writer = await asyncio.open_connection(
                    address, port, ssl=self._tls, server_hostname=sni_for(host)
                )
        except ConnectionRefusedError:
            return _DialFailure(connection_problem(f"{where}: Connection refused"))
        except TimeoutError:
            return _DialFailure(
                connection_problem(f"{where}: Timeout during connect (likely firewall problem)")
            )
        except ssl.SSLError as exc:
            reason = ssl_error_text(exc)
            if "no application protocol" in reason.lower().replace("_", " "):
                return alpn_refused(where)
            return tls_problem(
                f"{where}: Error getting validation data: TLS handshake failed ({reason})"
            )
        except OSError:
            return _DialFailure(
                connection_problem(f"{where}: Error getting validation data: could not connect")
            )
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass  # the peer's manners on close are irrelevant to the result
        if not der:
            return tls_problem(f"{where}: Error getting validation data: no certificate")
        return bytes(der), alpn
