"""Typed storage errors (DESIGN.md §2: internal errors are typed).

The SA raises only these (plus SQLAlchemy's own errors for broken databases).
The RA maps them to ACME problems; the SA never decides what a client sees.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class: something the SA refused or could not do."""


class StaleState(StorageError):
    """A conditional update found the row missing or not in the expected state.

    This is the concurrency guard's answer: another request got there first
    (or the caller asked for an impossible transition).
    """


class KeyInUse(StorageError):
    """Another account already holds this key (RFC 8555 §7.3.5 key change)."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"key already in use by account {account_id}")
        self.account_id = account_id


class EabKeyUnavailable(StorageError):
    """The external account binding kid is unknown or already bound (RFC 8555 §7.3.4)."""


class DuplicateSerial(StorageError):
    """A certificate with this serial already exists; nothing was written."""


class AlreadyReplaced(StorageError):
    """RFC 9773 §5: the certificate an order replaces was already replaced by
    another order; nothing was written."""

    def __init__(self, serial: str, order_id: str | None) -> None:
        super().__init__(f"certificate {serial} already replaced by order {order_id}")
        self.serial = serial
        self.order_id = order_id
