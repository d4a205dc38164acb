from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certmint.protocol.status import derive_order_status, effective_authz_status

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
EARLIER = NOW - timedelta(seconds=1)


@pytest.mark.parametrize(
    ("status", "expires", "expected"),
    [
        ("pending", LATER, "pending"),
        ("valid", LATER, "valid"),
        ("pending", NOW, "expired"),  # at expires is already expired
        ("valid", NOW, "expired"),
        ("pending", EARLIER, "expired"),
        ("valid", EARLIER, "expired"),
        ("invalid", EARLIER, "invalid"),
        ("deactivated", EARLIER, "deactivated"),
        ("revoked", EARLIER, "revoked"),
        ("invalid", LATER, "invalid"),
    ],
)
def test_effective_authz_status(status: str, expires: datetime, expected: str) -> None:
    assert effective_authz_status(status, expires, NOW) == expected


@pytest.mark.parametrize(
    ("finalize", "expires", "authzs", "expected"),
    [
        ("valid", EARLIER, ["expired"], "valid"),
        ("processing", EARLIER, ["valid"], "processing"),
        ("invalid", LATER, ["valid"], "invalid"),
        ("none", NOW, ["valid"], "invalid"),  # order expired
        ("none", EARLIER, ["pending"], "invalid"),
        ("none", LATER, ["valid", "valid"], "ready"),
        ("none", LATER, ["valid", "pending"], "pending"),
        ("none", LATER, ["pending", "pending"], "pending"),
        ("none", LATER, ["valid", "invalid"], "invalid"),
        ("none", LATER, ["pending", "deactivated"], "invalid"),
        ("none", LATER, ["valid", "revoked"], "invalid"),
        ("none", LATER, ["valid", "expired"], "invalid"),
        ("none", LATER, [], "pending"),
    ],
)
def test_derive_order_status(
    finalize: str, expires: datetime, authzs: list[str], expected: str
) -> None:
    assert derive_order_status(finalize, expires, authzs, NOW) == expected


def test_derive_order_status_rejects_unknown_state() -> None:
    with pytest.raises(ValueError):
        derive_order_status("done", LATER, ["valid"], NOW)
