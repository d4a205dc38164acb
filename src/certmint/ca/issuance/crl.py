"""CRLs: sharded per issuer, each shard's URL in the certificates it covers.

Like Let's Encrypt since it ended OCSP, certmint publishes revocation in
partitioned ("sharded") CRLs. Each certificate is assigned one shard of its
issuer when it is issued, and that shard's URL is its CRL Distribution Point
(BR 7.1.2.11.2). The shard is Boulder's choice (issuance/cert.go): the serial
modulo the number of shards, plus one, so the assignment is uniform (serials
are random, BR 7.1) and a pure function of the certificate. Shard numbers
start at 1; shard 0 names the issuer's complete CRL.

Each shard CRL carries a critical Issuing Distribution Point naming that same
URL with onlyContainsUserCerts (RFC 5280 §5.2.5; BR 7.2.2 requires the
extension on a partitioned CRL), so a relying party can check it got the CRL
its certificate points to. The complete CRL (shard 0) lists every revoked,
unexpired certificate of the issuer and has no IDP: it is what the old
``/crl/<issuer>.crl`` URL, baked into certificates issued before sharding,
keeps serving.

Everything here is pure: the CRL updater (``ca/crl_updater.py``) decides
when, reads the entries from storage and stores the result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import CRLEntryExtensionOID

from certmint.ca.issuance.hierarchy import IssuerMaterial
from certmint.ca.issuance.profile import truncate_to_seconds
from certmint.ca.issuance.signing import CrlLint, sign_crl
from certmint.ca.storage.records import RevokedEntry
from certmint.runtime import Clock

# Shard 0 is the issuer's complete CRL (no IDP); 1..N are the partitions.
FULL_CRL = 0
DEFAULT_CRL_SHARDS = 16
MAX_CRL_SHARDS = 4096

# RFC 5280 §5.3.1 reason codes. 7 is unused; 0 (unspecified) is never encoded
# (BR 7.2.2: "If present, this extension MUST NOT be unspecified(0)").
CRL_REASONS: dict[int, x509.ReasonFlags] = {
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
# One Extension object per reason, shared by every entry that has it: with a
# million entries, building the same small object a million times shows.
_REASON_EXTENSIONS: dict[int, x509.Extension[x509.CRLReason]] = {
    code: x509.Extension(CRLEntryExtensionOID.CRL_REASON, False, x509.CRLReason(flag))
    for code, flag in CRL_REASONS.items()
}

# A serial as stored: lowercase hex of at most 20 octets (RFC 5280 §4.1.2.2).
_SERIAL_RE = re.compile(r"[0-9a-f]{1,40}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CrlConfig:
    """How CRLs are partitioned and how often they are made.

    BR 4.9.7: a CRL for subscriber certificates is reissued at least every
    seven days and its nextUpdate is at most ten days after thisUpdate.
    Let's Encrypt regenerates every few hours; certmint's default is every
    six hours, and within ``update_after_revocation`` of any revocation.
    """

    shards: int = DEFAULT_CRL_SHARDS
    interval: timedelta = timedelta(hours=6)
    update_after_revocation: timedelta = timedelta(seconds=60)
    validity: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_CRL_SHARDS:
            raise ValueError(f"CRL shards must be between 1 and {MAX_CRL_SHARDS}")
        if not timedelta(seconds=1) <= self.interval <= timedelta(days=7):
            raise ValueError("the CRL interval must be between 1 second and 7 days (BR 4.9.7)")
        if not timedelta(0) < self.update_after_revocation <= self.interval:
            raise ValueError(
                "the CRL update after a revocation must be positive and at most the interval"
            )
        if not self.interval < self.validity <= timedelta(days=10):
            raise ValueError(
                "CRL validity must exceed the interval and be at most 10 days (BR 4.9.7)"
            )


def shard_for_serial(serial: int, shards: int) -> int:
    """The shard (1..``shards``) of a certificate: Boulder's serial mod N, plus one."""
    if shards < 1:
        raise ValueError("there must be at least one shard")
    return serial % shards + 1


def crl_url_for(base_url: str, issuer_id: str, shard: int) -> str:
    """The URL of one shard's CRL: ``{base}{issuer_id}/{shard}.crl``; shard 0
    (the complete CRL) is the pre-sharding URL ``{base}{issuer_id}.crl``.
    ``base_url`` ends with a slash, e.g. ``http://ca.example/crl/``."""
    if not base_url.endswith("/"):
        raise ValueError("the CRL base URL must end with '/'")
    if shard == FULL_CRL:
        return f"{base_url}{issuer_id}.crl"
    if shard < 1:
        raise ValueError(f"no CRL shard {shard}")
    return f"{base_url}{issuer_id}/{shard}.crl"


def crl_number_for(this_update: datetime, previous: int | None) -> int:
    """Like Let's Encrypt: the CRL number is thisUpdate in microseconds since
    the epoch, so it grows across restarts and processes without shared
    state; bumped past ``previous`` so that it strictly increases (RFC 5280
    §5.2.3) even if two CRLs of one shard share an instant."""
    derived = (this_update - _EPOCH) // timedelta(microseconds=1)
    return derived if previous is None or derived > previous else previous + 1


def parse_serial(serial: str) -> int:
    """The integer behind a stored serial string; ValueError if it is not one."""
    if not _SERIAL_RE.fullmatch(serial):
        raise ValueError(f"malformed serial {serial!r}")
    return int(serial, 16)


def revoked_certificates(entries: Sequence[RevokedEntry]) -> list[x509.RevokedCertificate]:
    """The CRL entries, one per serial (RFC 5280 §5.1.2.6), dates in whole seconds."""
    seen: set[int] = set()
    out: list[x509.RevokedCertificate] = []
    for entry in entries:
        serial = parse_serial(entry.serial)
        if serial in seen:
            continue
        seen.add(serial)
        if entry.revoked_at.utcoffset() is None:
            raise ValueError("revoked_at must be timezone-aware")
        extensions: list[x509.Extension[x509.ExtensionType]] = []
        if entry.reason is not None and entry.reason != 0:
            reason = _REASON_EXTENSIONS.get(entry.reason)
            if reason is None:
                raise ValueError(f"serial {entry.serial}: invalid reason code {entry.reason}")
            extensions.append(reason)
        # The constructor takes everything at once; the chained setters would
        # copy the builder for each field.
        out.append(
            x509.RevokedCertificateBuilder(
                serial_number=serial,
                revocation_date=truncate_to_seconds(entry.revoked_at.astimezone(UTC)),
                extensions=extensions,
            ).build()
        )
    return out


def issuing_distribution_point(url: str) -> x509.IssuingDistributionPoint:
    """RFC 5280 §5.2.5 for a shard of subscriber certificates."""
    return x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        only_contains_user_certs=True,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )


def build_shard_crl(
    issuer: IssuerMaterial,
    shard: int,
    entries: Sequence[RevokedEntry],
    clock: Clock,
    *,
    base_url: str,
    number: int | None = None,
    validity: timedelta = CrlConfig.validity,
    lint: CrlLint | None = None,
) -> bytes:
    """One DER CRL of ``issuer``: shard ``shard`` (1..N) or the complete CRL
    (``FULL_CRL``), listing ``entries`` (RFC 5280 §5, BR 7.2).

    ``number`` is the cRLNumber (default: from thisUpdate, see
    ``crl_number_for``). The CRL is built, then ``lint`` runs on it (raising
    ``LintError`` refuses it), then the issuer's signer signs it
    (``signing.sign_crl``). Raises ValueError for a malformed entry."""
    now = clock.now().astimezone(UTC)
    this_update = truncate_to_seconds(now)
    if number is None:
        number = crl_number_for(now, None)
    issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder(revoked_certificates=revoked_certificates(entries))
        .issuer_name(issuer.cert.subject)
        .last_update(this_update)
        .next_update(this_update + validity)
        # RFC 5280 §5.2.3 / BR 7.2.2: cRLNumber, non-critical.
        .add_extension(x509.CRLNumber(number), critical=False)
        # RFC 5280 §5.2.1 / BR 7.2.2: AKI keyIdentifier of the signer.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    )
    if shard != FULL_CRL:
        # BR 7.2.2: a partitioned CRL MUST carry a critical IDP whose
        # distributionPoint is the URL the certificates' CRL DP names.
        idp = issuing_distribution_point(crl_url_for(base_url, issuer.id, shard))
        builder = builder.add_extension(idp, critical=True)
    crl = sign_crl(builder, issuer.signer, lint=lint)
    return crl.public_bytes(serialization.Encoding.DER)
