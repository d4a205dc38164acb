"""The storage contract: one suite, run against SQLite and PostgreSQL.

Every SA method, every refusal path, reuse lookups, pagination, and real
races (threads on real connections) that must end with exactly one winner.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event

from certmint.ca.storage import (
    DuplicateSerial,
    EabKeyUnavailable,
    KeyInUse,
    StaleState,
    StorageAuthority,
    StorageError,
    open_storage,
)
from certmint.ca.storage.engine import normalise_url
from certmint.ca.storage.records import (
    ACCOUNT_DEACTIVATED,
    CERT_GOOD,
    CERT_REVOKED,
    DEACTIVATED,
    FINALIZE_INVALID,
    FINALIZE_NONE,
    FINALIZE_PROCESSING,
    FINALIZE_VALID,
    INVALID,
    PENDING,
    PROCESSING,
    VALID,
    EabKeyRecord,
    RevokedEntry,
)
from certmint.ca.storage.schema import from_micros, metadata, to_micros

from .storage_builders import (
    DAY,
    HOUR,
    RACERS,
    T0,
    make_account,
    make_authz,
    make_cert,
    make_order,
    new_account,
    new_order,
    pending_authz,
    processing_order,
    race,
)


class Backend(Protocol):
    """The ``backend`` fixture from conftest: a name and a way to open the SA."""

    name: str
    url: str
    connect_args: dict[str, Any]

    def open(self) -> StorageAuthority: ...


# --- schema and engine ------------------------------------------------------


def test_migrations_match_schema_module(sa: StorageAuthority) -> None:
    with sa.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def test_reopen_is_idempotent_and_keeps_data(backend: Backend) -> None:
    first = backend.open()
    account = new_account(first)
    first.close()
    # Reopen through the plain spelling; PostgreSQL's is rewritten to psycopg 3.
    plain_url = backend.url.replace("postgresql+psycopg://", "postgresql://")
    second = open_storage(plain_url, connect_args=backend.connect_args)
    try:
        assert second.get_account(account.id) == account
    finally:
        second.close()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    sa = open_storage(f"sqlite:///{tmp_path / 'ca.db'}")
    try:
        with sa.engine.connect() as conn:
            pragma = conn.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert (pragma("PRAGMA busy_timeout").scalar() or 0) >= 1000
    finally:
        sa.close()


def test_sqlite_writes_begin_immediate_and_point_reads_run_bare(tmp_path: Path) -> None:
    sa = open_storage(f"sqlite:///{tmp_path / 'ca.db'}")
    seen: list[str] = []

    def record(statement: str) -> None:
        if not statement.startswith("PRAGMA"):
            seen.append(statement.split()[0].upper() + (" IMMEDIATE" * ("IMMEDIATE" in statement)))

    # The SA runs statements on raw sqlite3 connections taken from the engine's
    # pool, so trace at the driver: every statement the database is sent.
    def trace(dbapi_connection: sqlite3.Connection, *_rest: object) -> None:
        dbapi_connection.set_trace_callback(record)

    event.listen(sa.engine, "checkout", trace)
    try:
        account = new_account(sa)
        assert seen == ["BEGIN IMMEDIATE", "INSERT", "COMMIT"]
        seen.clear()
        assert sa.get_account(account.id) == account
        assert seen == ["SELECT"]
        seen.clear()
        with pytest.raises(StaleState):
            sa.deactivate_authz("nope")
        assert seen == ["BEGIN IMMEDIATE", "UPDATE", "ROLLBACK"]
    finally:
        sa.close()


def test_timestamps_are_exact_microseconds_and_refuse_naive() -> None:
    paris = timezone(timedelta(hours=1))
    local = datetime(2025, 3, 1, 13, 0, 0, 999999, tzinfo=paris)
    assert from_micros(to_micros(local)) == local
    assert from_micros(to_micros(local)).tzinfo == UTC
    assert to_micros(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1
    with pytest.raises(ValueError):
        to_micros(datetime(2025, 1, 1))


def test_url_normalisation() -> None:
    assert normalise_url("postgresql://u@h:5432/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite"
    for bad in ("sqlite://", "sqlite:///:memory:", "mysql://u@h/db", "postgresql+psycopg2://h/d"):
        with pytest.raises(StorageError):
            normalise_url(bad)
    with pytest.raises(StorageError):
        open_storage("sqlite:///:memory:")


# --- accounts -----------------------------------------------------------------


def test_create_and_get_account(sa: StorageAuthority) -> None:
    account = make_account()
    stored, created = sa.create_account(account)
    assert created and stored == account
    assert sa.get_account(account.id) == account
    assert sa.get_account_by_thumbprint(account.key_thumbprint) == account
    assert sa.get_account(account.id).created_at.tzinfo is not None  # type: ignore[union-attr]
    assert sa.get_account("nope") is None
    assert sa.get_account_by_thumbprint("nope") is None


def test_create_account_existing_key_returns_existing_unchanged(sa: StorageAuthority) -> None:
    first = new_account(sa, thumbprint="shared")
    again, created = sa.create_account(make_account("shared", contact=("mailto:x@example.com",)))
    assert not created and again == first
    assert sa.get_account(first.id) == first


def test_update_account_contact(sa: StorageAuthority) -> None:
    account = new_account(sa)
    updated = sa.update_account_contact(account.id, ("mailto:new@example.com",))
    assert updated == replace(account, contact=("mailto:new@example.com",))
    assert sa.get_account(account.id) == updated
    assert sa.update_account_contact(account.id, ()).contact == ()
    with pytest.raises(StaleState):
        sa.update_account_contact("missing", ())
    sa.deactivate_account(account.id)
    with pytest.raises(StaleState):
        sa.update_account_contact(account.id, ("mailto:late@example.com",))


def test_deactivate_account(sa: StorageAuthority) -> None:
    account = new_account(sa)
    assert sa.deactivate_account(account.id).status == ACCOUNT_DEACTIVATED
    with pytest.raises(StaleState):
        sa.deactivate_account(account.id)
    with pytest.raises(StaleState):
        sa.deactivate_account("missing")


def test_change_account_key(sa: StorageAuthority) -> None:
    account = new_account(sa, thumbprint="old")
    changed = sa.change_account_key(account.id, "old", "new", '{"kty":"OKP"}')
    assert changed == replace(account, key_thumbprint="new", jwk_json='{"kty":"OKP"}')
    assert sa.get_account_by_thumbprint("old") is None
    assert sa.get_account_by_thumbprint("new") == changed
    with pytest.raises(StaleState):  # the old key is no longer current
        sa.change_account_key(account.id, "old", "newer", "{}")
    with pytest.raises(StaleState):
        sa.change_account_key("missing", "new", "newer", "{}")


def test_change_account_key_refuses_key_in_use(sa: StorageAuthority) -> None:
    account = new_account(sa, thumbprint="mine")
    holder = new_account(sa, thumbprint="theirs")
    with pytest.raises(KeyInUse) as caught:
        sa.change_account_key(account.id, "mine", "theirs", "{}")
    assert caught.value.account_id == holder.id
    assert sa.get_account(account.id) == account


def test_change_account_key_needs_valid_account(sa: StorageAuthority) -> None:
    account = new_account(sa, thumbprint="k1")
    sa.deactivate_account(account.id)
    with pytest.raises(StaleState):
        sa.change_account_key(account.id, "k1", "k2", "{}")


# --- external account binding ---------------------------------------------------


def test_eab_keys(sa: StorageAuthority) -> None:
    assert sa.list_eab_keys() == []
    first = EabKeyRecord(kid="kid-1", hmac_key=b"\x00\x01secret", created_at=T0, account_id=None)
    second = EabKeyRecord(kid="kid-2", hmac_key=b"other", created_at=T0 + HOUR, account_id=None)
    sa.create_eab_key(second)
    sa.create_eab_key(first)
    assert sa.get_eab_key("kid-1") == first
    assert sa.get_eab_key("missing") is None
    assert sa.list_eab_keys() == [first, second]
    with pytest.raises(StorageError):
        sa.create_eab_key(first)


def test_create_account_binds_eab_key(sa: StorageAuthority) -> None:
    sa.create_eab_key(EabKeyRecord(kid="kid", hmac_key=b"k", created_at=T0, account_id=None))
    account, created = sa.create_account(make_account(), eab_kid="kid")
    assert created and account.eab_kid == "kid"
    assert sa.get_account(account.id) == account
    assert sa.get_eab_key("kid").account_id == account.id  # type: ignore[union-attr]


def test_create_account_eab_key_unavailable_writes_nothing(sa: StorageAuthority) -> None:
    sa.create_eab_key(EabKeyRecord(kid="kid", hmac_key=b"k", created_at=T0, account_id=None))
    owner, _ = sa.create_account(make_account(), eab_kid="kid")
    for kid in ("kid", "unknown"):  # already bound, never issued
        late = make_account()
        with pytest.raises(EabKeyUnavailable):
            sa.create_account(late, eab_kid=kid)
        assert sa.get_account(late.id) is None
        assert sa.get_account_by_thumbprint(late.key_thumbprint) is None
    assert sa.get_eab_key("kid").account_id == owner.id  # type: ignore[union-attr]


def test_create_account_existing_key_with_eab_binds_nothing(sa: StorageAuthority) -> None:
    existing = new_account(sa, thumbprint="known")
    sa.create_eab_key(EabKeyRecord(kid="kid", hmac_key=b"k", created_at=T0, account_id=None))
    again, created = sa.create_account(make_account("known"), eab_kid="kid")
    assert not created and again == existing
    assert sa.get_eab_key("kid").account_id is None  # type: ignore[union-attr]


# --- orders and authorizations ------------------------------------------------------


def test_create_order_and_read_back(sa: StorageAuthority) -> None:
    account = new_account(sa)
    reused = make_authz(account.id, "a.example", status=VALID)
    sa.create_order(make_order(account.id, [reused]), [reused])
    fresh = [
        make_authz(account.id, "b.example"),
        make_authz(account.id, "c.example", wildcard=True),
    ]
    order = make_order(account.id, [reused, *fresh], replaces="aki.serial")
    stored = sa.create_order(order, fresh)
    assert stored == replace(order, seq=stored.seq) and stored.seq > 0
    assert sa.get_order(order.id) == stored
    assert sa.get_order("missing") is None
    assert sa.get_authzs(stored.authz_ids) == [reused, *fresh]
    assert sa.get_authz(fresh[1].id) == fresh[1]
    assert sa.get_authz("missing") is None


def test_get_authzs_keeps_given_order_and_omits_missing(sa: StorageAuthority) -> None:
    account = new_account(sa)
    authzs = [make_authz(account.id, f"n{i}.example") for i in range(4)]
    sa.create_order(make_order(account.id, authzs), authzs)
    wanted = [authzs[2].id, "missing", authzs[0].id, authzs[3].id]
    assert sa.get_authzs(wanted) == [authzs[2], authzs[0], authzs[3]]
    assert sa.get_authzs([]) == []
    assert [c.type for c in sa.get_authzs([authzs[1].id])[0].challenges] == [
        "http-01",
        "dns-01",
        "tls-alpn-01",
    ]


def test_order_seq_is_monotonic(sa: StorageAuthority) -> None:
    account = new_account(sa)
    seqs = [new_order(sa, account).seq for _ in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5


def test_list_orders_paginates(sa: StorageAuthority) -> None:
    account, other = new_account(sa), new_account(sa)
    mine = [new_order(sa, account, (f"n{i}.example",)) for i in range(5)]
    new_order(sa, other)
    page1 = sa.list_orders(account.id, None, 2)
    page2 = sa.list_orders(account.id, page1[-1].seq, 2)
    page3 = sa.list_orders(account.id, page2[-1].seq, 2)
    assert page1 + page2 + page3 == mine
    assert len(page3) == 1
    assert sa.list_orders(account.id, mine[-1].seq, 10) == []
    assert sa.list_orders(account.id, None, 0) == []
    assert sa.list_orders("nobody", None, 10) == []


def test_find_reusable_order(sa: StorageAuthority) -> None:
    account, other = new_account(sa), new_account(sa)
    names = ("a.example", "b.example")
    identifiers = (("dns", "a.example"), ("dns", "b.example"))
    older = new_order(sa, account, names)
    newest = new_order(sa, account, names)
    now = T0 + HOUR
    assert sa.find_reusable_order(account.id, identifiers, "classic", now) == newest
    # Identifier order does not matter; the set does.
    assert sa.find_reusable_order(account.id, identifiers[::-1], "classic", now) == newest
    assert sa.find_reusable_order(other.id, identifiers, "classic", now) is None
    assert sa.find_reusable_order(account.id, identifiers, "shortlived", now) is None
    assert sa.find_reusable_order(account.id, identifiers[:1], "classic", now) is None
    extra = (*identifiers, ("dns", "c.example"))
    assert sa.find_reusable_order(account.id, extra, "classic", now) is None
    assert sa.find_reusable_order(account.id, identifiers, "classic", newest.expires) is None
    # Once finalization starts the newest is no longer reusable; the older one is.
    assert sa.begin_finalize(newest.id)
    assert sa.find_reusable_order(account.id, identifiers, "classic", now) == older


def test_find_reusable_order_skips_explicit_validity(sa: StorageAuthority) -> None:
    account = new_account(sa)
    identifiers = (("dns", "example.com"),)
    new_order(sa, account, not_before=T0)
    new_order(sa, account, not_after=T0 + DAY)
    assert sa.find_reusable_order(account.id, identifiers, "classic", T0) is None


def test_find_reusable_authzs(sa: StorageAuthority) -> None:
    account, other = new_account(sa), new_account(sa)
    old_valid = make_authz(account.id, "a.example", status=VALID, created_at=T0)
    new_valid = make_authz(account.id, "a.example", status=VALID, created_at=T0 + HOUR)
    wildcard = make_authz(account.id, "a.example", wildcard=True, status=VALID)
    pending = make_authz(account.id, "b.example")
    invalid = make_authz(account.id, "c.example", status=INVALID)
    expiring = make_authz(account.id, "d.example", status=VALID, expires=T0 + DAY)
    foreign = make_authz(other.id, "e.example", status=VALID)
    everything = [old_valid, new_valid, wildcard, pending, invalid, expiring]
    sa.create_order(make_order(account.id, everything), everything)
    sa.create_order(make_order(other.id, [foreign]), [foreign])
    wanted = [
        ("dns", "a.example", False),
        ("dns", "a.example", True),
        ("dns", "b.example", False),
        ("dns", "c.example", False),
        ("dns", "d.example", False),
        ("dns", "e.example", False),
        ("dns", "unknown.example", False),
    ]
    found = sa.find_reusable_authzs(account.id, wanted, [VALID, PENDING], T0 + 2 * DAY)
    assert found == {
        ("dns", "a.example", False): new_valid,
        ("dns", "a.example", True): wildcard,
        ("dns", "b.example", False): pending,
    }
    only_valid = sa.find_reusable_authzs(account.id, wanted[2:3], [VALID], T0)
    assert only_valid == {}
    assert sa.find_reusable_authzs(account.id, wanted[4:5], [VALID], T0)[wanted[4]] == expiring
    assert sa.find_reusable_authzs(account.id, [], [VALID], T0) == {}


# --- challenges -------------------------------------------------------------------


def test_start_challenge(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    http, dns, _ = authz.challenges
    after, started = sa.start_challenge(authz.id, http.id)
    assert started
    assert [c.status for c in after.challenges] == [PROCESSING, PENDING, PENDING]
    assert sa.get_authz(authz.id) == after
    again, started_again = sa.start_challenge(authz.id, http.id)
    assert not started_again and again == after
    other, started_other = sa.start_challenge(authz.id, dns.id)
    assert not started_other and other == after


def test_start_challenge_refused_when_authz_not_pending(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    sa.deactivate_authz(authz.id)
    current, started = sa.start_challenge(authz.id, authz.challenges[0].id)
    assert not started and current.status == DEACTIVATED
    assert current.challenges[0].status == PENDING


def test_start_challenge_missing(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    with pytest.raises(StaleState):
        sa.start_challenge("missing", authz.challenges[0].id)
    with pytest.raises(StaleState):
        sa.start_challenge(authz.id, "missing")


def test_finish_challenge_valid(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    chall = authz.challenges[0]
    sa.start_challenge(authz.id, chall.id)
    after = sa.finish_challenge(
        authz.id,
        chall.id,
        valid=True,
        validated_at=T0 + HOUR,
        error_json=None,
        validation_json='[{"url":"http://example.com/"}]',
        authz_expires=T0 + 30 * DAY,
    )
    assert after.status == VALID and after.expires == T0 + 30 * DAY
    done = after.challenges[0]
    assert done.status == VALID and done.validated_at == T0 + HOUR
    assert done.validation_json == '[{"url":"http://example.com/"}]'
    assert [c.status for c in after.challenges[1:]] == [PENDING, PENDING]
    assert sa.get_authz(authz.id) == after
    with pytest.raises(StaleState):  # no longer processing
        sa.finish_challenge(
            authz.id, chall.id, valid=False, validated_at=None, error_json="{}",
            validation_json=None, authz_expires=None,
        )  # fmt: skip
    _, started = sa.start_challenge(authz.id, authz.challenges[1].id)
    assert not started  # a valid challenge ends the authorization's attempts


def test_finish_challenge_invalid_keeps_expiry(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    chall = authz.challenges[1]
    sa.start_challenge(authz.id, chall.id)
    error = '{"type":"urn:ietf:params:acme:error:dns"}'
    after = sa.finish_challenge(
        authz.id, chall.id, valid=False, validated_at=None, error_json=error,
        validation_json=None, authz_expires=None,
    )  # fmt: skip
    assert after.status == INVALID and after.expires == authz.expires
    assert after.challenges[1].status == INVALID and after.challenges[1].error_json == error


def test_finish_challenge_not_processing(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    for authz_id, chall_id in ((authz.id, authz.challenges[0].id), ("missing", "missing")):
        with pytest.raises(StaleState):
            sa.finish_challenge(
                authz_id, chall_id, valid=True, validated_at=T0, error_json=None,
                validation_json=None, authz_expires=None,
            )  # fmt: skip
    assert sa.get_authz(authz.id) == authz


def test_deactivate_authz(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    assert sa.deactivate_authz(authz.id) == replace(authz, status=DEACTIVATED)
    with pytest.raises(StaleState):
        sa.deactivate_authz(authz.id)
    with pytest.raises(StaleState):
        sa.deactivate_authz("missing")
    account = new_account(sa)
    valid, invalid = make_authz(account.id, status=VALID), make_authz(account.id, status=INVALID)
    sa.create_order(make_order(account.id, [valid, invalid]), [valid, invalid])
    assert sa.deactivate_authz(valid.id).status == DEACTIVATED
    with pytest.raises(StaleState):
        sa.deactivate_authz(invalid.id)


# --- finalize and certificates ---------------------------------------------------------


def test_finalize_success(sa: StorageAuthority) -> None:
    order = new_order(sa, new_account(sa))
    assert sa.begin_finalize(order.id)
    assert not sa.begin_finalize(order.id)
    assert sa.get_order(order.id).finalize_state == FINALIZE_PROCESSING  # type: ignore[union-attr]
    cert = make_cert(order)
    done = sa.complete_finalize(order.id, cert)
    assert done == replace(order, finalize_state=FINALIZE_VALID, certificate_serial=cert.serial)
    assert sa.get_order(order.id) == done
    assert sa.get_certificate(cert.serial) == cert
    assert sa.get_certificate("00") is None
    with pytest.raises(StaleState):
        sa.complete_finalize(order.id, make_cert(order))
    with pytest.raises(StaleState):
        sa.fail_finalize(order.id, "{}")
    assert not sa.begin_finalize(order.id)
    assert not sa.begin_finalize("missing")


def test_complete_finalize_requires_processing(sa: StorageAuthority) -> None:
    order = new_order(sa, new_account(sa))
    cert = make_cert(order)
    with pytest.raises(StaleState):
        sa.complete_finalize(order.id, cert)
    with pytest.raises(StaleState):
        sa.complete_finalize("missing", cert)
    assert sa.get_certificate(cert.serial) is None
    assert sa.get_order(order.id).finalize_state == FINALIZE_NONE  # type: ignore[union-attr]


def test_complete_finalize_duplicate_serial_writes_nothing(sa: StorageAuthority) -> None:
    first, second = processing_order(sa), processing_order(sa)
    cert = make_cert(first, serial="0abc")
    sa.complete_finalize(first.id, cert)
    with pytest.raises(DuplicateSerial):
        sa.complete_finalize(second.id, make_cert(second, serial="0abc"))
    assert sa.get_order(second.id) == second
    assert sa.get_certificate("0abc") == cert
    retried = sa.complete_finalize(second.id, make_cert(second, serial="0abd"))
    assert retried.certificate_serial == "0abd"


def test_fail_finalize(sa: StorageAuthority) -> None:
    order = processing_order(sa)
    error = '{"type":"urn:ietf:params:acme:error:badCSR"}'
    failed = sa.fail_finalize(order.id, error)
    assert failed.finalize_state == FINALIZE_INVALID and failed.error_json == error
    assert sa.get_order(order.id) == failed
    with pytest.raises(StaleState):
        sa.fail_finalize(order.id, error)
    with pytest.raises(StaleState):
        sa.fail_finalize(new_order(sa, new_account(sa)).id, error)


def test_revoke_and_list_revoked(sa: StorageAuthority) -> None:
    order = processing_order(sa)
    sa.complete_finalize(order.id, make_cert(order, serial="01"))
    other_orders = [processing_order(sa) for _ in range(3)]
    sa.complete_finalize(other_orders[0].id, make_cert(other_orders[0], serial="02"))
    sa.complete_finalize(
        other_orders[1].id, make_cert(other_orders[1], serial="03", not_after=T0 + DAY)
    )
    sa.complete_finalize(
        other_orders[2].id, make_cert(other_orders[2], serial="04", issuer_id="e2")
    )
    assert sa.list_revoked("e1", T0) == []
    assert sa.revoke_certificate("01", 1, T0 + HOUR)
    assert not sa.revoke_certificate("01", 4, T0 + 2 * HOUR)
    with pytest.raises(StaleState):
        sa.revoke_certificate("ff", 0, T0)
    revoked = sa.get_certificate("01")
    assert revoked is not None
    assert (revoked.status, revoked.revoked_at, revoked.revocation_reason) == (
        CERT_REVOKED,
        T0 + HOUR,
        1,
    )
    assert sa.get_certificate("02").status == CERT_GOOD  # type: ignore[union-attr]
    for serial in ("03", "04"):
        assert sa.revoke_certificate(serial, 0, T0 + HOUR)
    assert sa.list_revoked("e1", T0 + HOUR) == [
        RevokedEntry("01", T0 + HOUR, 1),
        RevokedEntry("03", T0 + HOUR, 0),
    ]
    # Past its notAfter a certificate leaves the CRL (RFC 5280 §5.1.2.6).
    assert sa.list_revoked("e1", T0 + 2 * DAY) == [RevokedEntry("01", T0 + HOUR, 1)]
    assert sa.list_revoked("e2", T0) == [RevokedEntry("04", T0 + HOUR, 0)]
    assert sa.list_revoked("nobody", T0) == []


# --- real concurrency ---------------------------------------------------------------


def test_race_begin_finalize_has_one_winner(sa: StorageAuthority) -> None:
    order = new_order(sa, new_account(sa))
    results = race(RACERS, lambda _: sa.begin_finalize(order.id))
    assert results.count(True) == 1


def test_race_create_account_creates_one(sa: StorageAuthority) -> None:
    results = race(RACERS, lambda _: sa.create_account(make_account("contended")))
    assert [created for _, created in results].count(True) == 1
    assert len({account.id for account, _ in results}) == 1
    winner = sa.get_account_by_thumbprint("contended")
    assert winner is not None and all(account == winner for account, _ in results)


def test_race_start_same_challenge_has_one_winner(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    results = race(RACERS, lambda _: sa.start_challenge(authz.id, authz.challenges[0].id))
    assert [started for _, started in results].count(True) == 1


def test_race_start_different_challenges_has_one_winner(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    ids = [c.id for c in authz.challenges]
    results = race(RACERS, lambda i: sa.start_challenge(authz.id, ids[i % len(ids)]))
    assert [started for _, started in results].count(True) == 1
    final = sa.get_authz(authz.id)
    assert final is not None
    assert [c.status for c in final.challenges].count(PROCESSING) == 1


def test_race_eab_binding_has_one_winner(sa: StorageAuthority) -> None:
    sa.create_eab_key(EabKeyRecord(kid="kid", hmac_key=b"k", created_at=T0, account_id=None))

    def bind(_: int) -> bool:
        try:
            return sa.create_account(make_account(), eab_kid="kid")[1]
        except EabKeyUnavailable:
            return False

    assert race(RACERS, bind).count(True) == 1
