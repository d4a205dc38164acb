"""ACME Renewal Information (ARI, RFC 9773): renewal windows,
and the checks behind newOrder's ``replaces``.

Certificate ids live in ``protocol.renewal_info`` (the agent sends them too);
re-exported here. The pure part (``default_window``,
``immediate_window``, ``suggested_window``) has no I/O and no clock of its own;
``RenewalInfoService`` adds the SA and the issuers, and is what the RA and the
WFE call. The window rule is documented in ``docs/divergences.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from certmint.ca import errors
from certmint.ca.issuance.profile import serial_to_string
from certmint.ca.storage.records import CERT_REVOKED, CertificateRecord
from certmint.ca.storage.sa import StorageAuthority
from certmint.protocol.renewal_info import (
    CertId,
    cert_id_of,
    encode_cert_id,
    parse_cert_id,
)
from certmint.runtime import Clock

__all__ = [
    "RETRY_AFTER_SECONDS",
    "CertId",
    "RenewalInfoService",
    "RenewalWindow",
    "cert_id_of",
    "default_window",
    "encode_cert_id",
    "immediate_window",
    "parse_cert_id",
    "suggested_window",
]

# RFC 9773 §4.3: a client SHOULD poll again after Retry-After; Let's Encrypt
# and Boulder answer six hours, which is also certbot's default.
RETRY_AFTER_SECONDS = 6 * 60 * 60

# Boulder's RenewalInfoSimple: renew a third of the lifetime before expiry,
# within ±1 % of the lifetime around that instant.
_RENEW_BEFORE_EXPIRY_FRACTION = 3
_WINDOW_HALF_WIDTH_FRACTION = 100
# Boulder's RenewalInfoImmediately: a 30-minute window that ended 30 minutes
# ago, so every client sees "renew now" (RFC 9773 §4.2: a window in the past
# means renew immediately).
_IMMEDIATE_START_AGO = timedelta(hours=1)
_IMMEDIATE_WIDTH = timedelta(minutes=30)
_ONE_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class RenewalWindow:
    """RFC 9773 §4.2 ``suggestedWindow``: both ends aware UTC, start < end."""

    start: datetime
    end: datetime
    source: str  # "default" | "operator" | "revoked": why this window


def default_window(not_before: datetime, not_after: datetime) -> RenewalWindow:
    """Boulder's rule: the ideal renewal instant is a third of the lifetime
    before notAfter (day 60 of a 90-day certificate); the window spans ±1 % of
    the lifetime around it (±21.6 hours for 90 days), whole seconds.

    The lifetime counts notAfter inclusively (RFC 5280 §4.1.2.5), as Boulder does.
    """
    lifetime = not_after + _ONE_SECOND - not_before
    ideal = not_after - lifetime / _RENEW_BEFORE_EXPIRY_FRACTION
    margin = lifetime / _WINDOW_HALF_WIDTH_FRACTION
    start = _whole_seconds(ideal - margin)
    end = max(_whole_seconds(ideal + margin), start + _ONE_SECOND)
    return RenewalWindow(start=start, end=end, source="default")


def immediate_window(now: datetime) -> RenewalWindow:
    """A window wholly in the past: every client renews at once (RFC 9773 §4.2)."""
    start = _whole_seconds(now - _IMMEDIATE_START_AGO)
    return RenewalWindow(start=start, end=start + _IMMEDIATE_WIDTH, source="revoked")


def suggested_window(cert: CertificateRecord, now: datetime) -> RenewalWindow:
    """The window the CA suggests for ``cert`` now.

    A revoked certificate must be replaced now, whatever else was said; an
    operator's window (incidents, tests) comes next; otherwise the default.
    """
    if cert.status == CERT_REVOKED:
        return immediate_window(now)
    if cert.ari_window_start is not None and cert.ari_window_end is not None:
        return RenewalWindow(cert.ari_window_start, cert.ari_window_end, source="operator")
    return default_window(cert.not_before, cert.not_after)


def _whole_seconds(when: datetime) -> datetime:
    return when.replace(microsecond=0)


class RenewalInfoService:
    """Looks certificates up by certificate identifier for the renewalInfo
    resource (RFC 9773 §4) and vets newOrder's ``replaces`` (§5)."""

    def __init__(
        self, *, sa: StorageAuthority, issuer_key_ids: dict[bytes, str], clock: Clock
    ) -> None:
        # AKI keyIdentifier → issuer id: only our own issuers' ids resolve.
        self._sa = sa
        self._issuer_key_ids = dict(issuer_key_ids)
        self._clock = clock

    @staticmethod
    def issuer_key_ids(issuers: dict[str, x509.Certificate]) -> dict[bytes, str]:
        """Map each issuer's Subject Key Identifier (what its leaves carry as
        AKI keyIdentifier) to its issuer id."""
        found: dict[bytes, str] = {}
        for issuer_id, cert in issuers.items():
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            found[ski.digest] = issuer_id
        return found

    def _certificate(self, cert_id: CertId) -> CertificateRecord | None:
        issuer_id = self._issuer_key_ids.get(cert_id.key_identifier)
        if issuer_id is None:
            return None
        cert = self._sa.get_certificate(serial_to_string(cert_id.serial))
        # The serial must also have been signed by the issuer the AKI names.
        if cert is None or cert.issuer_id != issuer_id:
            return None
        return cert

    def renewal_window(self, cert_id_text: str) -> RenewalWindow:
        """The suggested window for the certificate a path names.

        Malformed (400) if the identifier does not parse; NotFound (404) if it
        names no certificate of ours — including an AKI of another CA.
        """
        try:
            cert_id = parse_cert_id(cert_id_text)
        except ValueError as exc:
            raise errors.Malformed(f"invalid certificate identifier: {exc}") from None
        cert = self._certificate(cert_id)
        if cert is None:
            raise errors.NotFound("no certificate of this CA has that identifier")
        return suggested_window(cert, self._clock.now())

    def check_replacement(
        self, account_id: str, identifiers: tuple[tuple[str, str], ...], replaces: str
    ) -> CertificateRecord:
        """RFC 9773 §5: the certificate ``replaces`` names must be ours, issued
        to this account, share an identifier with the new order, and not be
        replaced already. Returns it; raises the matching ACME error."""
        try:
            cert_id = parse_cert_id(replaces)
        except ValueError as exc:
            raise errors.Malformed(f"invalid replaces value: {exc}") from None
        cert = self._certificate(cert_id)
        if cert is None:
            raise errors.Malformed("replaces names no certificate issued by this CA")
        if cert.account_id != account_id:
            raise errors.Unauthorized(
                "the certificate named by replaces belongs to another account"
            )
        ordered = {value.lower() for _, value in identifiers}
        if not ordered & {name.lower() for name in cert.names}:
            raise errors.Malformed(
                "the order shares no identifier with the certificate it replaces"
            )
        if cert.replaced_by_order is not None:
            raise errors.AlreadyReplaced(
                f"certificate {cert.serial} was already replaced by another order"
            )
        return cert

    def check_not_replaced(self, replaces: str, order_id: str) -> str:
        """At finalize: the serial to mark replaced, unless another order got
        there first (then AlreadyReplaced, and nothing is issued)."""
        try:
            cert_id = parse_cert_id(replaces)
        except ValueError as exc:  # vetted at newOrder; a stored value stays valid
            raise errors.ServerInternal(f"stored replaces value is invalid: {exc}") from None
        cert = self._certificate(cert_id)
        if cert is None:
            raise errors.ServerInternal("the certificate this order replaces has vanished")
        if cert.replaced_by_order not in (None, order_id):
            raise errors.AlreadyReplaced(
                f"certificate {cert.serial} was already replaced by another order"
            )
        return cert.serial
