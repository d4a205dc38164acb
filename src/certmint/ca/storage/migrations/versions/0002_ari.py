"""ACME Renewal Information (RFC 9773): renewal window override and replacement.

Three nullable columns on ``certificates``: ``ari_window_start`` and
``ari_window_end`` (an operator's suggested window, BigInteger microseconds
since the epoch, UTC, both or neither) and ``replaced_by_order`` (the order
whose finalization replaced the certificate, RFC 9773 §5). Nullable, so
existing rows need no backfill: NULL means "default window, not replaced".

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Adding a nullable column is a plain ALTER TABLE … ADD COLUMN on both
    # SQLite and PostgreSQL: no table copy, existing rows read NULL.
    op.add_column("certificates", sa.Column("ari_window_start", sa.BigInteger, nullable=True))
    op.add_column("certificates", sa.Column("ari_window_end", sa.BigInteger, nullable=True))
    op.add_column("certificates", sa.Column("replaced_by_order", sa.String(64), nullable=True))


def downgrade() -> None:
    # SQLite drops columns only through a table copy: batch mode does that.
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("replaced_by_order")
        batch.drop_column("ari_window_end")
        batch.drop_column("ari_window_start")
