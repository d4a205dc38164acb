"""The CRL updater (ca/crl_updater.py) over a real SQLite SA and the dev
hierarchy, on a fake clock: when shards are due, what each CRL holds, leases,
a lint refusal keeping the previous CRL, and the run loop stopping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certmint.ca.crl_updater import CrlUpdater, due_reason, tick_seconds
from certmint.ca.issuance.crl import CrlConfig
from certmint.ca.issuance.crl_lint import lint_crl
from certmint.ca.issuance.hierarchy import Hierarchy, load_or_create_dev_hierarchy
from certmint.ca.issuance.signing import LintError
from certmint.ca.storage import StorageAuthority, open_storage
from certmint.ca.storage.records import (
    ACCOUNT_VALID,
    FINALIZE_NONE,
    AccountRecord,
    CertificateRecord,
    CrlShardState,
    OrderRecord,
)
from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy

START = datetime(2026, 3, 1, 12, tzinfo=UTC)
BASE = "http://ca.example.org/crl/"
CONFIG = CrlConfig(shards=4, update_after_revocation=timedelta(seconds=60))


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return load_or_create_dev_hierarchy(
        tmp_path_factory.mktemp("h"), FakeClock(START), SeededEntropy(1)
    )


@pytest.fixture
def sa(tmp_path: Path) -> Iterator[StorageAuthority]:
    authority = open_storage(f"sqlite:///{tmp_path / 'ca.db'}")
    try:
        yield authority
    finally:
        authority.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def updater(
    hierarchy: Hierarchy, sa: StorageAuthority, clock: FakeClock, **kw: object
) -> CrlUpdater:
    args: dict[str, object] = {
        "issuers": hierarchy.issuers,
        "sa": sa,
        "clock": clock,
        "entropy": SeededEntropy(2),
        "config": CONFIG,
        "base_url": BASE,
        "lint": lint_crl,
    }
    args.update(kw)
    return CrlUpdater(**args)  # type: ignore[arg-type]


_serial = iter(range(0x1000, 0x100000))


def issue(sa: StorageAuthority, shard: int | None, not_after: datetime) -> str:
    serial = f"{next(_serial):036x}"
    account = AccountRecord(
        id=f"a{serial}",
        key_thumbprint=f"t{serial}",
        jwk_json="{}",
        status=ACCOUNT_VALID,
        contact=(),
        tos_agreed=True,
        eab_kid=None,
        created_at=START,
    )
    sa.create_account(account)
    order = OrderRecord(
        id=f"o{serial}",
        account_id=account.id,
        identifiers=(("dns", "example.com"),),
        authz_ids=(),
        profile="classic",
        not_before=None,
        not_after=None,
        expires=START + timedelta(days=7),
        created_at=START,
        finalize_state=FINALIZE_NONE,
    )
    sa.create_order(order, [])
    assert sa.begin_finalize(order.id)
    cert = CertificateRecord(
        serial=serial,
        account_id=account.id,
        order_id=order.id,
        issuer_id="e1",
        der=b"\x30\x00",
        names=("example.com",),
        not_before=START,
        not_after=not_after,
        key_spki_sha256=serial.rjust(64, "0"),
        issued_at=START,
        crl_shard=shard,
    )
    sa.complete_finalize(order.id, cert)
    return serial


def serials(der: bytes) -> set[str]:
    return {f"{entry.serial_number:036x}" for entry in x509.load_der_x509_crl(der)}


def test_due_reasons() -> None:
    now = START
    built = CrlShardState("e1", 1, 5, now, now + timedelta(days=7), 0, 0, None, None)
    assert due_reason(None, now, CONFIG) == "missing"
    assert due_reason(replace(built, crl_number=None), now, CONFIG) == "missing"
    assert due_reason(built, now, CONFIG) is None
    assert due_reason(built, now + CONFIG.interval, CONFIG) == "scheduled"
    dirty = replace(built, dirty_since=now)
    assert due_reason(dirty, now + timedelta(seconds=29), CONFIG) is None
    assert due_reason(dirty, now + timedelta(seconds=30), CONFIG) == "revocation"
    # Looked at a few times per period, never less than 20 times a second.
    assert tick_seconds(CONFIG) == 1.0
    assert tick_seconds(replace(CONFIG, update_after_revocation=timedelta(seconds=1))) == 0.25
    assert tick_seconds(replace(CONFIG, update_after_revocation=timedelta(seconds=0.1))) == 0.05


def test_first_pass_builds_every_shard_and_the_complete_crl(
    hierarchy: Hierarchy, sa: StorageAuthority, clock: FakeClock
) -> None:
    builds = updater(hierarchy, sa, clock).run_once()
    assert [(b.shard, b.reason, b.error) for b in builds] == [
        (shard, "missing", None) for shard in range(5)
    ]
    for shard in range(5):
        stored = sa.get_crl("e1", shard)
        assert stored is not None
        crl = x509.load_der_x509_crl(stored.der)
        assert crl.is_signature_valid(hierarchy.issuers[0].cert.public_key())  # type: ignore[arg-type]
        assert stored.next_update == stored.this_update + CONFIG.validity
        assert crl.last_update_utc == stored.this_update
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert number == stored.crl_number
    assert updater(hierarchy, sa, clock).run_once() == []  # nothing due


def test_a_revocation_is_published_in_its_shard_and_the_complete_crl(
    hierarchy: Hierarchy, sa: StorageAuthority, clock: FakeClock
) -> None:
    crl_updater = updater(hierarchy, sa, clock)
    in_two = issue(sa, 2, START + timedelta(days=90))
    legacy = issue(sa, None, START + timedelta(days=90))
    crl_updater.run_once()
    first_number = sa.get_crl_number("e1", 2)
    clock.advance(5)
    assert sa.revoke_certificate(in_two, 1, clock.now())
    assert sa.revoke_certificate(legacy, 4, clock.now())
    assert crl_updater.run_once() == []  # built 5 s ago: wait for half the period
    clock.advance(25)
    rebuilt = crl_updater.run_once()
    assert {(b.shard, b.reason) for b in rebuilt} == {(0, "revocation"), (2, "revocation")}
    shard_two = sa.get_crl("e1", 2)
    complete = sa.get_crl("e1", 0)
    assert shard_two is not None and complete is not None
    assert serials(shard_two.der) == {in_two}
    assert serials(complete.der) == {in_two, legacy}
    assert first_number is not None and shard_two.crl_number > first_number
    assert all(s.dirty_since is None for s in sa.crl_shard_states("e1").values())
    assert crl_updater.run_once() == []


def test_scheduled_rebuild_drops_expired_entries(
    hierarchy: Hierarchy, sa: StorageAuthority, clock: FakeClock
) -> None:
    crl_updater = updater(hierarchy, sa, clock)
    short = issue(sa, 1, START + timedelta(hours=3))
    assert sa.revoke_certificate(short, 0, clock.now())
    crl_updater.run_once()
    stored = sa.get_crl("e1", 1)
    assert stored is not None and serials(stored.der) == {short}
    clock.advance(CONFIG.interval.total_seconds())
    assert {b.reason for b in crl_updater.run_once()} == {"scheduled"}
    stored = sa.get_crl("e1", 1)
    assert stored is not None and serials(stored.der) == set()  # RFC 5280 §5.1.2.6


def test_a_lowered_shard_count_still_serves_the_highest_named_shard(
    hierarchy: Hierarchy, sa: StorageAuthority, clock: FakeClock
) -> None:
    issue(sa, 7, START + timedelta(days=90))
    crl_updater = updater(hierarchy, sa, clock)
    assert list(crl_updater.shards_of("e1")) == list(range(8))
    assert {b.shard for b in crl_updater.run_once()} == set(range(8))


def test_a_leased_shard_is_left_to_its_builder(
    hierarchy: Hierarchy, sa: StorageAuthority, clock: FakeClock
) -> None:
    assert sa.lease_crl_shard("e1", 3, "someone", clock.now(), clock.now() + timedelta(minutes=5))
    builds = updater(hierarchy, sa, clock).run_once()
    assert [b.error for b in builds if b.shard == 3] == ["leased by another builder"]
    assert sa.get_crl("e1", 3) is None
    clock.advance(5 * 60)  # the lease expired: its builder died
    assert [b.shard for b in updater(hierarchy, sa, clock).run_once()] == [3]


def test_a_lint_refusal_keeps_the_previous_crl(
    hierarchy: Hierarchy, sa: StorageAuthority, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    updater(hierarchy, sa, clock).run_once()
    before = sa.get_crl("e1", 1)
    serial = issue(sa, 1, START + timedelta(days=90))
    assert sa.revoke_certificate(serial, 1, clock.now())
    clock.advance(60)

    def refuse(crl: x509.CertificateRevocationList) -> None:
        raise LintError("CRL", ("ERROR made.up.finding @ tbsCertList",))

    refusing = updater(hierarchy, sa, clock, lint=refuse)
    builds = refusing.run_once()
    assert {b.shard for b in builds} == {0, 1}
    assert all(b.crl_number is None and "made.up.finding" in (b.error or "") for b in builds)
    assert sa.get_crl("e1", 1) == before  # still served
    assert "not built" in caplog.text
    # The lease was released: a working updater publishes it at once.
    assert {b.shard for b in updater(hierarchy, sa, clock).run_once()} == {0, 1}
    after = sa.get_crl("e1", 1)
    assert after is not None and serials(after.der) == {serial}


def test_run_stops_when_asked(hierarchy: Hierarchy, sa: StorageAuthority) -> None:
    from certmint.runtime import SystemClock

    crl_updater = updater(hierarchy, sa, SystemClock())  # type: ignore[arg-type]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(crl_updater.run(stop))
        for _ in range(200):  # bounded: until the first pass stored the CRLs
            if sa.get_crl("e1", 4) is not None:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(main())
    assert sa.get_crl("e1", 0) is not None
