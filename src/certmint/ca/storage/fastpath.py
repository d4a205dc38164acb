"""Core statements compiled once, executed on raw DBAPI connections: the SA's hot path.

Why: a profile of the CA under load put ~24 % of its CPU in SQLAlchemy's
per-execution Python (execution context, compiled-cache lookup, parameter
processing, begin/commit events, result rows) and only ~5 % in the database
calls themselves. The SA's statements never change, so this module does that
work once per statement instead of once per call:

- ``prepare`` compiles a Core statement with the engine's own dialect and
  keeps what an execution needs: the SQL text, the parameter order for
  positional drivers (SQLite's ``?``), the values the statement carries
  itself (``status = 'pending'``), and the column types' bind and result
  processors. SQLAlchemy Core still builds every statement and still defines
  every conversion (``MicroTimestamp``, booleans); only the per-call
  machinery is skipped.
- ``RawDatabase`` runs prepared statements on DBAPI connections it takes out
  of the engine's pool once (so the engine's connect hooks, the SQLite
  pragmas and ``connect_args``, still apply) and then keeps in its own
  stack. A connection is used by one thread at a time; there are as many as
  there were concurrent calls.

Transactions (DESIGN.md §2: one SA method, one transaction): connections run
in autocommit, so a single-statement read is its own transaction (in WAL a
consistent snapshot; on PostgreSQL one READ COMMITTED statement). A write is
bracketed explicitly: SQLite ``BEGIN IMMEDIATE`` takes the write lock up
front, so two writers (threads or worker processes) never both hold a read
snapshot and then deadlock upgrading it; the busy timeout makes a second
writer wait for the lock instead of failing. PostgreSQL gets a plain
``BEGIN``; row locks come from the statements (``FOR UPDATE``).

Forking: nothing here exists before ``open_storage`` and connections are
opened on first use. A ``RawDatabase`` refuses to run in a process other than
the one that created it: SQLite and libpq connections must not cross a fork.

Driver errors are re-raised as SQLAlchemy's (``sqlalchemy.exc.IntegrityError``
…), the same exceptions the Connection path raised.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from certmint.ca.storage.engine import SQLITE_BUSY_TIMEOUT_MS
from certmint.ca.storage.errors import StorageError

Processor = Callable[[Any], Any]
# A result row: a named tuple whose fields are the statement's result column
# keys, so ``rows.*_from_row`` read it exactly like a SQLAlchemy Row.
NamedRow = Any
Cursor = Any  # a DBAPI cursor (sqlite3.Cursor, psycopg.Cursor)


class Prepared:
    """One statement compiled for one dialect, plus what executing it needs."""

    __slots__ = ("_bind", "_checked", "_constants", "_positions", "_results", "_row_type", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)  # DML and SELECT compile with SQLCompiler
        sql = compiled.string
        # Expanding IN and escaped bind names are rendered per execution by
        # SQLAlchemy; statements.py avoids both so the text is final here.
        if "__[POSTCOMPILE" in sql or getattr(compiled, "escaped_bind_names", None):
            raise ValueError(f"statement needs per-execution rendering: {sql}")
        self.sql: str = sql
        constants: dict[str, Any] = {}
        binds: list[tuple[str, Processor]] = []
        for bind, name in compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                if process is not None:
                    binds.append((name, process))
            else:  # a value the statement carries itself, e.g. ``status = 'pending'``
                value = bind.effective_value
                constants[name] = value if process is None else process(value)
        self._bind: tuple[tuple[str, Processor], ...] = tuple(binds)
        self._constants: Mapping[str, Any] = constants
        # qmark drivers (sqlite3) take a tuple in placeholder order; a name may
        # repeat. pyformat drivers (psycopg) take the dict as it is.
        positions = compiled.positiontup if dialect.positional else None
        self._positions: tuple[str, ...] | None = None if positions is None else tuple(positions)
        columns = list(getattr(statement, "exported_columns", ()))
        self._row_type: Any = None
        self._results: tuple[tuple[int, Processor], ...] = ()
        self._checked = True
        if columns:
            self._row_type = namedtuple("NamedRow", [c.key for c in columns])  # type: ignore[misc]
            self._results = tuple(
                (index, process)
                for index, column in enumerate(columns)
                if (process := column.type.dialect_impl(dialect).result_processor(dialect, None))
                is not None
            )
            self._checked = False

    def parameters(self, params: Mapping[str, Any]) -> Any:
        """The DBAPI parameters for one execution: processed, in driver order."""
        if self._bind:
            params = dict(params)
            for name, process in self._bind:
                if name in params:
                    params[name] = process(params[name])
        if self._constants:
            params = {**self._constants, **params}
        if self._positions is None:
            return params
        return tuple(map(params.__getitem__, self._positions))

    def rows(self, cursor: Cursor) -> list[NamedRow]:
        """Fetch every row (an unfinished SQLite statement would pin its snapshot)."""
        fetched = cursor.fetchall()
        if self._row_type is None:
            raise TypeError(f"statement returns no rows: {self.sql}")
        if not self._checked:
            # The named tuple's fields come from the statement's exported
            # columns; confirm once that the driver returns them in that order.
            names = tuple(d[0] for d in cursor.description)
            if names != self._row_type._fields:
                raise StorageError(f"result columns {names} != expected {self._row_type._fields}")
            self._checked = True
        make = self._row_type._make
        if not self._results:
            return [make(raw) for raw in fetched]
        converted = []
        for raw in fetched:
            values = list(raw)
            for index, process in self._results:
                values[index] = process(values[index])
            converted.append(make(values))
        return converted


class ConnectionStack:
    """DBAPI connections (as cursors) for one process, one thread per connection at a time.

    ``checkout`` pops an idle one or opens a new one; ``checkin`` pushes it
    back. ``list.pop``/``append`` are atomic, so no lock is needed and no
    two threads ever hold the same connection.
    """

    def __init__(self, engine: Engine, *, max_idle: int = 16) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._max_idle = max_idle
        self._idle: list[Cursor] = []
        self._pid = os.getpid()
        self._closed = False
        self.opened = 0  # connections opened so far (tests, diagnostics)

    def checkout(self) -> Cursor:
        if self._pid != os.getpid():
            raise StorageError(
                "storage opened in another process; call open_storage after fork, in each worker"
            )
        if self._closed:
            raise StorageError("storage is closed")
        try:
            return self._idle.pop()
        except IndexError:
            return self._open()

    def checkin(self, cursor: Cursor) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            self.discard(cursor)
        else:
            self._idle.append(cursor)

    def discard(self, cursor: Cursor) -> None:
        """Close a connection that is broken, surplus, or outlived ``close``."""
        try:
            cursor.connection.close()
        except Exception:  # noqa: S110 - closing a dead connection may fail; it is gone anyway
            pass

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self.discard(self._idle.pop())

    def _open(self) -> Cursor:
        # Through the engine's pool, so its connect hooks (SQLite pragmas,
        # isolation_level=None) and connect_args apply; then detached, because
        # this stack, not the pool, owns it from now on.
        proxied = self._engine.raw_connection()
        proxied.detach()
        dbapi_connection: Any = proxied.dbapi_connection
        cursor = dbapi_connection.cursor()
        if self._sqlite:
            # Explicit even though the connect hook sets it: writers in two
            # processes contend for the lock with BEGIN IMMEDIATE, and without
            # a busy timeout the loser fails at once with "database is locked".
            dbapi_connection.isolation_level = None
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        else:
            dbapi_connection.autocommit = True
        self.opened += 1
        return cursor


class RawDatabase:
    """Prepared statements on the ``ConnectionStack``: reads and write transactions."""

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect
        self.connections = ConnectionStack(engine)
        self._begin = "BEGIN IMMEDIATE" if self.dialect.name == "sqlite" else "BEGIN"
        self._dbapi_error: type[Exception] = self.dialect.loaded_dbapi.Error
        self._prepared: dict[ClauseElement, Prepared] = {}

    def close(self) -> None:
        self.connections.close()

    def prepare(self, statement: ClauseElement) -> Prepared:
        """The statement's compiled form, made on first use (statements live forever)."""
        prepared = self._prepared.get(statement)
        if prepared is None:
            prepared = self._prepared[statement] = Prepared(statement, self.dialect)
        return prepared

    # --- single-statement reads, autocommit --------------------------------

    def all(self, statement: ClauseElement, params: Mapping[str, Any]) -> list[NamedRow]:
        prepared = self.prepare(statement)
        cursor = self.connections.checkout()
        try:
            cursor.execute(prepared.sql, prepared.parameters(params))
            found = prepared.rows(cursor)
        except self._dbapi_error as exc:
            raise self._failed(cursor, exc, prepared.sql, params) from exc
        except BaseException:
            self.connections.discard(cursor)
            raise
        self.connections.checkin(cursor)
        return found

    def one(self, statement: ClauseElement, params: Mapping[str, Any]) -> NamedRow | None:
        found = self.all(statement, params)
        return found[0] if found else None

    # --- write transactions -----------------------------------------------------

    def write(self) -> Transaction:
        """``with db.write() as tx:`` one transaction; commits on exit, rolls back on error."""
        return Transaction(self)

    def _failed(
        self, cursor: Cursor, exc: Exception, sql: str | None, params: Any
    ) -> BaseException:
        """Return (or drop) the connection after a driver error; SQLAlchemy's exception for it."""
        broken = self.dialect.is_disconnect(exc, cursor.connection, cursor)  # type: ignore[arg-type]
        if broken:
            self.connections.discard(cursor)
        else:
            self.connections.checkin(cursor)
        return DBAPIError.instance(
            sql, params, exc, self._dbapi_error, connection_invalidated=broken, dialect=self.dialect
        )


class Transaction:
    """One write transaction on one connection (``BEGIN IMMEDIATE`` on SQLite)."""

    __slots__ = ("_cursor", "_db")

    def __init__(self, db: RawDatabase) -> None:
        self._db = db
        self._cursor: Cursor = None

    def __enter__(self) -> Transaction:
        db = self._db
        cursor = db.connections.checkout()
        try:
            cursor.execute(db._begin)
        except db._dbapi_error as exc:
            raise db._failed(cursor, exc, db._begin, None) from exc
        except BaseException:
            db.connections.discard(cursor)
            raise
        self._cursor = cursor
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        db, cursor = self._db, self._cursor
        self._cursor = None
        if exc_type is None:
            try:
                cursor.execute("COMMIT")
            except db._dbapi_error as error:
                self._rollback(db, cursor)
                raise DBAPIError.instance(
                    "COMMIT", None, error, db._dbapi_error, dialect=db.dialect
                ) from error
            db.connections.checkin(cursor)
        else:
            # Anything raised inside the block (StaleState, DuplicateSerial, a
            # driver error) undoes every statement of the transaction.
            self._rollback(db, cursor)

    @staticmethod
    def _rollback(db: RawDatabase, cursor: Cursor) -> None:
        try:
            cursor.execute("ROLLBACK")
        except Exception:  # a connection that cannot roll back is not reused
            db.connections.discard(cursor)
        else:
            db.connections.checkin(cursor)

    def _run(self, statement: ClauseElement, params: Mapping[str, Any]) -> tuple[Prepared, Cursor]:
        prepared = self._db.prepare(statement)
        try:
            self._cursor.execute(prepared.sql, prepared.parameters(params))
        except self._db._dbapi_error as exc:
            raise DBAPIError.instance(
                prepared.sql, params, exc, self._db._dbapi_error, dialect=self._db.dialect
            ) from exc
        return prepared, self._cursor

    def all(self, statement: ClauseElement, params: Mapping[str, Any]) -> list[NamedRow]:
        prepared, cursor = self._run(statement, params)
        return prepared.rows(cursor)

    def one(self, statement: ClauseElement, params: Mapping[str, Any]) -> NamedRow | None:
        found = self.all(statement, params)
        return found[0] if found else None

    def count(self, statement: ClauseElement, params: Mapping[str, Any]) -> int:
        """Execute an UPDATE/DELETE; the number of rows it changed."""
        _, cursor = self._run(statement, params)
        return int(cursor.rowcount)

    def many(self, statement: ClauseElement, param_sets: Iterable[Mapping[str, Any]]) -> None:
        """Execute one statement (no RETURNING) for each parameter set."""
        prepared = self._db.prepare(statement)
        batch: Sequence[Any] = [prepared.parameters(params) for params in param_sets]
        try:
            self._cursor.executemany(prepared.sql, batch)
        except self._db._dbapi_error as exc:
            raise DBAPIError.instance(
                prepared.sql, batch, exc, self._db._dbapi_error, dialect=self._db.dialect
            ) from exc
