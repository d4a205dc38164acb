"""Storage contract for ACME Renewal Information (RFC 9773), on SQLite and
PostgreSQL: operator windows, marking a certificate replaced atomically with
its replacement's issuance, the race for one replacement, and migration 0002
upgrading a database that already holds data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, func, select, text

from certmint.ca.storage import (
    MIGRATIONS_DIR,
    AlreadyReplaced,
    StaleState,
    StorageAuthority,
    migrate,
)
from certmint.ca.storage.engine import create_storage_engine
from certmint.ca.storage.records import (
    FINALIZE_PROCESSING,
    FINALIZE_VALID,
    AccountRecord,
    CertificateRecord,
    OrderRecord,
)
from certmint.ca.storage.schema import certificates, to_micros

from .storage_builders import (
    DAY,
    HOUR,
    RACERS,
    T0,
    make_cert,
    new_account,
    new_order,
    race,
)


class Backend(Protocol):
    name: str
    url: str
    connect_args: dict[str, Any]

    def open(self) -> StorageAuthority: ...


def _issued(
    sa: StorageAuthority, serial: str | None = None
) -> tuple[AccountRecord, CertificateRecord]:
    """An account and one certificate issued to it (through finalize)."""
    account = new_account(sa)
    order = new_order(sa, account)
    assert sa.begin_finalize(order.id)
    cert = make_cert(order, serial)
    sa.complete_finalize(order.id, cert)
    return account, cert


def _processing_order_of(
    sa: StorageAuthority, account: AccountRecord, replaces: str | None = None
) -> OrderRecord:
    order = new_order(sa, account, replaces=replaces)
    assert sa.begin_finalize(order.id)
    return replace(order, finalize_state=FINALIZE_PROCESSING)


def _certificate_count(sa: StorageAuthority) -> int:
    with sa.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(certificates)).scalar_one())


# --- operator windows ----------------------------------------------------------


def test_new_certificate_has_no_window_and_is_not_replaced(sa: StorageAuthority) -> None:
    _, cert = _issued(sa)
    stored = sa.get_certificate(cert.serial)
    assert stored is not None and stored == cert
    assert stored.ari_window_start is None and stored.ari_window_end is None
    assert stored.replaced_by_order is None


def test_set_and_clear_renewal_window(sa: StorageAuthority) -> None:
    _, cert = _issued(sa)
    start, end = T0 + 10 * DAY, T0 + 10 * DAY + 6 * HOUR  # T0 has microseconds: kept
    updated = sa.set_renewal_window(cert.serial, start, end)
    assert updated == replace(cert, ari_window_start=start, ari_window_end=end)
    assert sa.get_certificate(cert.serial) == updated
    cleared = sa.set_renewal_window(cert.serial, None, None)
    assert cleared == cert


def test_set_renewal_window_refusals(sa: StorageAuthority) -> None:
    _, cert = _issued(sa)
    with pytest.raises(StaleState):
        sa.set_renewal_window("ab" * 9, T0, T0 + HOUR)
    with pytest.raises(ValueError):
        sa.set_renewal_window(cert.serial, T0 + HOUR, T0)
    with pytest.raises(ValueError):
        sa.set_renewal_window(cert.serial, T0, T0)
    with pytest.raises(ValueError):
        sa.set_renewal_window(cert.serial, T0, None)
    assert sa.get_certificate(cert.serial) == cert


# --- replacement ----------------------------------------------------------------


def test_complete_finalize_marks_the_replaced_certificate(sa: StorageAuthority) -> None:
    account, old = _issued(sa)
    order = _processing_order_of(sa, account, replaces="aki.serial")
    done = sa.complete_finalize(order.id, make_cert(order), replaces_serial=old.serial)
    assert done.finalize_state == FINALIZE_VALID and done.replaces == "aki.serial"
    assert sa.get_certificate(old.serial).replaced_by_order == order.id  # type: ignore[union-attr]


def test_second_replacement_is_refused_and_writes_nothing(sa: StorageAuthority) -> None:
    account, old = _issued(sa)
    first = _processing_order_of(sa, account)
    sa.complete_finalize(first.id, make_cert(first), replaces_serial=old.serial)
    second = _processing_order_of(sa, account)
    before = _certificate_count(sa)
    with pytest.raises(AlreadyReplaced) as refused:
        sa.complete_finalize(second.id, make_cert(second), replaces_serial=old.serial)
    assert refused.value.serial == old.serial and refused.value.order_id == first.id
    assert _certificate_count(sa) == before
    assert sa.get_order(second.id).finalize_state == FINALIZE_PROCESSING  # type: ignore[union-attr]
    assert sa.get_certificate(old.serial).replaced_by_order == first.id  # type: ignore[union-attr]


def test_replacing_an_unknown_certificate_writes_nothing(sa: StorageAuthority) -> None:
    account = new_account(sa)
    order = _processing_order_of(sa, account)
    with pytest.raises(StaleState):
        sa.complete_finalize(order.id, make_cert(order), replaces_serial="cd" * 9)
    assert _certificate_count(sa) == 0
    assert sa.get_order(order.id).finalize_state == FINALIZE_PROCESSING  # type: ignore[union-attr]


def test_race_replacing_one_certificate_has_one_winner(sa: StorageAuthority) -> None:
    account, old = _issued(sa)
    orders = [_processing_order_of(sa, account) for _ in range(RACERS)]

    def attempt(i: int) -> str | None:
        order_id: str = orders[i].id
        try:
            sa.complete_finalize(orders[i].id, make_cert(orders[i]), replaces_serial=old.serial)
        except AlreadyReplaced:
            return None
        return order_id

    winners = [w for w in race(RACERS, attempt) if w is not None]
    assert len(winners) == 1
    assert sa.get_certificate(old.serial).replaced_by_order == winners[0]  # type: ignore[union-attr]
    assert _certificate_count(sa) == 2  # the old one and exactly one replacement


# --- migration 0002 on a database with data -----------------------------------------


def _upgrade(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def test_migration_0002_downgrades_cleanly(backend: Backend) -> None:
    sa = backend.open()  # at head, with a certificate carrying the new fields
    try:
        _, cert = _issued(sa)
        sa.set_renewal_window(cert.serial, T0, T0 + HOUR)
    finally:
        sa.close()
    engine = create_storage_engine(backend.url, connect_args=backend.connect_args)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0001")
        with engine.connect() as conn:
            columns = set(conn.execute(text("SELECT * FROM certificates")).keys())
            assert not columns & {"ari_window_start", "ari_window_end", "replaced_by_order"}
            assert conn.execute(text("SELECT serial FROM certificates")).scalar_one() == cert.serial
        migrate(engine)
    finally:
        engine.dispose()
    sa = backend.open()
    try:
        assert sa.get_certificate(cert.serial) == cert
    finally:
        sa.close()


def test_migration_0002_upgrades_a_database_with_data(backend: Backend) -> None:
    engine = create_storage_engine(backend.url, connect_args=backend.connect_args)
    try:
        _upgrade(engine, "0001")
        with engine.begin() as conn:
            columns = set(conn.execute(text("SELECT * FROM certificates")).keys())
            assert "replaced_by_order" not in columns
            conn.execute(
                text(
                    "INSERT INTO accounts (id, key_thumbprint, jwk_json, status, contact_json,"
                    " tos_agreed, created_at) VALUES ('a1', 't1', '{}', 'valid', '[]', :t, 0)"
                ),
                {"t": True},
            )
            conn.execute(
                text(
                    "INSERT INTO certificates (serial, account_id, order_id, issuer_id, der,"
                    " names_json, not_before, not_after, key_spki_sha256, issued_at, status)"
                    " VALUES ('0a', 'a1', 'o1', 'e1', :der, '[\"old.example\"]',"
                    " :nb, :na, 'ff', :nb, 'good')"
                ),
                {"der": b"\x30\x00", "nb": to_micros(T0), "na": to_micros(T0 + 90 * DAY)},
            )
        migrate(engine)  # 0001 → head
        migrate(engine)  # idempotent at head
    finally:
        engine.dispose()
    sa = backend.open()
    try:
        old = sa.get_certificate("0a")
        assert old is not None and old.names == ("old.example",)
        assert old.not_after == T0 + 90 * DAY
        assert old.ari_window_start is None and old.replaced_by_order is None
        updated = sa.set_renewal_window("0a", T0 + DAY, T0 + 2 * DAY)
        assert updated.ari_window_end == T0 + 2 * DAY
    finally:
        sa.close()


# --- the operator's command line ------------------------------------------------


def test_admin_renewal_window_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from certmint.ca.cli import main
    from certmint.ca.issuance.profile import serial_to_string
    from certmint.ca.storage import open_storage

    url = f"sqlite:///{tmp_path / 'certmint.db'}"
    sa = open_storage(url)
    try:
        # The SA's serial form, as issuance writes it (zero-padded hex).
        _, cert = _issued(sa, serial_to_string(0x16B))
    finally:
        sa.close()
    serial = "16B"
    base = ["admin", "renewal-window", "--database-url", url, "--serial", serial]
    assert main([*base, "--start", "2025-04-01T00:00:00Z", "--end", "2025-04-02T00:00:00Z"]) == 0
    assert "2025-04-01T00:00:00Z .. 2025-04-02T00:00:00Z" in capsys.readouterr().out
    sa = open_storage(url)
    try:
        stored = sa.get_certificate(cert.serial)
        assert stored is not None and stored.ari_window_end is not None
        assert stored.ari_window_end.isoformat() == "2025-04-02T00:00:00+00:00"
    finally:
        sa.close()
    assert main([*base, "--clear"]) == 0
    assert "default renewal window" in capsys.readouterr().out
    refusals = [
        [*base],
        [*base, "--clear", "--start", "2025-04-01T00:00:00Z"],
        [*base, "--start", "2025-04-02T00:00:00Z", "--end", "2025-04-01T00:00:00Z"],
        [*base, "--start", "tomorrow", "--end", "2025-04-01T00:00:00Z"],
        [*base[:-1], "zz", "--clear"],
        [*base[:-1], "abcdef", "--clear"],  # no such certificate
    ]
    for argv in refusals:
        assert main(argv) == 2, argv
