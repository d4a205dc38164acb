"""Engines for the two supported databases (DESIGN.md §3).

SQLite is the embedded default: WAL so readers never block the writer,
``synchronous=NORMAL`` (durable across process crashes; WAL makes a power
loss lose at most the last commits, never corrupt), foreign keys on, and a
busy timeout so a writer waits for the lock instead of failing. Every write
transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up front,
so two writers can never both hold a read snapshot and then deadlock trying
to upgrade (SQLITE_BUSY that the busy timeout cannot resolve). Reads begin
DEFERRED, or not at all when they are a single statement. This is
SQLAlchemy's documented pysqlite recipe: the driver's own BEGIN is disabled
(``isolation_level = None``) and the ``begin`` event emits ours.

PostgreSQL goes through psycopg 3; plain ``postgresql://`` is rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from certmint.ca.storage.errors import StorageError

# Execution option read by the begin hook: "IMMEDIATE" (default, writes),
# "DEFERRED" (multi-statement reads that want one snapshot) or "NONE"
# (single-statement reads: in WAL each statement is its own consistent read
# transaction, and skipping BEGIN/ROLLBACK halves a point read's cost).
SQLITE_BEGIN_OPTION = "certmint_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> URL:
    """Parse and vet a storage URL; rewrite plain PostgreSQL to psycopg 3."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
            return parsed.set(drivername="postgresql+psycopg")
        raise StorageError(f"unsupported PostgreSQL driver {parsed.drivername!r}; use psycopg")
    if backend == "sqlite":
        if parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
            raise StorageError(f"unsupported SQLite driver {parsed.drivername!r}")
        if not parsed.database or parsed.database == ":memory:":
            # Each pooled connection would get its own empty database.
            raise StorageError("SQLite storage needs a file path: sqlite:///path/to/file.db")
        return parsed
    raise StorageError(f"unsupported storage URL scheme {parsed.drivername!r}")


def create_storage_engine(url: str, *, connect_args: Mapping[str, Any] | None = None) -> Engine:
    parsed = normalise_url(url)
    args = dict(connect_args or {})
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args=args, pool_size=8, max_overflow=24)
        _install_sqlite_hooks(engine)
        return engine
    # No pool_pre_ping: it costs a round trip per checkout on the hot path; a
    # dropped server connection invalidates the whole pool on first use instead.
    return create_engine(parsed, connect_args=args)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the sqlite3 module (the documented recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        if mode == "NONE":
            return
        conn.exec_driver_sql("BEGIN DEFERRED" if mode == "DEFERRED" else "BEGIN IMMEDIATE")
