"""The certificate authority (Boulder's CA): signs subscriber certificates and CRLs.

It trusts the RA for *whether* to issue (identifiers validated, validity
within policy) and owns *how*: serials, the certificate profile, chains and
CRLs. Time comes from the injected ``Clock`` and serials from the injected
``Entropy`` (DESIGN.md §2).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from certmint.ca.issuance.hierarchy import Hierarchy, IssuerMaterial
from certmint.ca.issuance.profile import (
    build_subscriber_certificate,
    new_serial,
    serial_to_string,
    signature_hash,
    truncate_to_seconds,
)
from certmint.ca.storage.records import RevokedEntry
from certmint.runtime import Clock, Entropy

# BR 4.9.7: nextUpdate at most ten days after thisUpdate; Let's Encrypt, like
# us, publishes with a seven-day window and regenerates far more often.
CRL_VALIDITY = timedelta(days=7)

# RFC 5280 §5.3.1 reason codes. 7 is unused; 0 (unspecified) is never encoded
# (BR 7.2.2: "If present, this extension MUST NOT be unspecified(0)").
_CRL_REASONS: dict[int, x509.ReasonFlags] = {
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}

# A serial as stored: lowercase hex of at most 20 octets (RFC 5280 §4.1.2.2).
_SERIAL_RE = re.compile(r"[0-9a-f]{1,40}")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class IssuanceConfig:
    crl_base_url: str  # e.g. "http://127.0.0.1:15000/crl/"
    aia_base_url: str  # e.g. "http://127.0.0.1:15000/aia/"
    default_validity: timedelta = timedelta(days=90)
    # Clients with slow clocks must not see a certificate from the future.
    backdate: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str  # lowercase hex, 36 digits (see profile.serial_to_string)
    der: bytes
    issuer_id: str
    not_before: datetime
    not_after: datetime


def parse_serial(serial: str) -> int:
    """The integer behind a stored serial string; ValueError if it is not one."""
    if not _SERIAL_RE.fullmatch(serial):
        raise ValueError(f"malformed serial {serial!r}")
    return int(serial, 16)


def _require_aware(name: str, when: datetime | None) -> None:
    if when is not None and when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


class CertificateAuthority:
    def __init__(
        self, hierarchy: Hierarchy, config: IssuanceConfig, clock: Clock, entropy: Entropy
    ) -> None:
        if not hierarchy.issuers:
            raise ValueError("the hierarchy has no issuers")
        self._hierarchy = hierarchy
        self._config = config
        self._clock = clock
        self._entropy = entropy
        self._issuers: dict[str, IssuerMaterial] = {i.id: i for i in hierarchy.issuers}
        # Guards _last_crl_number: CRLs may be built from several threads.
        self._crl_lock = threading.Lock()
        self._last_crl_number: dict[str, int] = {}

    @property
    def issuer_ids(self) -> tuple[str, ...]:
        return tuple(issuer.id for issuer in self._hierarchy.issuers)

    def _issuer(self, issuer_id: str) -> IssuerMaterial:
        try:
            return self._issuers[issuer_id]
        except KeyError:
            raise KeyError(f"unknown issuer {issuer_id!r}") from None

    def issuer_cert(self, issuer_id: str) -> x509.Certificate:
        return self._issuer(issuer_id).cert

    def chains_pem(self, issuer_id: str) -> tuple[str, ...]:
        """Each chain as PEM text: intermediates only (no leaf, no root), default first."""
        return tuple(
            "".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in chain)
            for chain in self._issuer(issuer_id).chains
        )

    def _validity(
        self,
        not_before: datetime | None,
        not_after: datetime | None,
        validity: timedelta | None,
    ) -> tuple[datetime, datetime]:
        _require_aware("not_before", not_before)
        _require_aware("not_after", not_after)
        span = validity if validity is not None else self._config.default_validity
        if span <= timedelta(seconds=1):
            raise ValueError("validity must be longer than one second")
        if not_before is None:
            not_before = self._clock.now() - self._config.backdate
        start = truncate_to_seconds(not_before.astimezone(UTC))
        if not_after is None:
            # BR 7.1.2.7 / RFC 5280 §4.1.2.5: validity includes both ends, so
            # a 90-day certificate ends one second before start + 90 days.
            end = start + span - timedelta(seconds=1)
        else:
            end = truncate_to_seconds(not_after.astimezone(UTC))
        if end <= start:
            raise ValueError("not_after must be later than not_before")
        return start, end

    def issue(
        self,
        *,
        public_key: CertificatePublicKeyTypes,
        dns_names: Sequence[str],
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        validity: timedelta | None = None,
        ip_addresses: Sequence[str] = (),
    ) -> IssuedCertificate:
        """Sign a DV certificate for names the RA has already validated.

        ``not_before``/``not_after`` are used as given (the RA checked them
        against policy); otherwise notBefore is now minus the backdate and the
        certificate lasts ``validity`` (default 90 days) inclusively.
        ``ip_addresses`` (RFC 8738 identifiers) become iPAddress SANs.
        Raises ValueError for unacceptable keys, names or times.
        """
        if isinstance(dns_names, str) or isinstance(ip_addresses, str):
            raise TypeError("dns_names and ip_addresses are sequences of names")
        # Only E1 today; when there are several (RSA and ECDSA, like Let's
        # Encrypt's R and E series) this is where the choice goes.
        issuer = self._hierarchy.issuers[0]
        start, end = self._validity(not_before, not_after, validity)
        serial = new_serial(self._entropy)
        cert = build_subscriber_certificate(
            issuer_cert=issuer.cert,
            issuer_key=issuer.key,
            public_key=public_key,
            serial=serial,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            not_before=start,
            not_after=end,
            aia_issuer_url=f"{self._config.aia_base_url}{issuer.id}.der",
            crl_url=f"{self._config.crl_base_url}{issuer.id}.crl",
        )
        return IssuedCertificate(
            serial=serial_to_string(serial),
            der=cert.public_bytes(serialization.Encoding.DER),
            issuer_id=issuer.id,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    def _next_crl_number(self, issuer_id: str, this_update: datetime) -> int:
        # Like Let's Encrypt: the CRL number is thisUpdate in microseconds
        # since the epoch, so it increases across restarts and replicas
        # without shared state (RFC 5280 §5.2.3 wants it monotonic). The
        # remembered maximum keeps it strictly increasing within a process
        # even if two CRLs are built in the same microsecond.
        derived = (this_update - _EPOCH) // timedelta(microseconds=1)
        with self._crl_lock:
            number = max(derived, self._last_crl_number.get(issuer_id, 0) + 1)
            self._last_crl_number[issuer_id] = number
        return number

    def build_crl(self, issuer_id: str, revoked: Sequence[RevokedEntry]) -> bytes:
        """A complete DER CRL for one issuer (RFC 5280 §5, BR 7.2)."""
        issuer = self._issuer(issuer_id)
        now = self._clock.now().astimezone(UTC)
        number = self._next_crl_number(issuer_id, now)
        this_update = truncate_to_seconds(now)
        issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.cert.subject)
            .last_update(this_update)
            .next_update(this_update + CRL_VALIDITY)
            # RFC 5280 §5.2.3 / BR 7.2.2: cRLNumber, non-critical.
            .add_extension(x509.CRLNumber(number), critical=False)
            # RFC 5280 §5.2.1 / BR 7.2.2: AKI keyIdentifier of the signer.
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                critical=False,
            )
        )
        seen: set[int] = set()
        for entry in revoked:
            serial = parse_serial(entry.serial)
            if serial in seen:  # a serial is listed once (RFC 5280 §5.1.2.6)
                continue
            seen.add(serial)
            _require_aware("revoked_at", entry.revoked_at)
            revoked_builder = (
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(truncate_to_seconds(entry.revoked_at.astimezone(UTC)))
            )
            if entry.reason is not None and entry.reason != 0:
                flag = _CRL_REASONS.get(entry.reason)
                if flag is None:
                    raise ValueError(f"serial {entry.serial}: invalid reason code {entry.reason}")
                revoked_builder = revoked_builder.add_extension(
                    x509.CRLReason(flag), critical=False
                )
            builder = builder.add_revoked_certificate(revoked_builder.build())
        crl = builder.sign(issuer.key, signature_hash(issuer.key))
        return crl.public_bytes(serialization.Encoding.DER)
