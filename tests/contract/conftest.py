"""Backends for the storage contract suite: one SQLite file, one PostgreSQL schema.

Each PostgreSQL test gets a freshly created, uniquely named schema, reached
through ``search_path`` in the connection options and dropped afterwards, so
parallel or repeated runs never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from certmint.ca.storage import StorageAuthority, open_storage

PG_HOSTPORT = "127.0.0.1:5432"
PG_DATABASE = "test"
_pg_user_cache: list[str] = []


def pg_user() -> str:
    """``postgres`` where trust auth allows it, else ``root``."""
    if not _pg_user_cache:
        last_error: Exception | None = None
        for user in ("postgres", "root"):
            try:
                with psycopg.connect(f"postgresql://{user}@{PG_HOSTPORT}/{PG_DATABASE}"):
                    _pg_user_cache.append(user)
                    break
            except psycopg.OperationalError as exc:
                last_error = exc
        else:
            raise RuntimeError(f"PostgreSQL at {PG_HOSTPORT} unreachable: {last_error}")
    return _pg_user_cache[0]


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    connect_args: dict[str, Any]

    def open(self) -> StorageAuthority:
        return open_storage(self.url, connect_args=self.connect_args)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'ca.db'}", {})
        return
    user = pg_user()
    schema = f"certmint_test_{uuid.uuid4().hex[:16]}"
    admin_dsn = f"postgresql://{user}@{PG_HOSTPORT}/{PG_DATABASE}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield Backend(
            "postgres",
            f"postgresql+psycopg://{user}@{PG_HOSTPORT}/{PG_DATABASE}",
            {"options": f"-csearch_path={schema}"},
        )
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sa(backend: Backend) -> Iterator[StorageAuthority]:
    authority = backend.open()
    try:
        yield authority
    finally:
        authority.close()
