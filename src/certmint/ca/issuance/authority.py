"""The certificate authority (Boulder's CA): signs subscriber certificates.

It trusts the RA for *whether* to issue (identifiers validated, validity
within policy) and owns *how*: serials, the certificate profile, chains and
the CRL shard each certificate names (CRLs themselves: ``issuance/crl.py``).
Time comes from the injected ``Clock`` and serials from the injected
``Entropy`` (DESIGN.md §2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from certmint.ca.config import ProfileConfig
from certmint.ca.issuance.crl import DEFAULT_CRL_SHARDS, crl_url_for, shard_for_serial
from certmint.ca.issuance.hierarchy import Hierarchy, IssuerMaterial
from certmint.ca.issuance.lint import IssuanceExpectation, SubscriberLinter
from certmint.ca.issuance.profile import (
    common_name_for,
    new_serial,
    serial_to_string,
    subscriber_certificate_builder,
    truncate_to_seconds,
)
from certmint.ca.issuance.signing import sign_certificate
from certmint.runtime import Clock, Entropy


@dataclass(frozen=True)
class IssuanceConfig:
    crl_base_url: str  # e.g. "http://127.0.0.1:15000/crl/"
    aia_base_url: str  # e.g. "http://127.0.0.1:15000/aia/"
    default_validity: timedelta = timedelta(days=90)
    # Clients with slow clocks must not see a certificate from the future.
    backdate: timedelta = timedelta(hours=1)
    # CRL shards per issuer; each certificate's CRL DP names its shard's URL.
    crl_shards: int = DEFAULT_CRL_SHARDS
    # The optional OCSP responder's URL for the AIA (serve --ocsp); None = none.
    ocsp_url: str | None = None


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str  # lowercase hex, 36 digits (see profile.serial_to_string)
    der: bytes
    issuer_id: str
    not_before: datetime
    not_after: datetime
    crl_shard: int | None = None  # the CRL shard its CRL DP names (issuance/crl.py)


def _require_aware(name: str, when: datetime | None) -> None:
    if when is not None and when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


class CertificateAuthority:
    def __init__(
        self,
        hierarchy: Hierarchy,
        config: IssuanceConfig,
        clock: Clock,
        entropy: Entropy,
        *,
        linter: SubscriberLinter | None = None,
    ) -> None:
        if not hierarchy.issuers:
            raise ValueError("the hierarchy has no issuers")
        self._hierarchy = hierarchy
        self._config = config
        self._clock = clock
        self._entropy = entropy
        # Every subscriber certificate is linted before the issuing key signs
        # it; app.py passes the linter for the deployment's policy.
        self._linter = linter if linter is not None else SubscriberLinter.for_unit_use()
        self._issuers: dict[str, IssuerMaterial] = {i.id: i for i in hierarchy.issuers}

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
        span: timedelta,
        issuer: x509.Certificate,
    ) -> tuple[datetime, datetime]:
        _require_aware("not_before", not_before)
        _require_aware("not_after", not_after)
        if span <= timedelta(seconds=1):
            raise ValueError("validity must be longer than one second")
        if not_before is None:
            # Backdated for slow client clocks, but never before the issuer's
            # own notBefore: a certificate lies inside its issuer's validity
            # (lint checks it), even in an intermediate's first hour.
            not_before = max(self._clock.now() - self._config.backdate, issuer.not_valid_before_utc)
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
        profile: ProfileConfig | None = None,
    ) -> IssuedCertificate:
        """Lint, then sign, a DV certificate for names the RA has already validated.

        ``not_before``/``not_after`` are used as given (the RA checked them
        against policy); otherwise notBefore is now minus the backdate and the
        certificate lasts ``validity`` (default: the profile's, else 90 days)
        inclusively. ``ip_addresses`` (RFC 8738 identifiers) become iPAddress
        SANs. ``profile`` (draft-ietf-acme-profiles) shapes the certificate
        and bounds its validity. Raises ValueError for unacceptable keys,
        names or times, and ``signing.LintError`` when lint refuses the
        certificate (the findings are logged; nothing was signed).
        """
        if isinstance(dns_names, str) or isinstance(ip_addresses, str):
            raise TypeError("dns_names and ip_addresses are sequences of names")
        # Several active intermediates: one at random per issuance, as Let's
        # Encrypt does so that nobody can pin a single intermediate.
        issuers = self._hierarchy.issuers
        issuer = issuers[self._entropy.randbelow(len(issuers)) if len(issuers) > 1 else 0]
        if validity is None:
            validity = profile.validity if profile is not None else self._config.default_validity
        start, end = self._validity(not_before, not_after, validity, issuer.cert)
        common_name = common_name_for(dns_names) if profile and profile.common_name else None
        serial = new_serial(self._entropy)
        # The certificate's CRL shard, fixed at issuance (issuance/crl.py).
        crl_shard = shard_for_serial(serial, self._config.crl_shards)
        builder = subscriber_certificate_builder(
            issuer_cert=issuer.cert,
            public_key=public_key,
            serial=serial,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            not_before=start,
            not_after=end,
            aia_issuer_url=f"{self._config.aia_base_url}{issuer.id}.der",
            crl_url=crl_url_for(self._config.crl_base_url, issuer.id, crl_shard),
            common_name=common_name,
            rsa_key_encipherment=profile is not None and profile.rsa_key_encipherment,
            ocsp_url=self._config.ocsp_url,
        )
        expected = IssuanceExpectation.of(
            issuer=issuer.cert,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            max_validity=profile.validity if profile is not None else validity,
            common_name=common_name,
            profile=profile.name if profile is not None else "",
        )
        cert = sign_certificate(builder, issuer.signer, lint=self._linter.hook(expected))
        return IssuedCertificate(
            serial=serial_to_string(serial),
            der=cert.public_bytes(serialization.Encoding.DER),
            issuer_id=issuer.id,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            crl_shard=crl_shard,
        )
