"""SA micro-benchmark: per-call microseconds for the issuance hot path.

    python bench/sa_micro.py [--n 2000] [--names 1] [--url sqlite:///path.db]

Defaults to a fresh SQLite file in a temporary directory (the embedded
store, WAL). Prints one line per step: mean and median microseconds per call.
A figure-printing script, not a test (DESIGN.md §5).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from certmint.ca.storage import StorageAuthority, open_storage
from certmint.ca.storage.records import (
    ACCOUNT_VALID,
    PENDING,
    AccountRecord,
    AuthzRecord,
    CertificateRecord,
    ChallengeRecord,
    OrderRecord,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def build_order(n: str, account_id: str, names: int) -> tuple[OrderRecord, list[AuthzRecord]]:
    authzs = []
    for k in range(names):
        authz_id = f"az-{n}-{k}"
        challenges = tuple(
            ChallengeRecord(f"ch-{n}-{k}-{i}", authz_id, kind, f"tok-{n}-{k}-{i}", PENDING)
            for i, kind in enumerate(("http-01", "dns-01", "tls-alpn-01"))
        )
        authz = AuthzRecord(
            id=authz_id,
            account_id=account_id,
            identifier_type="dns",
            identifier_value=f"n{k}.host{n}.example",
            wildcard=False,
            status=PENDING,
            expires=T0 + timedelta(days=7),
            created_at=T0,
            challenges=challenges,
        )
        authzs.append(authz)
    order = OrderRecord(
        id=f"order-{n}",
        account_id=account_id,
        identifiers=tuple(sorted(("dns", a.identifier_value) for a in authzs)),
        authz_ids=tuple(a.id for a in authzs),
        profile="classic",
        not_before=None,
        not_after=None,
        expires=T0 + timedelta(days=7),
        created_at=T0,
    )
    return order, authzs


def timed(samples: list[float], call: Callable[[], object]) -> None:
    start = time.perf_counter()
    call()
    samples.append((time.perf_counter() - start) * 1e6)


def run(sa: StorageAuthority, n: int, names: int) -> dict[str, list[float]]:
    # A per-run prefix keeps ids unique when --url points at a database reused across runs.
    run_id = os.urandom(4).hex()
    account = AccountRecord(
        f"acct-{run_id}", f"thumb-{run_id}", "{}", ACCOUNT_VALID, (), True, None, T0
    )
    sa.create_account(account)
    steps = ("get_account", "find_reusable_order", "find_reusable_authzs", "create_order",
             "get_order", "get_authzs", "get_authz", "start_challenge", "finish_challenge",
             "begin_finalize", "complete_finalize", "get_certificate")  # fmt: skip
    samples: dict[str, list[float]] = {step: [] for step in steps}
    for i in range(n):
        order, authzs = build_order(f"{run_id}-{i}", account.id, names)
        # newOrder as the RA does it: authenticate, look for an order and for
        # authorizations to reuse (none here: every order names fresh hosts).
        timed(samples["get_account"], partial(sa.get_account, account.id))
        timed(
            samples["find_reusable_order"],
            partial(sa.find_reusable_order, account.id, order.identifiers, order.profile, T0),
        )
        wanted = [(a.identifier_type, a.identifier_value, a.wildcard) for a in authzs]
        timed(
            samples["find_reusable_authzs"],
            partial(sa.find_reusable_authzs, account.id, wanted, ("pending", "valid"), T0),
        )
        timed(samples["create_order"], partial(sa.create_order, order, authzs))

        timed(samples["get_order"], partial(sa.get_order, order.id))
        timed(samples["get_authzs"], partial(sa.get_authzs, order.authz_ids))
        for authz in authzs:
            timed(samples["get_authz"], partial(sa.get_authz, authz.id))
            ids = (authz.id, authz.challenges[0].id)
            timed(samples["start_challenge"], partial(sa.start_challenge, *ids))

            def finish(ids: tuple[str, str] = ids) -> None:
                sa.finish_challenge(
                    *ids,
                    valid=True,
                    validated_at=T0,
                    error_json=None,
                    validation_json="[]",
                    authz_expires=T0 + timedelta(days=30),
                )

            timed(samples["finish_challenge"], finish)
        timed(samples["begin_finalize"], partial(sa.begin_finalize, order.id))
        cert = CertificateRecord(
            f"{run_id}{i:024x}", account.id, order.id, "e1", b"\x30" * 800, ("example.com",),
            T0, T0 + timedelta(days=90), "00" * 32, T0,
        )  # fmt: skip
        timed(samples["complete_finalize"], partial(sa.complete_finalize, order.id, cert))
        timed(samples["get_certificate"], partial(sa.get_certificate, cert.serial))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="orders to run through")
    parser.add_argument("--names", type=int, default=1, help="identifiers per order")
    parser.add_argument("--url", help="storage URL (default: temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        sa = open_storage(url)
        try:
            started, cpu_started = time.perf_counter(), time.process_time()
            samples = run(sa, args.n, args.names)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        finally:
            sa.close()
    print(f"{url.split(':', 1)[0]}: {args.n} orders x {args.names} name(s)")
    print(f"{'step':<24}{'mean µs':>10}{'median µs':>12}{'calls':>8}")
    for step, values in samples.items():
        mean, median = statistics.fmean(values), statistics.median(values)
        print(f"{step:<24}{mean:>10.0f}{median:>12.0f}{len(values):>8}")
    total = sum(statistics.fmean(values) * len(values) for values in samples.values()) / args.n
    print(f"{'all steps, per order':<24}{total:>10.0f}")
    print(
        f"whole lifecycle: {args.n / elapsed:.0f} orders/s on one thread, "
        f"{cpu / args.n * 1e6:.0f} µs CPU per order (process time, loop included)"
    )


if __name__ == "__main__":
    main()
