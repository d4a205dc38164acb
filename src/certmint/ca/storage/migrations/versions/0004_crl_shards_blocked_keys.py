"""Revocation and sharded CRLs: each certificate's CRL shard, blocked keys,
and the CRLs themselves.

- ``certificates.crl_shard``: the shard (1..N) whose URL is the certificate's
  CRL Distribution Point, chosen at issuance. Nullable: certificates issued
  before this revision name the issuer's complete CRL (``/crl/<issuer>.crl``)
  and stay there, so existing rows need no backfill. Indexed with the issuer,
  status and notAfter: building one shard's CRL reads exactly its rows.
- ``blocked_keys``: SPKI SHA-256 digests (hex, like ``certificates.
  key_spki_sha256``) refused for accounts and certificates (BR 6.1.1.3),
  added by a key-compromise revocation or the operator, with where each came
  from (Boulder's blockedKeys table).
- ``crl_shards``: the current CRL of each (issuer, shard), shard 0 being the
  complete CRL; a revocation bumps ``dirty_version`` (and sets
  ``dirty_since``) in its own transaction, and the CRL updater takes a lease
  (``leased_until``, ``lease_token``) before it builds one, so several
  processes or hosts never build the same shard at once.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column: plain ALTER TABLE … ADD COLUMN on SQLite and PostgreSQL.
    op.add_column("certificates", sa.Column("crl_shard", sa.Integer, nullable=True))
    op.create_index(
        "ix_certificates_crl_shard",
        "certificates",
        ["issuer_id", "crl_shard", "status", "not_after"],
    )
    op.create_index("ix_certificates_account", "certificates", ["account_id", "status"])
    op.create_table(
        "blocked_keys",
        sa.Column("key_spki_sha256", sa.String(64), primary_key=True),
        sa.Column("added_at", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("revoked_serial", sa.String(64), nullable=True),
    )
    op.create_table(
        "crl_shards",
        sa.Column("issuer_id", sa.String(128), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("crl_number", sa.BigInteger, nullable=True),
        sa.Column("this_update", sa.BigInteger, nullable=True),
        sa.Column("next_update", sa.BigInteger, nullable=True),
        sa.Column("entries", sa.Integer, nullable=True),
        sa.Column("der", sa.LargeBinary, nullable=True),
        sa.Column("dirty_version", sa.BigInteger, nullable=False),
        sa.Column("dirty_since", sa.BigInteger, nullable=True),
        sa.Column("leased_until", sa.BigInteger, nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("crl_shards")
    op.drop_table("blocked_keys")
    op.drop_index("ix_certificates_account", table_name="certificates")
    op.drop_index("ix_certificates_crl_shard", table_name="certificates")
    # SQLite drops columns only through a table copy: batch mode does that.
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("crl_shard")
