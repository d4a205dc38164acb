"""The SA's raw execution path (``storage/fastpath.py``): transactions, connections, processes.

The contract suite proves the SA's behaviour through it on both backends;
these tests pin what that path itself promises: a failed write leaves nothing
behind and a usable connection, no connection is held by two threads at
once, SQLite writers wait for the lock (busy timeout) instead of failing,
worker processes that each open the storage after a fork agree on one winner,
and a storage object is refused in a process it was not opened in.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from certmint.ca.storage import StorageAuthority, StorageError, open_storage
from certmint.ca.storage import statements as q
from certmint.ca.storage.fastpath import ConnectionStack, Prepared
from certmint.ca.storage.records import FINALIZE_PROCESSING, VALID
from certmint.ca.storage.schema import authorizations

from .conftest import PG_DATABASE, PG_HOSTPORT, pg_user
from .storage_builders import (
    DAY,
    RACERS,
    T0,
    make_authz,
    make_cert,
    make_order,
    new_account,
    new_order,
    race,
)


class Backend(Protocol):
    name: str
    url: str
    connect_args: dict[str, Any]

    def open(self) -> StorageAuthority: ...


# --- transactions on the raw path ------------------------------------------------


def test_failed_write_rolls_back_and_connection_stays_usable(sa: StorageAuthority) -> None:
    account = new_account(sa)
    good = make_authz(account.id, "good.example")
    bad = make_authz(account.id, "bad.example")
    # Two challenges with one primary key: the challenge INSERT fails after
    # the authorization INSERTs already ran inside the same transaction.
    bad = replace(bad, challenges=(bad.challenges[0], bad.challenges[0]))
    order = make_order(account.id, [good, bad])
    with pytest.raises(IntegrityError):
        sa.create_order(order, [good, bad])
    assert sa.get_authzs([good.id, bad.id]) == []
    assert sa.get_order(order.id) is None
    # The connection went back rolled back (PostgreSQL would refuse every
    # statement of an aborted transaction): the next write and read work.
    later = new_order(sa, account)
    assert sa.get_order(later.id) == later


def test_refused_write_rolls_back_every_statement(sa: StorageAuthority) -> None:
    order = new_order(sa, new_account(sa))
    assert sa.begin_finalize(order.id)
    # complete_finalize updates the order, then finds the serial taken and raises.
    other = new_order(sa, new_account(sa))
    assert sa.begin_finalize(other.id)
    sa.complete_finalize(other.id, make_cert(other, serial="0badcafe"))
    with pytest.raises(StorageError):
        sa.complete_finalize(order.id, make_cert(order, serial="0badcafe"))
    stored = sa.get_order(order.id)
    assert stored is not None and stored.certificate_serial is None
    assert stored.finalize_state == FINALIZE_PROCESSING  # the order update was undone too


def test_long_id_lists_are_chunked(sa: StorageAuthority) -> None:
    account = new_account(sa)
    names = [f"n{i}.example" for i in range(q.MAX_IN_LIST + 5)]
    authzs = [make_authz(account.id, name, status=VALID) for name in names]
    sa.create_order(make_order(account.id, authzs), authzs)
    ids = [a.id for a in authzs]
    assert [a.id for a in sa.get_authzs(list(reversed(ids)))] == list(reversed(ids))
    wanted = [("dns", name, False) for name in names]
    found = sa.find_reusable_authzs(account.id, wanted, (VALID,), T0)
    assert {key[1]: a.id for key, a in found.items()} == dict(zip(names, ids, strict=True))
    assert sa.find_reusable_authzs(account.id, wanted, (VALID,), T0 + 8 * DAY) == {}


def test_prepare_refuses_expanding_in(sa: StorageAuthority) -> None:
    expanding = select(authorizations.c.id).where(
        authorizations.c.id.in_(bindparam("b_ids", expanding=True))
    )
    with pytest.raises(ValueError, match="per-execution"):
        Prepared(expanding, sa.engine.dialect)


# --- connections ------------------------------------------------------------------


def test_a_connection_is_never_held_by_two_threads(backend: Backend) -> None:
    sa = backend.open()
    stack = ConnectionStack(sa.engine)
    try:
        held: list[int] = []

        def hold(_: int) -> int:
            cursor = stack.checkout()
            held.append(id(cursor))
            barrier.wait()  # everyone holds one at the same moment
            stack.checkin(cursor)
            return id(cursor)

        barrier = threading.Barrier(RACERS, timeout=10)
        ids = race(RACERS, hold)
        assert len(set(ids)) == RACERS and stack.opened == RACERS
        # Returned connections are reused, not reopened.
        again = stack.checkout()
        assert id(again) in ids and stack.opened == RACERS
        stack.checkin(again)
    finally:
        stack.close()
        sa.close()
    with pytest.raises(StorageError, match="closed"):
        stack.checkout()


def test_sa_calls_from_many_threads_share_no_connection(sa: StorageAuthority) -> None:
    account = new_account(sa)
    orders = [new_order(sa, account, (f"t{i}.example",)) for i in range(RACERS)]
    results = race(RACERS, lambda i: sa.get_order(orders[i].id))
    assert results == orders


def test_sqlite_raw_connections_have_busy_timeout_and_writers_wait(tmp_path: Path) -> None:
    path = tmp_path / "ca.db"
    sa = open_storage(f"sqlite:///{path}")
    try:
        order = new_order(sa, new_account(sa))
        stack = ConnectionStack(sa.engine)
        cursor = stack.checkout()
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
        stack.checkin(cursor)
        stack.close()
        # Another process's writer holds the write lock; the SA's BEGIN
        # IMMEDIATE must wait for it (busy timeout), not fail at once.
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        won: list[bool] = []
        writer = threading.Thread(target=lambda: won.append(sa.begin_finalize(order.id)))
        writer.start()
        writer.join(timeout=0.3)
        assert writer.is_alive() and won == []  # waiting, not failed
        other.execute("COMMIT")
        other.close()
        writer.join(timeout=10)
        assert won == [True]
    finally:
        sa.close()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_postgres_broken_connection_is_dropped_not_reused(backend: Backend) -> None:
    # A unique application_name finds this SA's server process and no other
    # (other suites may share the server).
    name = f"certmint-test-{uuid.uuid4().hex[:12]}"
    sa = open_storage(backend.url, connect_args={**backend.connect_args, "application_name": name})
    try:
        account = new_account(sa)  # the SA now holds an idle connection
        admin_dsn = f"postgresql://{pg_user()}@{PG_HOSTPORT}/{PG_DATABASE}"
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            killed = admin.execute(f"{terminate} WHERE application_name = %s", (name,)).fetchall()
        assert killed and all(ok for (ok,) in killed)
        with pytest.raises(DBAPIError) as caught:
            sa.get_account(account.id)
        assert caught.value.connection_invalidated
        assert sa.get_account(account.id) == account  # on a new connection
    finally:
        sa.close()


# --- processes ----------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import json, sys
    from certmint.ca.storage import open_storage
    sa = open_storage(sys.argv[1])
    won = [order_id for order_id in json.loads(sys.argv[2]) if sa.begin_finalize(order_id)]
    sa.close()
    print(json.dumps(won))
    """
)


def test_worker_processes_on_one_sqlite_file_agree_on_one_winner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ca.db'}"
    sa = open_storage(url)
    try:
        account = new_account(sa)
        order_ids = [new_order(sa, account, (f"p{i}.example",)).id for i in range(40)]
    finally:
        sa.close()
    workers = [
        subprocess.Popen(  # our own interpreter and script
            [sys.executable, "-c", _WORKER, url, json.dumps(order_ids)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    won: list[str] = []
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        won += json.loads(out)
    assert sorted(won) == sorted(order_ids)  # every order finalized exactly once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_storage_opened_before_fork_is_refused_in_the_child(tmp_path: Path) -> None:
    sa = open_storage(f"sqlite:///{tmp_path / 'ca.db'}")
    try:
        account = new_account(sa)  # the parent now holds a connection
        pid = os.fork()
        if pid == 0:  # child: must refuse, never touch the parent's connection
            try:
                sa.get_account(account.id)
            except StorageError:
                os._exit(0)
            except BaseException:  # any other outcome is a failure code
                os._exit(2)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert sa.get_account(account.id) == account  # the parent is unaffected
    finally:
        sa.close()
