"""Storage contract, revocation side (revision 0004), on SQLite and PostgreSQL:
CRL shards on certificates, revoking by key and by account, blocked keys,
the CRL shard rows (dirty marks, leases, stored CRLs) and a real race for a
lease, plus migration 0004 on a database with data."""

from __future__ import annotations

import hashlib

from sqlalchemy import inspect

from certmint.ca.storage import StorageAuthority, migrate
from certmint.ca.storage.engine import create_storage_engine
from certmint.ca.storage.records import (
    BLOCKED_BY_ADMIN,
    BLOCKED_BY_REVOCATION,
    CERT_GOOD,
    CERT_REVOKED,
    BlockedKeyRecord,
    CertificateRecord,
    KeyRevocation,
    RevokedEntry,
    StoredCrl,
)

from .conftest import Backend
from .storage_builders import DAY, HOUR, RACERS, T0, make_cert, processing_order, race

KEY_A = "aa" * 32
KEY_B = "bb" * 32


def issue(sa: StorageAuthority, serial: str, **kw: object) -> CertificateRecord:
    order = processing_order(sa)
    cert = make_cert(order, serial=serial, **kw)
    sa.complete_finalize(order.id, cert)
    return cert


def status(sa: StorageAuthority, serial: str) -> tuple[str, int | None]:
    record = sa.get_certificate(serial)
    assert record is not None
    return record.status, record.revocation_reason


def dirty(sa: StorageAuthority, issuer: str = "e1") -> dict[int, int]:
    """shard → dirty_version, for the rows that exist."""
    return {shard: s.dirty_version for shard, s in sa.crl_shard_states(issuer).items()}


def test_the_crl_shard_is_stored_with_the_certificate(sa: StorageAuthority) -> None:
    issue(sa, "01", crl_shard=7)
    issue(sa, "02")  # issued before sharding: no shard
    assert sa.get_certificate("01").crl_shard == 7  # type: ignore[union-attr]
    assert sa.get_certificate("02").crl_shard is None  # type: ignore[union-attr]
    assert sa.max_crl_shard("e1") == 7
    assert sa.max_crl_shard("e2") is None


def test_list_revoked_by_shard(sa: StorageAuthority) -> None:
    issue(sa, "01", crl_shard=1)
    issue(sa, "02", crl_shard=2)
    issue(sa, "03")
    issue(sa, "04", crl_shard=1, not_after=T0 + DAY)
    issue(sa, "05", crl_shard=1, issuer_id="e2")
    for serial in ("01", "02", "03", "04", "05"):
        assert sa.revoke_certificate(serial, 4, T0 + HOUR)
    assert sa.list_revoked("e1", T0 + HOUR, 1) == [
        RevokedEntry("01", T0 + HOUR, 4),
        RevokedEntry("04", T0 + HOUR, 4),
    ]
    assert [e.serial for e in sa.list_revoked("e1", T0 + 2 * DAY, 1)] == ["01"]
    assert [e.serial for e in sa.list_revoked("e1", T0 + HOUR, 2)] == ["02"]
    # Shard 0 (or none) is the complete CRL: every shard and the unsharded.
    assert [e.serial for e in sa.list_revoked("e1", T0 + HOUR, 0)] == ["01", "02", "03", "04"]
    assert [e.serial for e in sa.list_revoked("e1", T0 + HOUR)] == ["01", "02", "03", "04"]
    assert [e.serial for e in sa.list_revoked("e2", T0 + HOUR, 1)] == ["05"]


def test_a_revocation_marks_its_shard_and_the_complete_crl_dirty(sa: StorageAuthority) -> None:
    issue(sa, "01", crl_shard=3)
    issue(sa, "02")
    for shard in (0, 3, 4):
        assert sa.lease_crl_shard("e1", shard, "t", T0, T0 + HOUR) is not None
        sa.release_crl_lease("e1", shard, "t")
    assert dirty(sa) == {0: 0, 3: 0, 4: 0}
    assert sa.revoke_certificate("01", 1, T0 + HOUR)
    assert dirty(sa) == {0: 1, 3: 1, 4: 0}
    states = sa.crl_shard_states("e1")
    assert states[3].dirty_since == T0 + HOUR
    assert states[4].dirty_since is None
    assert sa.revoke_certificate("02", 0, T0 + 2 * HOUR)  # unsharded: complete CRL only
    assert dirty(sa) == {0: 2, 3: 1, 4: 0}
    # dirty_since keeps the first unpublished revocation.
    assert sa.crl_shard_states("e1")[0].dirty_since == T0 + HOUR
    # Re-revoking for keyCompromise marks them again; the date stays.
    assert sa.rerevoke_for_key_compromise("02", T0 + 3 * HOUR)
    assert not sa.rerevoke_for_key_compromise("02", T0 + 3 * HOUR)
    assert dirty(sa)[0] == 3
    record = sa.get_certificate("02")
    assert record is not None
    assert (record.revocation_reason, record.revoked_at) == (1, T0 + 2 * HOUR)


def test_revoke_key_blocks_and_revokes_every_unexpired_certificate(sa: StorageAuthority) -> None:
    issue(sa, "01", key_spki_sha256=KEY_A, crl_shard=1)
    issue(sa, "02", key_spki_sha256=KEY_A, crl_shard=2)  # another account (processing_order)
    issue(sa, "03", key_spki_sha256=KEY_A, not_after=T0 + HOUR)  # expired by then
    issue(sa, "04", key_spki_sha256=KEY_A)
    issue(sa, "05", key_spki_sha256=KEY_B)
    assert sa.revoke_certificate("04", 4, T0)  # superseded before the compromise
    assert not sa.is_key_blocked(bytes.fromhex(KEY_A))
    outcome = sa.revoke_key(
        KEY_A, T0 + 2 * HOUR, source=BLOCKED_BY_REVOCATION, comment="c", revoked_serial="01"
    )
    assert outcome == KeyRevocation(
        revoked=("01", "02"), reason_updated=("04",), newly_blocked=True
    )
    assert status(sa, "01") == (CERT_REVOKED, 1)
    assert status(sa, "02") == (CERT_REVOKED, 1)
    assert status(sa, "03") == (CERT_GOOD, None)  # expired: nothing to revoke
    assert status(sa, "04") == (CERT_REVOKED, 1)
    assert sa.get_certificate("04").revoked_at == T0  # type: ignore[union-attr]
    assert status(sa, "05") == (CERT_GOOD, None)
    assert sa.is_key_blocked(bytes.fromhex(KEY_A))
    assert not sa.is_key_blocked(bytes.fromhex(KEY_B))
    blocked = sa.get_blocked_key(KEY_A)
    assert blocked == BlockedKeyRecord(KEY_A, T0 + 2 * HOUR, BLOCKED_BY_REVOCATION, "c", "01")
    # Again: nothing left to do, and the first block stays as it was.
    again = sa.revoke_key(KEY_A, T0 + 3 * HOUR, source=BLOCKED_BY_ADMIN)
    assert again == KeyRevocation(revoked=(), reason_updated=(), newly_blocked=False)
    assert sa.get_blocked_key(KEY_A) == blocked
    assert sa.good_serials_for_key(KEY_A, T0) == ["03"]
    assert sa.good_serials_for_key(KEY_A, T0 + 2 * HOUR) == []


def test_block_key_and_list(sa: StorageAuthority) -> None:
    first = BlockedKeyRecord(KEY_B, T0, BLOCKED_BY_ADMIN, "operator file")
    assert sa.block_key(first)
    assert not sa.block_key(BlockedKeyRecord(KEY_B, T0 + DAY, BLOCKED_BY_REVOCATION))
    assert sa.list_blocked_keys() == [first]
    assert sa.is_key_blocked(bytes.fromhex(KEY_B))
    assert not sa.is_key_blocked(hashlib.sha256(b"never").digest())


def test_revoke_account_certificates(sa: StorageAuthority) -> None:
    order = processing_order(sa)
    sa.complete_finalize(order.id, make_cert(order, serial="01", crl_shard=5))
    second = processing_order(sa)
    mine = make_cert(second, serial="02", not_after=T0 + HOUR)
    sa.complete_finalize(second.id, mine)
    other = issue(sa, "03")
    account = order.account_id
    assert sa.good_serials_for_account(account, T0) == ["01"]
    assert sa.revoke_account_certificates(account, 9, T0 + 2 * HOUR) == ["01"]
    assert status(sa, "01") == (CERT_REVOKED, 9)
    assert status(sa, other.serial) == (CERT_GOOD, None)
    assert sa.revoke_account_certificates(account, 9, T0 + 2 * HOUR) == []
    assert sa.revoke_account_certificates("nobody", 0, T0) == []


def test_crl_lease_store_and_read(sa: StorageAuthority) -> None:
    assert sa.get_crl("e1", 1) is None
    assert sa.get_crl_number("e1", 1) is None
    state = sa.lease_crl_shard("e1", 1, "tok-a", T0, T0 + HOUR)
    assert state is not None
    assert (state.crl_number, state.dirty_version, state.leased_until) == (None, 0, T0 + HOUR)
    # Leased: nobody else gets it before it expires.
    assert sa.lease_crl_shard("e1", 1, "tok-b", T0 + HOUR - HOUR / 2, T0 + 2 * HOUR) is None
    crl = StoredCrl("e1", 1, 42, T0, T0 + 7 * DAY, b"\x30\x03\x02\x01\x01")
    # Only the lease holder may store.
    assert not sa.store_crl(crl, token="tok-b", entries=3, read_version=0)
    assert sa.store_crl(crl, token="tok-a", entries=3, read_version=0)
    assert sa.get_crl("e1", 1) == crl
    assert sa.get_crl_number("e1", 1) == 42
    stored = sa.crl_shard_states("e1")[1]
    assert (stored.crl_number, stored.entries, stored.leased_until) == (42, 3, None)
    # The lease is free again; an expired lease can be taken over too.
    assert sa.lease_crl_shard("e1", 1, "tok-b", T0, T0 + HOUR) is not None
    assert sa.lease_crl_shard("e1", 1, "tok-c", T0 + HOUR, T0 + 2 * HOUR) is not None
    assert not sa.store_crl(crl, token="tok-b", entries=3, read_version=0)  # lost it


def test_a_revocation_during_a_build_keeps_the_shard_dirty(sa: StorageAuthority) -> None:
    issue(sa, "01", crl_shard=2)
    issue(sa, "02", crl_shard=2)
    assert sa.lease_crl_shard("e1", 2, "t0", T0, T0 + HOUR) is not None
    sa.release_crl_lease("e1", 2, "t0")
    assert sa.revoke_certificate("01", 0, T0)
    state = sa.lease_crl_shard("e1", 2, "t1", T0, T0 + HOUR)
    assert state is not None and state.dirty_version == 1
    assert sa.revoke_certificate("02", 0, T0 + 1 * HOUR / 60)  # lands mid-build
    crl = StoredCrl("e1", 2, 1, T0, T0 + DAY, b"crl")
    assert sa.store_crl(crl, token="t1", entries=1, read_version=state.dirty_version)
    assert sa.crl_shard_states("e1")[2].dirty_since is not None  # still to publish
    state = sa.lease_crl_shard("e1", 2, "t2", T0, T0 + HOUR)
    assert state is not None
    crl2 = StoredCrl("e1", 2, 2, T0, T0 + DAY, b"crl2")
    assert sa.store_crl(crl2, token="t2", entries=2, read_version=state.dirty_version)
    assert sa.crl_shard_states("e1")[2].dirty_since is None


def test_one_lease_among_racers(sa: StorageAuthority) -> None:
    won = race(RACERS, lambda i: sa.lease_crl_shard("e1", 9, f"r{i}", T0, T0 + HOUR))
    assert sum(1 for state in won if state is not None) == 1


def test_migration_0004_upgrades_a_database_with_data(backend: Backend) -> None:
    """From 0003 with a certificate row to head: the old row reads with no shard."""
    from alembic import command
    from alembic.config import Config

    from certmint.ca.storage import MIGRATIONS_DIR

    engine = create_storage_engine(backend.url, connect_args=backend.connect_args)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0003")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO accounts (id, key_thumbprint, jwk_json, status, contact_json, "
                "tos_agreed, created_at) VALUES ('a1', 't1', '{}', 'valid', '[]', true, 0)"
            )
            conn.exec_driver_sql(
                "INSERT INTO certificates (serial, account_id, order_id, issuer_id, der, "
                "names_json, not_before, not_after, key_spki_sha256, issued_at, status) "
                "VALUES ('0f', 'a1', 'o1', 'e1', '\\x30'::bytea, '[]', 0, 9999999999999999, "
                f"'{KEY_A}', 0, 'good')"
                if backend.name == "postgres"
                else "INSERT INTO certificates (serial, account_id, order_id, issuer_id, der, "
                "names_json, not_before, not_after, key_spki_sha256, issued_at, status) "
                f"VALUES ('0f', 'a1', 'o1', 'e1', x'30', '[]', 0, 9999999999999999, '{KEY_A}', "
                "0, 'good')"
            )
        migrate(engine)
        tables = set(inspect(engine).get_table_names())
        assert {"blocked_keys", "crl_shards"} <= tables
        sa = StorageAuthority(engine)
        try:
            record = sa.get_certificate("0f")
            assert record is not None and record.crl_shard is None
            assert sa.revoke_key(KEY_A, T0, source=BLOCKED_BY_ADMIN).revoked == ("0f",)
        finally:
            sa.close()
    finally:
        engine.dispose()
