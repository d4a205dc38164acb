"""The Storage Authority (DESIGN.md §2, §3): ``open_storage(url)`` and its errors.

    sa = open_storage("sqlite:///var/lib/certmint/ca.db")        # embedded default
    sa = open_storage("postgresql+psycopg://ca@db:5432/certmint")  # production

Opening runs the Alembic migrations up to head, so a fresh file or an empty
database is ready to use and an old one is upgraded in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from certmint.ca.storage.engine import create_storage_engine
from certmint.ca.storage.errors import (
    AlreadyReplaced,
    DuplicateSerial,
    EabKeyUnavailable,
    KeyInUse,
    StaleState,
    StorageError,
)
from certmint.ca.storage.sa import StorageAuthority

__all__ = [
    "AlreadyReplaced",
    "DuplicateSerial",
    "EabKeyUnavailable",
    "KeyInUse",
    "StaleState",
    "StorageAuthority",
    "StorageError",
    "migrate",
    "open_storage",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same for every certmint process.
_PG_MIGRATION_LOCK_ID = 0x63_65_72_74_6D_69_6E_74  # "certmint"


def migrate(engine: Engine) -> None:
    """Run ``alembic upgrade head`` in one transaction on ``engine``.

    Concurrent starters (N worker processes) are serialised: SQLite by the
    write lock BEGIN IMMEDIATE takes, PostgreSQL by a transaction-scoped
    advisory lock, so only the first one migrates and the rest find head.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK_ID})")
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def open_storage(url: str, *, connect_args: Mapping[str, Any] | None = None) -> StorageAuthority:
    """Create the engine for ``url``, migrate it to head, and return the SA.

    ``url``: ``sqlite:///path/to/file.db`` or ``postgresql+psycopg://user@host:port/db``
    (plain ``postgresql://`` is rewritten to psycopg 3). ``connect_args`` go to
    the driver's connect (e.g. ``{"options": "-csearch_path=myschema"}``).
    """
    engine = create_storage_engine(url, connect_args=connect_args)
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return StorageAuthority(engine)
