"""Conversions between frozen records and table rows.

Kept apart from the SA's transactions so ``sa.py`` reads as business steps.
Tuples travel as compact JSON text; datetimes are converted by the
``MicroTimestamp`` column type (its processors, applied by ``fastpath``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from certmint.ca.storage.records import (
    AccountRecord,
    AuthzRecord,
    BlockedKeyRecord,
    CertificateRecord,
    ChallengeRecord,
    CrlShardState,
    EabKeyRecord,
    OrderRecord,
)

# A result row read by column name: a ``fastpath`` named tuple (the SA's own
# queries) or a SQLAlchemy ``Row``. Values are already converted by the
# column types (datetimes aware; SQLite booleans may still be 0/1, hence bool()).
RowLike = Any


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def identifiers_key(identifiers: Iterable[tuple[str, str]]) -> str:
    """A fixed-size canonical key for an identifier set (order reuse lookups).

    Sorted and deduplicated, so the key does not depend on the client's order;
    JSON-encoded so no separator character inside a value can collide.
    """
    canonical = dump_json(sorted({(t, v) for t, v in identifiers}))
    return hashlib.sha256(canonical.encode()).hexdigest()


def account_values(account: AccountRecord, eab_kid: str | None) -> dict[str, Any]:
    return {
        "id": account.id,
        "key_thumbprint": account.key_thumbprint,
        "jwk_json": account.jwk_json,
        "status": account.status,
        "contact_json": dump_json(list(account.contact)),
        "tos_agreed": account.tos_agreed,
        "eab_kid": eab_kid,
        "created_at": account.created_at,
    }


def account_from_row(row: RowLike) -> AccountRecord:
    return AccountRecord(
        id=row.id,
        key_thumbprint=row.key_thumbprint,
        jwk_json=row.jwk_json,
        status=row.status,
        contact=tuple(json.loads(row.contact_json)),
        tos_agreed=bool(row.tos_agreed),
        eab_kid=row.eab_kid,
        created_at=row.created_at,
    )


def eab_key_from_row(row: RowLike) -> EabKeyRecord:
    return EabKeyRecord(
        kid=row.kid,
        hmac_key=bytes(row.hmac_key),
        created_at=row.created_at,
        account_id=row.account_id,
    )


def authz_values(authz: AuthzRecord) -> dict[str, Any]:
    return {
        "id": authz.id,
        "account_id": authz.account_id,
        "identifier_type": authz.identifier_type,
        "identifier_value": authz.identifier_value,
        "wildcard": authz.wildcard,
        "status": authz.status,
        "expires": authz.expires,
        "created_at": authz.created_at,
    }


def challenge_values(authz: AuthzRecord) -> list[dict[str, Any]]:
    return [
        {
            "authz_id": authz.id,
            "id": chall.id,
            "position": position,
            "type": chall.type,
            "token": chall.token,
            "status": chall.status,
            "validated_at": chall.validated_at,
            "error_json": chall.error_json,
            "validation_json": chall.validation_json,
            "perspectives": chall.perspectives_json,
        }
        for position, chall in enumerate(authz.challenges)
    ]


def challenge_from_row(row: RowLike, authz_id: str) -> ChallengeRecord:
    """From a joined authorization+challenge row (challenge columns prefixed ``c_``)."""
    return ChallengeRecord(
        id=row.c_id,
        authz_id=authz_id,
        type=row.c_type,
        token=row.c_token,
        status=row.c_status,
        validated_at=row.c_validated_at,
        error_json=row.c_error_json,
        validation_json=row.c_validation_json,
        perspectives_json=row.c_perspectives,
    )


def challenge_from_plain_row(row: RowLike) -> ChallengeRecord:
    """From a row of the challenges table itself."""
    return ChallengeRecord(
        id=row.id,
        authz_id=row.authz_id,
        type=row.type,
        token=row.token,
        status=row.status,
        validated_at=row.validated_at,
        error_json=row.error_json,
        validation_json=row.validation_json,
        perspectives_json=row.perspectives,
    )


def authz_from_row(row: RowLike, challenges: tuple[ChallengeRecord, ...]) -> AuthzRecord:
    return AuthzRecord(
        id=row.id,
        account_id=row.account_id,
        identifier_type=row.identifier_type,
        identifier_value=row.identifier_value,
        wildcard=bool(row.wildcard),
        status=row.status,
        expires=row.expires,
        created_at=row.created_at,
        challenges=challenges,
    )


def authzs_from_joined_rows(rows: Sequence[RowLike]) -> dict[str, AuthzRecord]:
    """Fold authorization LEFT JOIN challenge rows (ordered by authz, position)."""
    grouped: dict[str, tuple[RowLike, list[ChallengeRecord]]] = {}
    for row in rows:
        entry = grouped.get(row.id)
        if entry is None:
            entry = (row, [])
            grouped[row.id] = entry
        if row.c_id is not None:
            entry[1].append(challenge_from_row(row, row.id))
    return {
        authz_id: authz_from_row(first, tuple(challs))
        for authz_id, (first, challs) in grouped.items()
    }


def order_values(order: OrderRecord) -> dict[str, Any]:
    return {
        "id": order.id,
        "account_id": order.account_id,
        "identifiers_json": dump_json([list(pair) for pair in order.identifiers]),
        "identifiers_key": identifiers_key(order.identifiers),
        "authz_ids_json": dump_json(list(order.authz_ids)),
        "profile": order.profile,
        "not_before": order.not_before,
        "not_after": order.not_after,
        "expires": order.expires,
        "created_at": order.created_at,
        "finalize_state": order.finalize_state,
        "error_json": order.error_json,
        "certificate_serial": order.certificate_serial,
        "replaces": order.replaces,
    }


def order_from_row(row: RowLike) -> OrderRecord:
    return OrderRecord(
        id=row.id,
        account_id=row.account_id,
        identifiers=tuple((t, v) for t, v in json.loads(row.identifiers_json)),
        authz_ids=tuple(json.loads(row.authz_ids_json)),
        profile=row.profile,
        not_before=row.not_before,
        not_after=row.not_after,
        expires=row.expires,
        created_at=row.created_at,
        finalize_state=row.finalize_state,
        error_json=row.error_json,
        certificate_serial=row.certificate_serial,
        replaces=row.replaces,
        seq=int(row.seq),
    )


def certificate_values(cert: CertificateRecord) -> dict[str, Any]:
    return {
        "serial": cert.serial,
        "account_id": cert.account_id,
        "order_id": cert.order_id,
        "issuer_id": cert.issuer_id,
        "der": cert.der,
        "names_json": dump_json(list(cert.names)),
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "key_spki_sha256": cert.key_spki_sha256,
        "issued_at": cert.issued_at,
        "status": cert.status,
        "revoked_at": cert.revoked_at,
        "revocation_reason": cert.revocation_reason,
        "ari_window_start": cert.ari_window_start,
        "ari_window_end": cert.ari_window_end,
        "replaced_by_order": cert.replaced_by_order,
        "crl_shard": cert.crl_shard,
    }


def certificate_from_row(row: RowLike) -> CertificateRecord:
    return CertificateRecord(
        serial=row.serial,
        account_id=row.account_id,
        order_id=row.order_id,
        issuer_id=row.issuer_id,
        der=bytes(row.der),
        names=tuple(json.loads(row.names_json)),
        not_before=row.not_before,
        not_after=row.not_after,
        key_spki_sha256=row.key_spki_sha256,
        issued_at=row.issued_at,
        status=row.status,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
        ari_window_start=row.ari_window_start,
        ari_window_end=row.ari_window_end,
        replaced_by_order=row.replaced_by_order,
        crl_shard=row.crl_shard,
    )


def blocked_key_values(record: BlockedKeyRecord) -> dict[str, Any]:
    return {
        "key_spki_sha256": record.key_spki_sha256,
        "added_at": record.added_at,
        "source": record.source,
        "comment": record.comment,
        "revoked_serial": record.revoked_serial,
    }


def blocked_key_from_row(row: RowLike) -> BlockedKeyRecord:
    return BlockedKeyRecord(
        key_spki_sha256=row.key_spki_sha256,
        added_at=row.added_at,
        source=row.source,
        comment=row.comment,
        revoked_serial=row.revoked_serial,
    )


def crl_shard_state_from_row(row: RowLike) -> CrlShardState:
    return CrlShardState(
        issuer_id=row.issuer_id,
        shard=int(row.shard),
        crl_number=None if row.crl_number is None else int(row.crl_number),
        this_update=row.this_update,
        next_update=row.next_update,
        entries=row.entries,
        dirty_version=int(row.dirty_version),
        dirty_since=row.dirty_since,
        leased_until=row.leased_until,
    )
