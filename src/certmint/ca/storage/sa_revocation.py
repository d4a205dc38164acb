"""The SA's revocation side: revoking (one certificate, every certificate of a
key or of an account), blocked keys, and the stored CRL of each shard.

A mixin of ``StorageAuthority`` (kept apart so ``sa.py`` stays one concept
per file); the same rules hold: one public method, one transaction, state
changes as conditional UPDATEs. Every revocation marks the CRLs it reaches
dirty in its own transaction, so the CRL updater cannot miss one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from certmint.ca.storage import rows
from certmint.ca.storage import statements as q
from certmint.ca.storage.errors import StaleState
from certmint.ca.storage.fastpath import NamedRow, RawDatabase, Transaction
from certmint.ca.storage.records import (
    BlockedKeyRecord,
    CrlShardState,
    KeyRevocation,
    RevokedEntry,
    StoredCrl,
)

# Shard 0 of an issuer is its complete CRL (issuance/crl.py FULL_CRL).
_FULL_CRL = 0


class RevocationStore:
    _db: RawDatabase
    _inserts: q.DialectInserts

    def revoke_certificate(self, serial: str, reason: int, revoked_at: datetime) -> bool:
        """good → revoked (RFC 8555 §7.6). False if it was already revoked.

        The certificate's CRL shard and its issuer's complete CRL are marked
        dirty in the same transaction, so the CRL updater cannot miss it."""
        params = {"b_serial": serial, "b_reason": reason, "b_revoked_at": revoked_at}
        with self._db.write() as tx:
            row = tx.one(q.REVOKE_CERTIFICATE, params)
            if row is not None:
                self._mark_crls_dirty(tx, [row], revoked_at)
                return True
            if tx.one(q.SELECT_SERIAL_EXISTS, {"b_serial": serial}) is None:
                raise StaleState(f"no certificate with serial {serial}")
            return False

    def rerevoke_for_key_compromise(self, serial: str, now: datetime) -> bool:
        """An already revoked certificate's reason becomes keyCompromise (its
        revocation date stays), as Boulder's UpdateRevokedCertificate. False
        if it is not revoked or already revoked for keyCompromise."""
        with self._db.write() as tx:
            row = tx.one(q.REREVOKE_FOR_KEY_COMPROMISE, {"b_serial": serial})
            if row is None:
                return False
            self._mark_crls_dirty(tx, [row], now)
            return True

    def revoke_key(
        self,
        key_spki_sha256: str,
        revoked_at: datetime,
        *,
        source: str,
        comment: str | None = None,
        revoked_serial: str | None = None,
    ) -> KeyRevocation:
        """Block a key and revoke every unexpired certificate with it, for
        keyCompromise, whichever account holds it (BR 4.9.1.1 item 3; Let's
        Encrypt CPS 4.9.3), in one transaction: good certificates are
        revoked at ``revoked_at``, revoked ones get reason keyCompromise."""
        block = BlockedKeyRecord(
            key_spki_sha256=key_spki_sha256,
            added_at=revoked_at,
            source=source,
            comment=comment,
            revoked_serial=revoked_serial,
        )
        with self._db.write() as tx:
            added = tx.one(self._inserts.blocked_key_if_new, rows.blocked_key_values(block))
            by_key = {"b_key": key_spki_sha256, "b_revoked_at": revoked_at, "b_now": revoked_at}
            revoked = tx.all(q.REVOKE_BY_KEY, by_key)
            updated = tx.all(q.REREVOKE_BY_KEY, {"b_key": key_spki_sha256, "b_now": revoked_at})
            self._mark_crls_dirty(tx, [*revoked, *updated], revoked_at)
        return KeyRevocation(
            revoked=tuple(sorted(r.serial for r in revoked)),
            reason_updated=tuple(sorted(r.serial for r in updated)),
            newly_blocked=added is not None,
        )

    def revoke_account_certificates(
        self, account_id: str, reason: int, revoked_at: datetime
    ) -> list[str]:
        """Revoke every good, unexpired certificate of one account (the
        operator's ``admin revoke --account``); the serials revoked."""
        params = {
            "b_account_id": account_id,
            "b_reason": reason,
            "b_revoked_at": revoked_at,
            "b_now": revoked_at,
        }
        with self._db.write() as tx:
            revoked = tx.all(q.REVOKE_BY_ACCOUNT, params)
            self._mark_crls_dirty(tx, revoked, revoked_at)
        return sorted(r.serial for r in revoked)

    @staticmethod
    def _mark_crls_dirty(tx: Transaction, places: Sequence[NamedRow], now: datetime) -> None:
        """Mark the CRL shard of each revoked certificate, and its issuer's
        complete CRL, as needing a rebuild."""
        targets = {(r.issuer_id, _FULL_CRL) for r in places}
        targets |= {(r.issuer_id, int(r.crl_shard)) for r in places if r.crl_shard is not None}
        for issuer_id, shard in sorted(targets):
            tx.count(q.MARK_CRL_DIRTY, {"b_issuer_id": issuer_id, "b_shard": shard, "b_now": now})

    def good_serials_for_key(self, key_spki_sha256: str, now: datetime) -> list[str]:
        """Serials of good, unexpired certificates with this key."""
        params = {"b_key": key_spki_sha256, "b_now": now}
        return sorted(r.serial for r in self._db.all(q.SELECT_GOOD_SERIALS_BY_KEY, params))

    def good_serials_for_account(self, account_id: str, now: datetime) -> list[str]:
        """Serials of the account's good, unexpired certificates."""
        params = {"b_account_id": account_id, "b_now": now}
        return sorted(r.serial for r in self._db.all(q.SELECT_GOOD_SERIALS_BY_ACCOUNT, params))

    def list_revoked(
        self, issuer_id: str, now: datetime, shard: int | None = None
    ) -> list[RevokedEntry]:
        """Revoked, unexpired certificates of one issuer -- of one CRL shard
        of it when ``shard`` is given: a CRL's entries."""
        if shard is None or shard == _FULL_CRL:
            found = self._db.all(q.LIST_REVOKED, {"b_issuer_id": issuer_id, "b_now": now})
        else:
            params = {"b_issuer_id": issuer_id, "b_shard": shard, "b_now": now}
            found = self._db.all(q.LIST_REVOKED_IN_SHARD, params)
        return [
            RevokedEntry(serial=r.serial, revoked_at=r.revoked_at, reason=r.revocation_reason)
            for r in found
        ]

    # --- blocked keys (BR 6.1.1.3) ------------------------------------------------

    def block_key(self, record: BlockedKeyRecord) -> bool:
        """Add a blocked key; False if it was already blocked (the first entry stays)."""
        with self._db.write() as tx:
            added = tx.one(self._inserts.blocked_key_if_new, rows.blocked_key_values(record))
        return added is not None

    def is_key_blocked(self, spki_sha256: bytes) -> bool:
        """The KeyPolicy's ``blocked`` hook: one primary-key lookup."""
        return self._db.one(q.SELECT_BLOCKED_KEY, {"b_key": spki_sha256.hex()}) is not None

    def get_blocked_key(self, key_spki_sha256: str) -> BlockedKeyRecord | None:
        row = self._db.one(q.SELECT_BLOCKED_KEY, {"b_key": key_spki_sha256})
        return None if row is None else rows.blocked_key_from_row(row)

    def list_blocked_keys(self) -> list[BlockedKeyRecord]:
        return [rows.blocked_key_from_row(r) for r in self._db.all(q.LIST_BLOCKED_KEYS, {})]

    # --- CRL shards ------------------------------------------------------------------

    def max_crl_shard(self, issuer_id: str) -> int | None:
        """The highest shard any certificate of the issuer names (None: none does)."""
        row = self._db.one(q.MAX_CRL_SHARD, {"b_issuer_id": issuer_id})
        return None if row is None or row.shard is None else int(row.shard)

    def crl_shard_states(self, issuer_id: str) -> dict[int, CrlShardState]:
        found = self._db.all(q.LIST_CRL_STATES, {"b_issuer_id": issuer_id})
        return {int(r.shard): rows.crl_shard_state_from_row(r) for r in found}

    def lease_crl_shard(
        self, issuer_id: str, shard: int, token: str, now: datetime, until: datetime
    ) -> CrlShardState | None:
        """Take the lease on one shard until ``until`` (creating its row on
        first use); None if another builder holds an unexpired lease."""
        params = {
            "b_issuer_id": issuer_id,
            "b_shard": shard,
            "b_token": token,
            "b_now": now,
            "b_until": until,
        }
        with self._db.write() as tx:
            tx.count(self._inserts.crl_shard_if_new, {"issuer_id": issuer_id, "shard": shard})
            row = tx.one(q.LEASE_CRL_SHARD, params)
        return None if row is None else rows.crl_shard_state_from_row(row)

    def store_crl(
        self,
        crl: StoredCrl,
        *,
        token: str,
        entries: int,
        read_version: int,
    ) -> bool:
        """Store a built CRL and release the lease, if ``token`` still holds
        it. The shard stays dirty when a revocation arrived after the entries
        were read (``read_version`` is the dirty_version seen at lease time)."""
        params = {
            "b_issuer_id": crl.issuer_id,
            "b_shard": crl.shard,
            "b_token": token,
            "b_number": crl.crl_number,
            "b_this_update": crl.this_update,
            "b_next_update": crl.next_update,
            "b_entries": entries,
            "b_der": crl.der,
            "b_read_version": read_version,
        }
        with self._db.write() as tx:
            return tx.count(q.STORE_CRL, params) == 1

    def release_crl_lease(self, issuer_id: str, shard: int, token: str) -> None:
        params = {"b_issuer_id": issuer_id, "b_shard": shard, "b_token": token}
        with self._db.write() as tx:
            tx.count(q.RELEASE_CRL_LEASE, params)

    def get_crl(self, issuer_id: str, shard: int) -> StoredCrl | None:
        """The stored CRL of one shard (0: the complete CRL), or None."""
        row = self._db.one(q.SELECT_CRL, {"b_issuer_id": issuer_id, "b_shard": shard})
        if row is None or row.der is None:
            return None
        return StoredCrl(
            issuer_id=issuer_id,
            shard=shard,
            crl_number=int(row.crl_number),
            this_update=row.this_update,
            next_update=row.next_update,
            der=bytes(row.der),
        )

    def get_crl_number(self, issuer_id: str, shard: int) -> int | None:
        """The stored CRL's number only: a cheap "has it changed?" for caches."""
        row = self._db.one(q.SELECT_CRL_NUMBER, {"b_issuer_id": issuer_id, "b_shard": shard})
        return None if row is None or row.crl_number is None else int(row.crl_number)
