"""Initial schema: accounts, EAB keys, authorizations, challenges, orders, certificates.

Written out literally (not imported from schema.py) so this revision keeps
meaning what it meant when later revisions change the tables. Timestamps are
BigInteger microseconds since the epoch, UTC.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_thumbprint", sa.String(128), nullable=False),
        sa.Column("jwk_json", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("contact_json", sa.Text, nullable=False),
        sa.Column("tos_agreed", sa.Boolean, nullable=False),
        sa.Column("eab_kid", sa.String(128), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ux_accounts_key_thumbprint", "accounts", ["key_thumbprint"], unique=True)

    op.create_table(
        "eab_keys",
        sa.Column("kid", sa.String(128), primary_key=True),
        sa.Column("hmac_key", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=True),
    )

    op.create_table(
        "authorizations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("identifier_type", sa.String(16), nullable=False),
        sa.Column("identifier_value", sa.String(255), nullable=False),
        sa.Column("wildcard", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_authorizations_reuse",
        "authorizations",
        ["account_id", "identifier_value", "identifier_type", "wildcard", "created_at"],
    )

    op.create_table(
        "challenges",
        sa.Column("authz_id", sa.String(64), sa.ForeignKey("authorizations.id"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("token", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("validated_at", sa.BigInteger, nullable=True),
        sa.Column("error_json", sa.Text, nullable=True),
        sa.Column("validation_json", sa.Text, nullable=True),
    )

    op.create_table(
        "orders",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("identifiers_json", sa.Text, nullable=False),
        sa.Column("identifiers_key", sa.String(64), nullable=False),
        sa.Column("authz_ids_json", sa.Text, nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("not_before", sa.BigInteger, nullable=True),
        sa.Column("not_after", sa.BigInteger, nullable=True),
        sa.Column("expires", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("finalize_state", sa.String(16), nullable=False),
        sa.Column("error_json", sa.Text, nullable=True),
        sa.Column("certificate_serial", sa.String(64), nullable=True),
        sa.Column("replaces", sa.String(255), nullable=True),
    )
    op.create_index("ux_orders_id", "orders", ["id"], unique=True)
    op.create_index("ix_orders_account_seq", "orders", ["account_id", "seq"])
    op.create_index("ix_orders_reuse", "orders", ["account_id", "identifiers_key"])

    op.create_table(
        "certificates",
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("issuer_id", sa.String(128), nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=False),
        sa.Column("names_json", sa.Text, nullable=False),
        sa.Column("not_before", sa.BigInteger, nullable=False),
        sa.Column("not_after", sa.BigInteger, nullable=False),
        sa.Column("key_spki_sha256", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("revocation_reason", sa.Integer, nullable=True),
    )
    op.create_index("ix_certificates_crl", "certificates", ["issuer_id", "status", "not_after"])
    op.create_index("ix_certificates_key", "certificates", ["key_spki_sha256"])
    op.create_index("ix_certificates_order", "certificates", ["order_id"])


def downgrade() -> None:
    op.drop_table("certificates")
    op.drop_table("orders")
    op.drop_table("challenges")
    op.drop_table("authorizations")
    op.drop_table("eab_keys")
    op.drop_table("accounts")
