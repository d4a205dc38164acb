"""Values that cross the SA's door (DESIGN.md §2): frozen, never live rows.

Every datetime is timezone-aware UTC. Ids are opaque URL-safe strings chosen by
the RA from ``Entropy`` (so a seeded test run is reproducible); the SA never
invents ids except the pagination sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Account.status values (RFC 8555 §7.1.2).
ACCOUNT_VALID = "valid"
ACCOUNT_DEACTIVATED = "deactivated"
ACCOUNT_REVOKED = "revoked"

# Stored authorization / challenge statuses (RFC 8555 §7.1.6). "expired" is
# never stored: it is derived on read from ``expires`` and now.
PENDING = "pending"
PROCESSING = "processing"
VALID = "valid"
INVALID = "invalid"
DEACTIVATED = "deactivated"
REVOKED = "revoked"

# Order.finalize_state: the only order state that is stored; the order's
# status is derived from it, its authorizations and now (protocol.status).
FINALIZE_NONE = "none"
FINALIZE_PROCESSING = "processing"
FINALIZE_VALID = "valid"
FINALIZE_INVALID = "invalid"

CERT_GOOD = "good"
CERT_REVOKED = "revoked"


@dataclass(frozen=True)
class AccountRecord:
    id: str
    key_thumbprint: str  # RFC 7638 SHA-256 thumbprint, base64url; unique
    jwk_json: str  # the public JWK as canonical JSON text
    status: str
    contact: tuple[str, ...]
    tos_agreed: bool
    eab_kid: str | None
    created_at: datetime


@dataclass(frozen=True)
class EabKeyRecord:
    kid: str
    hmac_key: bytes
    created_at: datetime
    account_id: str | None  # set once, when an account binds it


@dataclass(frozen=True)
class ChallengeRecord:
    id: str
    authz_id: str
    type: str  # "http-01", "dns-01", "tls-alpn-01"
    token: str
    status: str  # pending | processing | valid | invalid
    validated_at: datetime | None = None
    error_json: str | None = None  # RFC 7807 problem document, JSON text
    validation_json: str | None = None  # validation record, JSON text
    # Each VA perspective's outcome (BR 3.2.2.9), a JSON list; None when the
    # CA validates from one perspective only.
    perspectives_json: str | None = None


@dataclass(frozen=True)
class AuthzRecord:
    id: str
    account_id: str
    identifier_type: str  # "dns" (later "ip")
    identifier_value: str  # normalised; for a wildcard order, the base name
    wildcard: bool
    status: str  # pending | valid | invalid | deactivated | revoked
    expires: datetime
    created_at: datetime
    challenges: tuple[ChallengeRecord, ...]


@dataclass(frozen=True)
class OrderRecord:
    id: str
    account_id: str
    identifiers: tuple[tuple[str, str], ...]  # sorted (type, value) pairs
    authz_ids: tuple[str, ...]  # one per identifier, same order
    profile: str
    not_before: datetime | None
    not_after: datetime | None
    expires: datetime
    created_at: datetime
    finalize_state: str = FINALIZE_NONE
    error_json: str | None = None
    certificate_serial: str | None = None
    replaces: str | None = None
    seq: int = 0  # assigned by the SA at insert; stable pagination cursor


@dataclass(frozen=True)
class CertificateRecord:
    serial: str  # lowercase hex, no leading zeros stripped beyond DER's own
    account_id: str
    order_id: str
    issuer_id: str  # which issuing intermediate signed it
    der: bytes
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    key_spki_sha256: str  # hex SHA-256 of the subject public key info (DER)
    issued_at: datetime
    status: str = CERT_GOOD
    revoked_at: datetime | None = None
    revocation_reason: int | None = None
    # RFC 9773 (ARI): an operator's renewal window for this certificate (both
    # or neither), overriding the default rule in ``ca/ari.py``.
    ari_window_start: datetime | None = None
    ari_window_end: datetime | None = None
    # RFC 9773 §5: the order whose finalization replaced this certificate.
    replaced_by_order: str | None = None
    # The CRL shard (1..N) its CRL Distribution Point names; None for
    # certificates issued before sharding (they name the complete CRL).
    crl_shard: int | None = None


@dataclass(frozen=True)
class RevokedEntry:
    serial: str
    revoked_at: datetime
    reason: int | None


# Where a blocked key came from (BlockedKeyRecord.source).
BLOCKED_BY_REVOCATION = "revocation"  # revoked through ACME, signed by the key
BLOCKED_BY_ADMIN = "admin"  # certmint-ca admin revoke --key-file


@dataclass(frozen=True)
class BlockedKeyRecord:
    """A key refused for accounts and certificates (BR 6.1.1.3)."""

    key_spki_sha256: str  # hex SHA-256 of the SubjectPublicKeyInfo (DER)
    added_at: datetime
    source: str  # BLOCKED_BY_REVOCATION | BLOCKED_BY_ADMIN
    comment: str | None = None
    revoked_serial: str | None = None  # the revocation that blocked it, if any


@dataclass(frozen=True)
class KeyRevocation:
    """What revoking every certificate of one key changed (one transaction)."""

    revoked: tuple[str, ...]  # serials that were good and are now revoked
    reason_updated: tuple[str, ...]  # already revoked, now for keyCompromise
    newly_blocked: bool  # False if the key was already blocked


@dataclass(frozen=True)
class CrlShardState:
    """Bookkeeping for one (issuer, shard) CRL; shard 0 is the complete CRL."""

    issuer_id: str
    shard: int
    crl_number: int | None  # None until a CRL was stored
    this_update: datetime | None
    next_update: datetime | None
    entries: int | None
    dirty_version: int  # bumped by every revocation that touches the shard
    dirty_since: datetime | None  # first revocation not yet in the stored CRL
    leased_until: datetime | None


@dataclass(frozen=True)
class StoredCrl:
    issuer_id: str
    shard: int
    crl_number: int
    this_update: datetime
    next_update: datetime
    der: bytes
