"""Record builders and a thread racer for the storage contract suite.

Ids come from a counter and times from a fixed instant, so runs are
reproducible and every test's rows are distinct.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from certmint.ca.storage import StorageAuthority
from certmint.ca.storage.records import (
    ACCOUNT_VALID,
    FINALIZE_PROCESSING,
    PENDING,
    AccountRecord,
    AuthzRecord,
    CertificateRecord,
    ChallengeRecord,
    OrderRecord,
)

# A fixed instant with non-zero microseconds, to prove they survive storage.
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_ids = itertools.count(1)
RACERS = 8
R = TypeVar("R")


def new_id(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


def make_account(thumbprint: str | None = None, **kw: object) -> AccountRecord:
    account = AccountRecord(
        id=new_id("acct"),
        key_thumbprint=thumbprint or new_id("thumb"),
        jwk_json='{"kty":"EC"}',
        status=ACCOUNT_VALID,
        contact=("mailto:a@example.com", "mailto:b@example.com"),
        tos_agreed=True,
        eab_kid=None,
        created_at=T0,
    )
    return replace(account, **kw)  # type: ignore[arg-type]


def make_authz(
    account_id: str,
    value: str = "example.com",
    *,
    wildcard: bool = False,
    status: str = PENDING,
    expires: datetime = T0 + 7 * DAY,
    created_at: datetime = T0,
) -> AuthzRecord:
    authz_id = new_id("authz")
    challenges = tuple(
        ChallengeRecord(
            id=new_id("ch"), authz_id=authz_id, type=t, token=new_id("tok"), status=PENDING
        )
        for t in ("http-01", "dns-01", "tls-alpn-01")
    )
    return AuthzRecord(
        id=authz_id,
        account_id=account_id,
        identifier_type="dns",
        identifier_value=value,
        wildcard=wildcard,
        status=status,
        expires=expires,
        created_at=created_at,
        challenges=challenges,
    )


def make_order(account_id: str, authzs: list[AuthzRecord], **kw: object) -> OrderRecord:
    order = OrderRecord(
        id=new_id("order"),
        account_id=account_id,
        identifiers=tuple(sorted(("dns", a.identifier_value) for a in authzs)),
        authz_ids=tuple(a.id for a in authzs),
        profile="classic",
        not_before=None,
        not_after=None,
        expires=T0 + 7 * DAY,
        created_at=T0,
    )
    return replace(order, **kw)  # type: ignore[arg-type]


def make_cert(order: OrderRecord, serial: str | None = None, **kw: object) -> CertificateRecord:
    cert = CertificateRecord(
        serial=serial or f"{next(_ids):032x}",
        account_id=order.account_id,
        order_id=order.id,
        issuer_id="e1",
        der=b"\x30\x82\x01\x00" + bytes(range(256)),
        names=("example.com", "www.example.com"),
        not_before=T0,
        not_after=T0 + 90 * DAY,
        key_spki_sha256="ab" * 32,
        issued_at=T0,
    )
    return replace(cert, **kw)  # type: ignore[arg-type]


def new_account(sa: StorageAuthority, **kw: object) -> AccountRecord:
    account, created = sa.create_account(make_account(**kw))  # type: ignore[arg-type]
    assert created
    return account


def new_order(
    sa: StorageAuthority,
    account: AccountRecord,
    names: tuple[str, ...] = ("example.com",),
    **kw: object,
) -> OrderRecord:
    authzs = [make_authz(account.id, name) for name in names]
    return sa.create_order(make_order(account.id, authzs, **kw), authzs)


def processing_order(sa: StorageAuthority) -> OrderRecord:
    order = new_order(sa, new_account(sa))
    assert sa.begin_finalize(order.id)
    return replace(order, finalize_state=FINALIZE_PROCESSING)


def race(n: int, call: Callable[[int], R]) -> list[R]:
    """Run ``call(i)`` for i in range(n) on n threads released together."""
    barrier = threading.Barrier(n, timeout=10)

    def run(i: int) -> R:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n), timeout=30))


def pending_authz(sa: StorageAuthority) -> AuthzRecord:
    account = new_account(sa)
    authz = make_authz(account.id)
    sa.create_order(make_order(account.id, [authz]), [authz])
    return authz
