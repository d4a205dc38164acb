"""Alembic environment, driven programmatically by ``open_storage``.

No alembic.ini: the caller passes an open ``Connection`` already inside a
transaction via ``config.attributes["connection"]`` (SQLite: BEGIN IMMEDIATE,
so concurrent starters serialise; PostgreSQL: under an advisory lock), and
the migrations run inside that transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from certmint.ca.storage.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("certmint migrations run only through certmint.ca.storage.open_storage")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
