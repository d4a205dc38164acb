"""Status rules (RFC 8555 §7.1.6), pure functions of stored state and now.

Order status is derived on read, never stored (DESIGN.md §2), so an order
cannot disagree with its authorizations, and expiry needs no background job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

_EXPIRABLE = frozenset({"pending", "valid"})
_FAILED_AUTHZ = frozenset({"invalid", "deactivated", "revoked", "expired"})


def effective_authz_status(status: str, expires: datetime, now: datetime) -> str:
    """A pending or valid authorization at or past ``expires`` is "expired"
    (RFC 8555 §7.1.6 state diagram); other statuses are final."""
    if status in _EXPIRABLE and now >= expires:
        return "expired"
    return status


def derive_order_status(
    finalize_state: str,
    expires: datetime,
    authz_statuses: Sequence[str],
    now: datetime,
) -> str:
    """The order status of RFC 8555 §7.1.6 from the stored finalize state,
    the *effective* authorization statuses, and now."""
    if finalize_state == "valid":
        return "valid"
    if finalize_state == "processing":
        return "processing"
    if finalize_state == "invalid":
        return "invalid"
    if finalize_state != "none":
        raise ValueError(f"unknown finalize state {finalize_state!r}")
    # An order expires only before it is finalized; once issued it stays valid.
    if now >= expires:
        return "invalid"
    if any(s in _FAILED_AUTHZ for s in authz_statuses):
        return "invalid"
    if authz_statuses and all(s == "valid" for s in authz_statuses):
        return "ready"
    return "pending"
