"""The Storage Authority (Boulder's SA): durable records behind a narrow door.

Each public method is ONE business step in ONE transaction (DESIGN.md §2).
State changes are conditional UPDATEs naming the expected current state; the
row count tells the caller whether it won. Nothing here reads the clock:
callers pass ``now``. Values in and out are the frozen records of
``records.py``.

Statements are SQLAlchemy Core (``statements.py``), compiled once per dialect
and run on raw DBAPI connections by ``fastpath.py``: ``self._db.one/all`` for
single-statement reads (autocommit), ``with self._db.write() as tx`` for a
write transaction (``BEGIN IMMEDIATE`` on SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from certmint.ca.storage import rows
from certmint.ca.storage import statements as q
from certmint.ca.storage.errors import (
    AlreadyReplaced,
    DuplicateSerial,
    EabKeyUnavailable,
    KeyInUse,
    StaleState,
    StorageError,
)
from certmint.ca.storage.fastpath import NamedRow, RawDatabase, Transaction
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
)
from certmint.ca.storage.sa_revocation import RevocationStore


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class StorageAuthority(RevocationStore):
    """The SA over one SQLAlchemy engine; thread-safe (one connection per call at a time).

    Build the engine with ``engine.create_storage_engine`` (or just call
    ``open_storage``): on SQLite its hooks supply WAL and the busy timeout.
    Create it in the process that uses it (after any fork): connections are
    opened lazily and refused in another process.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._db = RawDatabase(engine)
        self._inserts = q.dialect_inserts(engine)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (migrations, admin queries, tests)."""
        return self._engine

    def close(self) -> None:
        self._db.close()
        self._engine.dispose()

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
        with self._db.write() as tx:
            values = rows.account_values(account, kid)
            if tx.one(self._inserts.account_if_new, values) is None:
                holder = {"b_thumbprint": account.key_thumbprint}
                row = tx.one(q.SELECT_ACCOUNT_BY_THUMBPRINT, holder)
                if row is None:  # the conflicting row vanished; accounts are never deleted
                    raise StorageError("account insert conflicted but no holder found")
                return rows.account_from_row(row), False
            if kid is not None:
                if tx.count(q.BIND_EAB_KEY, {"b_kid": kid, "b_account_id": account.id}) != 1:
                    raise EabKeyUnavailable(f"EAB key {kid!r} is unknown or already bound")
        return replace(account, eab_kid=kid), True

    def get_account(self, account_id: str) -> AccountRecord | None:
        row = self._db.one(q.SELECT_ACCOUNT, {"b_id": account_id})
        return None if row is None else rows.account_from_row(row)

    def get_account_by_thumbprint(self, thumbprint: str) -> AccountRecord | None:
        row = self._db.one(q.SELECT_ACCOUNT_BY_THUMBPRINT, {"b_thumbprint": thumbprint})
        return None if row is None else rows.account_from_row(row)

    def update_account_contact(self, account_id: str, contact: tuple[str, ...]) -> AccountRecord:
        params = {"b_id": account_id, "b_contact_json": rows.dump_json(list(contact))}
        with self._db.write() as tx:
            row = tx.one(q.UPDATE_ACCOUNT_CONTACT, params)
        if row is None:
            raise StaleState(f"account {account_id} missing or not valid")
        return rows.account_from_row(row)

    def deactivate_account(self, account_id: str) -> AccountRecord:
        """RFC 8555 §7.3.6: valid → deactivated, once."""
        with self._db.write() as tx:
            row = tx.one(q.DEACTIVATE_ACCOUNT, {"b_id": account_id})
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
            with self._db.write() as tx:
                row = tx.one(q.CHANGE_ACCOUNT_KEY, params)
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
        with self._db.write() as tx:
            if tx.one(self._inserts.eab_key_if_new, values) is None:
                raise StorageError(f"EAB key {record.kid!r} already exists")

    def get_eab_key(self, kid: str) -> EabKeyRecord | None:
        row = self._db.one(q.SELECT_EAB_KEY, {"b_kid": kid})
        return None if row is None else rows.eab_key_from_row(row)

    def list_eab_keys(self) -> list[EabKeyRecord]:
        return [rows.eab_key_from_row(row) for row in self._db.all(q.LIST_EAB_KEYS, {})]

    # --- orders --------------------------------------------------------------

    def create_order(self, order: OrderRecord, new_authzs: Sequence[AuthzRecord]) -> OrderRecord:
        """Insert the new authorizations (with challenges) and the order, atomically.

        ``order.authz_ids`` may also name reused authorizations (RFC 8555 §7.4
        lets a server reuse valid or pending ones). Returns the order with its
        pagination ``seq``.
        """
        with self._db.write() as tx:
            if new_authzs:
                tx.many(q.INSERT_AUTHORIZATIONS, [rows.authz_values(a) for a in new_authzs])
                chall_values = [c for a in new_authzs for c in rows.challenge_values(a)]
                if chall_values:
                    tx.many(q.INSERT_CHALLENGES, chall_values)
            inserted = tx.one(q.INSERT_ORDER, rows.order_values(order))
        assert inserted is not None  # INSERT … RETURNING always returns its row
        return replace(order, seq=int(inserted.seq))

    def get_order(self, order_id: str) -> OrderRecord | None:
        row = self._db.one(q.SELECT_ORDER, {"b_id": order_id})
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
        row = self._db.one(q.SELECT_REUSABLE_ORDER, params)
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
        return [rows.order_from_row(row) for row in self._db.all(q.LIST_ORDERS, params)]

    # --- authorizations / challenges ------------------------------------------

    def get_authz(self, authz_id: str) -> AuthzRecord | None:
        joined = self._db.all(q.SELECT_AUTHZ_JOINED, {"b_id0": authz_id})
        return rows.authzs_from_joined_rows(joined).get(authz_id)

    def get_authzs(self, authz_ids: Sequence[str]) -> list[AuthzRecord]:
        """One joined query; results in the given order, missing ids omitted."""
        if not authz_ids:
            return []
        unique = list(dict.fromkeys(authz_ids))
        joined: list[NamedRow] = []
        # One statement per list length (statements.py); orders hold far fewer
        # names than MAX_IN_LIST, so this is one query in practice.
        for chunk in _chunks(unique, q.MAX_IN_LIST):
            params = {f"b_id{i}": authz_id for i, authz_id in enumerate(chunk)}
            joined += self._db.all(q.select_authzs_joined(len(chunk)), params)
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
        wanted = list(dict.fromkeys((t, v, bool(w)) for t, v, w in identifiers))
        status_params = {f"b_status{j}": status for j, status in enumerate(dict.fromkeys(statuses))}
        statement_for = q.select_reusable_authzs_joined
        # One joined statement (authorizations with their challenges) per chunk
        # of identifiers: each is a single autocommit read, and the chunks ask
        # about disjoint identifiers, so no snapshot has to span them.
        newest: dict[tuple[str, str, bool], AuthzRecord] = {}
        for chunk in _chunks(wanted, q.MAX_IN_LIST):
            params: dict[str, Any] = {
                "b_account_id": account_id,
                "b_min_expires": min_expires,
                **status_params,
            }
            for i, (kind, value, wildcard) in enumerate(chunk):
                params[f"b_type{i}"] = kind
                params[f"b_value{i}"] = value
                params[f"b_wildcard{i}"] = wildcard
            joined = self._db.all(statement_for(len(chunk), len(status_params)), params)
            # Rows come newest authorization first; keep the first per identifier.
            for authz in rows.authzs_from_joined_rows(joined).values():
                key = (authz.identifier_type, authz.identifier_value, authz.wildcard)
                newest.setdefault(key, authz)
        return newest

    def start_challenge(self, authz_id: str, challenge_id: str) -> tuple[AuthzRecord, bool]:
        """Challenge pending → processing, only if nothing has started on this authz.

        RFC 8555 §7.5.1: a client's POST to a challenge triggers validation;
        repeating it, or posting another challenge of the same authorization,
        must not start a second attempt. Returns (authz after, True) for the
        one call that started it and (current authz, False) for everyone else.
        """
        with self._db.write() as tx:
            # Lock the authorization row (PostgreSQL) so racers on *different*
            # challenges of one authz serialise; then read its current state.
            joined = tx.all(q.SELECT_AUTHZ_JOINED_FOR_UPDATE, {"b_id": authz_id})
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
            if tx.count(q.START_CHALLENGE, params) != 1:
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
        perspectives_json: str | None = None,
    ) -> AuthzRecord:
        """Record a validation outcome: challenge processing → valid|invalid and the
        authorization pending → valid|invalid with it (RFC 8555 §7.1.6), atomically.

        If the authorization left pending meanwhile (e.g. deactivated), the
        challenge result is still recorded and the authorization is left alone.
        ``perspectives_json`` records each VA perspective's outcome (BR 3.2.2.9).
        """
        status = VALID if valid else INVALID
        with self._db.write() as tx:
            chall_params = {
                "b_authz_id": authz_id,
                "b_challenge_id": challenge_id,
                "b_status": status,
                "b_validated_at": validated_at,
                "b_error_json": error_json,
                "b_validation_json": validation_json,
                "b_perspectives": perspectives_json,
            }
            if tx.count(q.FINISH_CHALLENGE, chall_params) != 1:
                raise StaleState(f"challenge {challenge_id} of {authz_id} is not processing")
            authz_params = {"b_authz_id": authz_id, "b_status": status, "b_expires": authz_expires}
            tx.count(q.FINISH_AUTHZ, authz_params)
            joined = tx.all(q.SELECT_AUTHZ_JOINED, {"b_id0": authz_id})
        return rows.authzs_from_joined_rows(joined)[authz_id]

    def deactivate_authz(self, authz_id: str) -> AuthzRecord:
        """RFC 8555 §7.5.2: pending|valid → deactivated."""
        with self._db.write() as tx:
            if tx.count(q.DEACTIVATE_AUTHZ, {"b_authz_id": authz_id}) != 1:
                raise StaleState(f"authorization {authz_id} missing or not pending/valid")
            joined = tx.all(q.SELECT_AUTHZ_JOINED, {"b_id0": authz_id})
        return rows.authzs_from_joined_rows(joined)[authz_id]

    # --- finalize / certificates -----------------------------------------------

    def begin_finalize(self, order_id: str) -> bool:
        """none → processing; True only for the one caller that won (RFC 8555 §7.4:
        finalizing twice must not issue twice)."""
        with self._db.write() as tx:
            return tx.count(q.BEGIN_FINALIZE, {"b_id": order_id}) == 1

    def complete_finalize(
        self, order_id: str, cert: CertificateRecord, *, replaces_serial: str | None = None
    ) -> OrderRecord:
        """Insert the certificate and mark the order valid, atomically.

        With ``replaces_serial`` (RFC 9773 §5: the order named a certificate
        it replaces) that certificate is marked replaced by this order in the
        same transaction; if another order already replaced it, nothing is
        written and ``AlreadyReplaced`` is raised.
        """
        with self._db.write() as tx:
            row = tx.one(q.COMPLETE_FINALIZE, {"b_id": order_id, "b_serial": cert.serial})
            if row is None:
                raise StaleState(f"order {order_id} missing or not processing")
            values = rows.certificate_values(cert)
            if tx.one(self._inserts.certificate_if_new, values) is None:
                # Raising inside the transaction rolls back the order update too.
                raise DuplicateSerial(f"serial {cert.serial} already issued")
            if replaces_serial is not None:
                self._mark_replaced(tx, replaces_serial, order_id)
        return rows.order_from_row(row)

    @staticmethod
    def _mark_replaced(tx: Transaction, serial: str, order_id: str) -> None:
        params = {"b_serial": serial, "b_order_id": order_id}
        if tx.count(q.MARK_REPLACED, params) == 1:
            return
        holder = tx.one(q.SELECT_REPLACED_BY, {"b_serial": serial})
        if holder is None:
            raise StaleState(f"no certificate with serial {serial} to replace")
        # Raising inside the transaction rolls back the issuance with it.
        raise AlreadyReplaced(serial, holder.replaced_by_order)

    def fail_finalize(self, order_id: str, error_json: str) -> OrderRecord:
        with self._db.write() as tx:
            row = tx.one(q.FAIL_FINALIZE, {"b_id": order_id, "b_error_json": error_json})
        if row is None:
            raise StaleState(f"order {order_id} missing or not processing")
        return rows.order_from_row(row)

    def get_certificate(self, serial: str) -> CertificateRecord | None:
        row = self._db.one(q.SELECT_CERTIFICATE, {"b_serial": serial})
        return None if row is None else rows.certificate_from_row(row)

    def set_renewal_window(
        self, serial: str, start: datetime | None, end: datetime | None
    ) -> CertificateRecord:
        """Set (or, with two Nones, clear) the operator's RFC 9773 renewal
        window for one certificate. ``StaleState`` if there is no such serial."""
        if (start is None) != (end is None):
            raise ValueError("a renewal window needs both start and end, or neither")
        if start is not None and end is not None and not start < end:
            # RFC 9773 §4.2: the window's end must be after its start.
            raise ValueError("a renewal window must end after it starts")
        params = {"b_serial": serial, "b_start": start, "b_end": end}
        with self._db.write() as tx:
            row = tx.one(q.SET_RENEWAL_WINDOW, params)
        if row is None:
            raise StaleState(f"no certificate with serial {serial}")
        return rows.certificate_from_row(row)
