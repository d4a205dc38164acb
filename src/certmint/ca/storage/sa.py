"""The Storage Authority (Boulder's SA): durable records behind a narrow door.

Each public method is ONE business step in ONE transaction (DESIGN.md §2).
State changes are conditional UPDATEs naming the expected current state; the
row count tells the caller whether it won. Nothing here reads the clock:
callers pass ``now``. Values in and out are the frozen records of
``records.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, Row
from sqlalchemy.exc import IntegrityError

from certmint.ca.storage import rows
from certmint.ca.storage import statements as q
from certmint.ca.storage.engine import SQLITE_BEGIN_OPTION
from certmint.ca.storage.errors import (
    DuplicateSerial,
    EabKeyUnavailable,
    KeyInUse,
    StaleState,
    StorageError,
)
from certmint.ca.storage.records import (
    INVALID,
    PENDING,
    PROCESSING,
    VALID,
    AccountRecord,
    AuthzRecord,
    CertificateRecord,
    EabKeyRecord,
    OrderRecord,
    RevokedEntry,
)


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


class StorageAuthority:
    """The SA over one SQLAlchemy engine, thread-safe (one pooled connection per call).

    Build the engine with ``engine.create_storage_engine`` (or just call
    ``open_storage``): on SQLite its hooks supply WAL and BEGIN IMMEDIATE,
    which the write methods' race-freedom relies on.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # SQLite reads take no write lock: single statements run bare (each is
        # atomic on its own), multi-statement reads share one DEFERRED snapshot.
        # PostgreSQL ignores the option.
        self._read_engine = engine.execution_options(**{SQLITE_BEGIN_OPTION: "NONE"})
        self._snapshot_engine = engine.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
        self._inserts = q.dialect_inserts(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # Commits on normal exit, rolls back if the body raises (StaleState etc.).
        with self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read-only connection; ``snapshot`` when it runs more than one statement."""
        with (self._snapshot_engine if snapshot else self._read_engine).connect() as conn:
            yield conn

    # --- accounts / EAB ------------------------------------------------------

    def create_account(
        self, account: AccountRecord, eab_kid: str | None = None
    ) -> tuple[AccountRecord, bool]:
        """Insert an account, or return the one already holding its key.

        RFC 8555 §7.3.1: a newAccount with a known key returns that account.
        The unique index on the thumbprint settles a race between two
        creators; the loser does nothing and reads the winner's row. With
        ``eab_kid`` the key is bound in the same transaction (§7.3.4).
        """
        kid = eab_kid if eab_kid is not None else account.eab_kid
        with self._write() as conn:
            values = rows.account_values(account, kid)
            if conn.execute(self._inserts.account_if_new, values).first() is None:
                row = conn.execute(
                    q.SELECT_ACCOUNT_BY_THUMBPRINT, {"b_thumbprint": account.key_thumbprint}
                ).first()
                if row is None:  # the conflicting row vanished; accounts are never deleted
                    raise StorageError("account insert conflicted but no holder found")
                return rows.account_from_row(row), False
            if kid is not None:
                bound = conn.execute(q.BIND_EAB_KEY, {"b_kid": kid, "b_account_id": account.id})
                if _rowcount(bound) != 1:
                    raise EabKeyUnavailable(f"EAB key {kid!r} is unknown or already bound")
        return replace(account, eab_kid=kid), True

    def get_account(self, account_id: str) -> AccountRecord | None:
        with self._read() as conn:
            row = conn.execute(q.SELECT_ACCOUNT, {"b_id": account_id}).first()
        return None if row is None else rows.account_from_row(row)

    def get_account_by_thumbprint(self, thumbprint: str) -> AccountRecord | None:
        with self._read() as conn:
            row = conn.execute(q.SELECT_ACCOUNT_BY_THUMBPRINT, {"b_thumbprint": thumbprint}).first()
        return None if row is None else rows.account_from_row(row)

    def update_account_contact(self, account_id: str, contact: tuple[str, ...]) -> AccountRecord:
        params = {"b_id": account_id, "b_contact_json": rows.dump_json(list(contact))}
        with self._write() as conn:
            row = conn.execute(q.UPDATE_ACCOUNT_CONTACT, params).first()
        if row is None:
            raise StaleState(f"account {account_id} missing or not valid")
        return rows.account_from_row(row)

    def deactivate_account(self, account_id: str) -> AccountRecord:
        """RFC 8555 §7.3.6: valid → deactivated, once."""
        with self._write() as conn:
            row = conn.execute(q.DEACTIVATE_ACCOUNT, {"b_id": account_id}).first()
        if row is None:
            raise StaleState(f"account {account_id} missing or not valid")
        return rows.account_from_row(row)

    def change_account_key(
        self, account_id: str, old_thumbprint: str, new_thumbprint: str, new_jwk_json: str
    ) -> AccountRecord:
        """RFC 8555 §7.3.5 key rollover, conditional on the old key still being current."""
        params = {
            "b_id": account_id,
            "b_old": old_thumbprint,
            "b_new": new_thumbprint,
            "b_jwk_json": new_jwk_json,
        }
        try:
            with self._write() as conn:
                row = conn.execute(q.CHANGE_ACCOUNT_KEY, params).first()
        except IntegrityError:
            # The unique thumbprint index refused: someone else holds the new key.
            # The failed transaction is gone; look the holder up in a fresh one.
            holder = self.get_account_by_thumbprint(new_thumbprint)
            if holder is None:
                raise
            raise KeyInUse(holder.id) from None
        if row is None:
            raise StaleState(f"account {account_id} missing, not valid, or key already changed")
        return rows.account_from_row(row)

    def create_eab_key(self, record: EabKeyRecord) -> None:
        values = {
            "kid": record.kid,
            "hmac_key": record.hmac_key,
            "created_at": record.created_at,
            "account_id": record.account_id,
        }
        with self._write() as conn:
            if conn.execute(self._inserts.eab_key_if_new, values).first() is None:
                raise StorageError(f"EAB key {record.kid!r} already exists")

    def get_eab_key(self, kid: str) -> EabKeyRecord | None:
        with self._read() as conn:
            row = conn.execute(q.SELECT_EAB_KEY, {"b_kid": kid}).first()
        return None if row is None else rows.eab_key_from_row(row)

    def list_eab_keys(self) -> list[EabKeyRecord]:
        with self._read() as conn:
            return [rows.eab_key_from_row(row) for row in conn.execute(q.LIST_EAB_KEYS)]

    # --- orders --------------------------------------------------------------

    def create_order(self, order: OrderRecord, new_authzs: Sequence[AuthzRecord]) -> OrderRecord:
        """Insert the new authorizations (with challenges) and the order, atomically.

        ``order.authz_ids`` may also name reused authorizations (RFC 8555 §7.4
        lets a server reuse valid or pending ones). Returns the order with its
        pagination ``seq``.
        """
        with self._write() as conn:
            if new_authzs:
                conn.execute(q.INSERT_AUTHORIZATIONS, [rows.authz_values(a) for a in new_authzs])
                chall_values = [c for a in new_authzs for c in rows.challenge_values(a)]
                if chall_values:
                    conn.execute(q.INSERT_CHALLENGES, chall_values)
            seq = conn.execute(q.INSERT_ORDER, rows.order_values(order)).scalar_one()
        return replace(order, seq=int(seq))

    def get_order(self, order_id: str) -> OrderRecord | None:
        with self._read() as conn:
            row = conn.execute(q.SELECT_ORDER, {"b_id": order_id}).first()
        return None if row is None else rows.order_from_row(row)

    def find_reusable_order(
        self,
        account_id: str,
        identifiers: tuple[tuple[str, str], ...],
        profile: str,
        now: datetime,
    ) -> OrderRecord | None:
        """The newest untouched order for the same names, to answer a repeated newOrder."""
        params = {
            "b_account_id": account_id,
            "b_identifiers_key": rows.identifiers_key(identifiers),
            "b_profile": profile,
            "b_now": now,
        }
        with self._read() as conn:
            row = conn.execute(q.SELECT_REUSABLE_ORDER, params).first()
        if row is None:
            return None
        found = rows.order_from_row(row)
        # The key is a hash; compare the sets themselves before trusting it.
        if set(found.identifiers) != set(identifiers):
            return None
        return found

    def list_orders(self, account_id: str, after_seq: int | None, limit: int) -> list[OrderRecord]:
        """RFC 8555 §7.1.2.1 orders list page: ascending seq, strictly after the cursor."""
        if limit <= 0:
            return []
        params = {
            "b_account_id": account_id,
            "b_after": after_seq if after_seq is not None else 0,
            "b_limit": limit,
        }
        with self._read() as conn:
            return [rows.order_from_row(row) for row in conn.execute(q.LIST_ORDERS, params)]

    # --- authorizations / challenges ------------------------------------------

    def get_authz(self, authz_id: str) -> AuthzRecord | None:
        found = self.get_authzs((authz_id,))
        return found[0] if found else None

    def get_authzs(self, authz_ids: Sequence[str]) -> list[AuthzRecord]:
        """One joined query; results in the given order, missing ids omitted."""
        if not authz_ids:
            return []
        with self._read() as conn:
            joined = conn.execute(q.SELECT_AUTHZS_JOINED, {"b_ids": list(set(authz_ids))}).all()
        by_id = rows.authzs_from_joined_rows(joined)
        return [by_id[authz_id] for authz_id in authz_ids if authz_id in by_id]

    def find_reusable_authzs(
        self,
        account_id: str,
        identifiers: Sequence[tuple[str, str, bool]],
        statuses: Sequence[str],
        min_expires: datetime,
    ) -> dict[tuple[str, str, bool], AuthzRecord]:
        """For each (type, value, wildcard), the account's newest authz in ``statuses``
        expiring after ``min_expires`` (RFC 8555 §7.4 authorization reuse)."""
        if not identifiers or not statuses:
            return {}
        params = {
            "b_account_id": account_id,
            "b_identifiers": [tuple(i) for i in set(identifiers)],
            "b_statuses": list(statuses),
            "b_min_expires": min_expires,
        }
        newest: dict[tuple[str, str, bool], Row[Any]] = {}
        with self._read(snapshot=True) as conn:
            for row in conn.execute(q.SELECT_REUSABLE_AUTHZS, params):
                key = (row.identifier_type, row.identifier_value, bool(row.wildcard))
                newest.setdefault(key, row)  # rows come newest first
            if not newest:
                return {}
            challs = conn.execute(
                q.SELECT_CHALLENGES_OF, {"b_ids": [row.id for row in newest.values()]}
            ).all()
        by_authz: dict[str, list[Any]] = {}
        for chall in challs:
            by_authz.setdefault(chall.authz_id, []).append(chall)
        return {
            key: rows.authz_from_row(
                row, tuple(rows.challenge_from_plain_row(c) for c in by_authz.get(row.id, ()))
            )
            for key, row in newest.items()
        }

    def start_challenge(self, authz_id: str, challenge_id: str) -> tuple[AuthzRecord, bool]:
        """Challenge pending → processing, only if nothing has started on this authz.

        RFC 8555 §7.5.1: a client's POST to a challenge triggers validation;
        repeating it, or posting another challenge of the same authorization,
        must not start a second attempt. Returns (authz after, True) for the
        one call that started it and (current authz, False) for everyone else.
        """
        with self._write() as conn:
            # Lock the authorization row (PostgreSQL) so racers on *different*
            # challenges of one authz serialise; then read its current state.
            joined = conn.execute(q.SELECT_AUTHZ_JOINED_FOR_UPDATE, {"b_id": authz_id}).all()
            current = rows.authzs_from_joined_rows(joined).get(authz_id)
            if current is None:
                raise StaleState(f"authorization {authz_id} not found")
            target = next((c for c in current.challenges if c.id == challenge_id), None)
            if target is None:
                raise StaleState(f"challenge {challenge_id} not found in {authz_id}")
            if current.status != PENDING or target.status != PENDING:
                return current, False
            if any(c.status in (PROCESSING, VALID) for c in current.challenges):
                return current, False
            params = {"b_authz_id": authz_id, "b_challenge_id": challenge_id}
            if _rowcount(conn.execute(q.START_CHALLENGE, params)) != 1:
                return current, False
        started = tuple(
            replace(c, status=PROCESSING) if c.id == challenge_id else c for c in current.challenges
        )
        return replace(current, challenges=started), True

    def finish_challenge(
        self,
        authz_id: str,
        challenge_id: str,
        *,
        valid: bool,
        validated_at: datetime | None,
        error_json: str | None,
        validation_json: str | None,
        authz_expires: datetime | None,
    ) -> AuthzRecord:
        """Record a validation outcome: challenge processing → valid|invalid and the
        authorization pending → valid|invalid with it (RFC 8555 §7.1.6), atomically.

        If the authorization left pending meanwhile (e.g. deactivated), the
        challenge result is still recorded and the authorization is left alone.
        """
        status = VALID if valid else INVALID
        with self._write() as conn:
            chall_params = {
                "b_authz_id": authz_id,
                "b_challenge_id": challenge_id,
                "b_status": status,
                "b_validated_at": validated_at,
                "b_error_json": error_json,
                "b_validation_json": validation_json,
            }
            if _rowcount(conn.execute(q.FINISH_CHALLENGE, chall_params)) != 1:
                raise StaleState(f"challenge {challenge_id} of {authz_id} is not processing")
            authz_params = {"b_authz_id": authz_id, "b_status": status, "b_expires": authz_expires}
            conn.execute(q.FINISH_AUTHZ, authz_params)
            joined = conn.execute(q.SELECT_AUTHZS_JOINED, {"b_ids": [authz_id]}).all()
        return rows.authzs_from_joined_rows(joined)[authz_id]

    def deactivate_authz(self, authz_id: str) -> AuthzRecord:
        """RFC 8555 §7.5.2: pending|valid → deactivated."""
        with self._write() as conn:
            if _rowcount(conn.execute(q.DEACTIVATE_AUTHZ, {"b_authz_id": authz_id})) != 1:
                raise StaleState(f"authorization {authz_id} missing or not pending/valid")
            joined = conn.execute(q.SELECT_AUTHZS_JOINED, {"b_ids": [authz_id]}).all()
        return rows.authzs_from_joined_rows(joined)[authz_id]

    # --- finalize / certificates -----------------------------------------------

    def begin_finalize(self, order_id: str) -> bool:
        """none → processing; True only for the one caller that won (RFC 8555 §7.4:
        finalizing twice must not issue twice)."""
        with self._write() as conn:
            return _rowcount(conn.execute(q.BEGIN_FINALIZE, {"b_id": order_id})) == 1

    def complete_finalize(self, order_id: str, cert: CertificateRecord) -> OrderRecord:
        """Insert the certificate and mark the order valid, atomically."""
        with self._write() as conn:
            row = conn.execute(
                q.COMPLETE_FINALIZE, {"b_id": order_id, "b_serial": cert.serial}
            ).first()
            if row is None:
                raise StaleState(f"order {order_id} missing or not processing")
            values = rows.certificate_values(cert)
            if conn.execute(self._inserts.certificate_if_new, values).first() is None:
                # Raising inside the transaction rolls back the order update too.
                raise DuplicateSerial(f"serial {cert.serial} already issued")
        return rows.order_from_row(row)

    def fail_finalize(self, order_id: str, error_json: str) -> OrderRecord:
        with self._write() as conn:
            row = conn.execute(
                q.FAIL_FINALIZE, {"b_id": order_id, "b_error_json": error_json}
            ).first()
        if row is None:
            raise StaleState(f"order {order_id} missing or not processing")
        return rows.order_from_row(row)

    def get_certificate(self, serial: str) -> CertificateRecord | None:
        with self._read() as conn:
            row = conn.execute(q.SELECT_CERTIFICATE, {"b_serial": serial}).first()
        return None if row is None else rows.certificate_from_row(row)

    def revoke_certificate(self, serial: str, reason: int, revoked_at: datetime) -> bool:
        """good → revoked (RFC 8555 §7.6). False if it was already revoked."""
        params = {"b_serial": serial, "b_reason": reason, "b_revoked_at": revoked_at}
        with self._write() as conn:
            if _rowcount(conn.execute(q.REVOKE_CERTIFICATE, params)) == 1:
                return True
            if conn.execute(q.SELECT_SERIAL_EXISTS, {"b_serial": serial}).first() is None:
                raise StaleState(f"no certificate with serial {serial}")
            return False

    def list_revoked(self, issuer_id: str, now: datetime) -> list[RevokedEntry]:
        """Revoked, unexpired certificates of one issuer: the CRL's entries."""
        with self._read() as conn:
            result = conn.execute(q.LIST_REVOKED, {"b_issuer_id": issuer_id, "b_now": now})
            return [
                RevokedEntry(serial=r.serial, revoked_at=r.revoked_at, reason=r.revocation_reason)
                for r in result
            ]
