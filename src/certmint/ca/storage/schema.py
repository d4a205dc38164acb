"""The one schema, as SQLAlchemy Core tables (DESIGN.md §3).

Migrations (``migrations/versions``) create exactly these tables; a contract
test compares the two so they cannot drift.

Timestamps are BigInteger microseconds since the Unix epoch, UTC: portable
across SQLite and PostgreSQL, index-friendly, and cheap to convert. Tuples are
JSON text. Ids are opaque strings chosen by the RA.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """Aware datetime → integer microseconds since the epoch (exact, no float)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to storage; use timezone-aware UTC")
    return (value - EPOCH) // _ONE_MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


class MicroTimestamp(TypeDecorator[datetime]):
    """An aware UTC datetime stored as BigInteger microseconds."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        return None if value is None else to_micros(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else from_micros(int(value))


metadata = MetaData()

# SQLite: INTEGER PRIMARY KEY is the rowid (cheap, monotonic while nothing is
# deleted). PostgreSQL: BIGSERIAL.
_SEQ_TYPE = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    # RFC 7638 thumbprint; unique so two racing creators end with one account.
    Column("key_thumbprint", String(128), nullable=False),
    Column("jwk_json", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("contact_json", Text, nullable=False),
    Column("tos_agreed", Boolean, nullable=False),
    Column("eab_kid", String(128), nullable=True),
    Column("created_at", MicroTimestamp, nullable=False),
    Index("ux_accounts_key_thumbprint", "key_thumbprint", unique=True),
)

eab_keys = Table(
    "eab_keys",
    metadata,
    Column("kid", String(128), primary_key=True),
    Column("hmac_key", LargeBinary, nullable=False),
    Column("created_at", MicroTimestamp, nullable=False),
    # Set once, by the transaction that creates the binding account.
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=True),
)

authorizations = Table(
    "authorizations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=False),
    Column("identifier_type", String(16), nullable=False),
    Column("identifier_value", String(255), nullable=False),
    Column("wildcard", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires", MicroTimestamp, nullable=False),
    Column("created_at", MicroTimestamp, nullable=False),
    # Authorization reuse looks up by account + identifier, newest first.
    Index(
        "ix_authorizations_reuse",
        "account_id",
        "identifier_value",
        "identifier_type",
        "wildcard",
        "created_at",
    ),
)

challenges = Table(
    "challenges",
    metadata,
    Column("authz_id", String(64), ForeignKey("authorizations.id"), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("position", Integer, nullable=False),  # keeps the RA's order on read
    Column("type", String(32), nullable=False),
    Column("token", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("validated_at", MicroTimestamp, nullable=True),
    Column("error_json", Text, nullable=True),
    Column("validation_json", Text, nullable=True),
    # Multi-perspective corroboration (BR 3.2.2.9): every perspective's
    # outcome, a JSON list; NULL for a single-perspective VA (migration 0003).
    Column("perspectives", Text, nullable=True),
)

orders = Table(
    "orders",
    metadata,
    Column("seq", _SEQ_TYPE, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=False),
    Column("identifiers_json", Text, nullable=False),
    # SHA-256 of the canonical identifier set: a fixed-size key for order
    # reuse (a Text key could exceed PostgreSQL's B-tree row limit).
    Column("identifiers_key", String(64), nullable=False),
    Column("authz_ids_json", Text, nullable=False),
    Column("profile", String(64), nullable=False),
    Column("not_before", MicroTimestamp, nullable=True),
    Column("not_after", MicroTimestamp, nullable=True),
    Column("expires", MicroTimestamp, nullable=False),
    Column("created_at", MicroTimestamp, nullable=False),
    Column("finalize_state", String(16), nullable=False),
    Column("error_json", Text, nullable=True),
    Column("certificate_serial", String(64), nullable=True),
    Column("replaces", String(255), nullable=True),
    Index("ux_orders_id", "id", unique=True),
    Index("ix_orders_account_seq", "account_id", "seq"),
    Index("ix_orders_reuse", "account_id", "identifiers_key"),
)

certificates = Table(
    "certificates",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("issuer_id", String(128), nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("names_json", Text, nullable=False),
    Column("not_before", MicroTimestamp, nullable=False),
    Column("not_after", MicroTimestamp, nullable=False),
    Column("key_spki_sha256", String(64), nullable=False),
    Column("issued_at", MicroTimestamp, nullable=False),
    Column("status", String(16), nullable=False),
    Column("revoked_at", MicroTimestamp, nullable=True),
    Column("revocation_reason", Integer, nullable=True),
    # RFC 9773 (ARI), revision 0002: the operator's renewal window override
    # and the order that replaced this certificate (set once, at its finalize).
    Column("ari_window_start", MicroTimestamp, nullable=True),
    Column("ari_window_end", MicroTimestamp, nullable=True),
    Column("replaced_by_order", String(64), nullable=True),
    # Revision 0004: the CRL shard (1..N) named by the certificate's CRL
    # Distribution Point; NULL for certificates issued before sharding, which
    # name the issuer's complete CRL.
    Column("crl_shard", Integer, nullable=True),
    # CRL generation: revoked certificates of one issuer still unexpired.
    Index("ix_certificates_crl", "issuer_id", "status", "not_after"),
    # ... and of one shard of one issuer.
    Index("ix_certificates_crl_shard", "issuer_id", "crl_shard", "status", "not_after"),
    # certmint-ca admin revoke --account.
    Index("ix_certificates_account", "account_id", "status"),
    # Key-compromise revocation and blocked-key checks look up by key.
    Index("ix_certificates_key", "key_spki_sha256"),
    Index("ix_certificates_order", "order_id"),
)

# Keys refused for accounts and certificates (BR 6.1.1.3): the SHA-256 of the
# SubjectPublicKeyInfo, hex (like certificates.key_spki_sha256), and where
# the block came from (Boulder's blockedKeys). Revision 0004.
blocked_keys = Table(
    "blocked_keys",
    metadata,
    Column("key_spki_sha256", String(64), primary_key=True),
    Column("added_at", MicroTimestamp, nullable=False),
    Column("source", String(32), nullable=False),  # "revocation" | "admin"
    Column("comment", Text, nullable=True),
    Column("revoked_serial", String(64), nullable=True),
)

# The current CRL of each (issuer, shard); shard 0 is the complete CRL.
# Revocations bump dirty_version / set dirty_since in their own transaction;
# the CRL updater leases a row (leased_until + its token) while it builds.
# Revision 0004.
crl_shards = Table(
    "crl_shards",
    metadata,
    Column("issuer_id", String(128), primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("crl_number", BigInteger, nullable=True),
    Column("this_update", MicroTimestamp, nullable=True),
    Column("next_update", MicroTimestamp, nullable=True),
    Column("entries", Integer, nullable=True),
    Column("der", LargeBinary, nullable=True),
    Column("dirty_version", BigInteger, nullable=False),
    Column("dirty_since", MicroTimestamp, nullable=True),
    Column("leased_until", MicroTimestamp, nullable=True),
    Column("lease_token", String(64), nullable=True),
)
