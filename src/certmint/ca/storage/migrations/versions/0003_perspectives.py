"""Multi-perspective corroboration (BR 3.2.2.9): each perspective's outcome.

One nullable TEXT column on ``challenges``: ``perspectives``, a JSON list of
``{"region", "valid", "problemType"?, "detail"?}`` written with the
validation result. NULL for challenges validated before this revision or by a
CA without remote perspectives, so existing rows need no backfill.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column: plain ALTER TABLE … ADD COLUMN on SQLite and PostgreSQL.
    op.add_column("challenges", sa.Column("perspectives", sa.Text, nullable=True))


def downgrade() -> None:
    # SQLite drops columns only through a table copy: batch mode does that.
    with op.batch_alter_table("challenges") as batch:
        batch.drop_column("perspectives")
