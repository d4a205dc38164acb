"""Prebuilt Core statements for the SA's hot path.

Built once at import (or once per engine for dialect-specific inserts, once
per list length for the ``IN`` lookups) and compiled once per dialect by
``fastpath.py``, which runs them on raw DBAPI connections. That is why no
statement here uses an *expanding* ``IN`` (SQLAlchemy renders those anew at
each execution): variable-length lists get one statement per length with
numbered binds, fixed lists are bound literals. Bind names carry a ``b_``
prefix: SQLAlchemy reserves a column's own name for the SET/VALUES clause.
INSERTs name their columns' binds explicitly (``_insert_binds``) so the
compiled text does not depend on which keys a call happens to pass.

Every state change is a conditional UPDATE whose WHERE clause states the
expected current state; the caller checks the row count (or RETURNING row).
That is the concurrency guard: whoever commits second finds no matching row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Engine,
    Insert,
    Select,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from certmint.ca.storage.records import (
    ACCOUNT_DEACTIVATED,
    ACCOUNT_VALID,
    CERT_GOOD,
    CERT_REVOKED,
    DEACTIVATED,
    FINALIZE_INVALID,
    FINALIZE_NONE,
    FINALIZE_PROCESSING,
    FINALIZE_VALID,
    PENDING,
    PROCESSING,
    VALID,
)
from certmint.ca.storage.schema import (
    MicroTimestamp,
    accounts,
    authorizations,
    blocked_keys,
    certificates,
    challenges,
    crl_shards,
    eab_keys,
    orders,
)

# Longest list get_authzs / find_reusable_authzs compile a statement for; a
# longer list is looked up in chunks of this size. Above any order's names.
MAX_IN_LIST = 128


def _one_of(column: ColumnElement[Any], values: tuple[str, ...]) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` with bound literals, not an expanding parameter."""
    return column.in_([literal(value, column.type) for value in values])


def _insert_binds(table: Table, *, skip: tuple[str, ...] = ()) -> dict[Column[Any], Any]:
    """VALUES for every column (but ``skip``), bound by the column's own key."""
    return {c: bindparam(c.key, type_=c.type) for c in table.c if c.key not in skip}


# --- accounts / EAB ----------------------------------------------------------

SELECT_ACCOUNT = select(accounts).where(accounts.c.id == bindparam("b_id"))
SELECT_ACCOUNT_BY_THUMBPRINT = select(accounts).where(
    accounts.c.key_thumbprint == bindparam("b_thumbprint")
)
UPDATE_ACCOUNT_CONTACT = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_id"), accounts.c.status == ACCOUNT_VALID)
    .values(contact_json=bindparam("b_contact_json"))
    .returning(accounts)
)
DEACTIVATE_ACCOUNT = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_id"), accounts.c.status == ACCOUNT_VALID)
    .values(status=ACCOUNT_DEACTIVATED)
    .returning(accounts)
)
CHANGE_ACCOUNT_KEY = (
    update(accounts)
    .where(
        accounts.c.id == bindparam("b_id"),
        accounts.c.key_thumbprint == bindparam("b_old"),
        accounts.c.status == ACCOUNT_VALID,
    )
    .values(key_thumbprint=bindparam("b_new"), jwk_json=bindparam("b_jwk_json"))
    .returning(accounts)
)
# Binding is first-come: only an unbound key can be bound (RFC 8555 §7.3.4).
BIND_EAB_KEY = (
    update(eab_keys)
    .where(eab_keys.c.kid == bindparam("b_kid"), eab_keys.c.account_id.is_(None))
    .values(account_id=bindparam("b_account_id"))
)
SELECT_EAB_KEY = select(eab_keys).where(eab_keys.c.kid == bindparam("b_kid"))
LIST_EAB_KEYS = select(eab_keys).order_by(eab_keys.c.created_at, eab_keys.c.kid)

# --- authorizations / challenges ---------------------------------------------

# Authorization LEFT JOIN its challenges, challenge columns prefixed "c_".
_AUTHZ_JOINED_COLUMNS = (
    *authorizations.c,
    challenges.c.id.label("c_id"),
    challenges.c.type.label("c_type"),
    challenges.c.token.label("c_token"),
    challenges.c.status.label("c_status"),
    challenges.c.validated_at.label("c_validated_at"),
    challenges.c.error_json.label("c_error_json"),
    challenges.c.validation_json.label("c_validation_json"),
    challenges.c.perspectives.label("c_perspectives"),
)
_AUTHZ_JOIN = authorizations.outerjoin(challenges, challenges.c.authz_id == authorizations.c.id)


@cache
def select_authzs_joined(count: int) -> Select[Any]:
    """Authorizations ``b_id0`` … ``b_id{count-1}`` with their challenges."""
    ids = [bindparam(f"b_id{i}", type_=authorizations.c.id.type) for i in range(count)]
    return (
        select(*_AUTHZ_JOINED_COLUMNS)
        .select_from(_AUTHZ_JOIN)
        .where(authorizations.c.id.in_(ids))
        .order_by(authorizations.c.id, challenges.c.position)
    )


SELECT_AUTHZ_JOINED = select_authzs_joined(1)
# Same, but locking the authorization row (PostgreSQL; SQLite's BEGIN
# IMMEDIATE already serialises writers and the clause is not rendered there).
SELECT_AUTHZ_JOINED_FOR_UPDATE = (
    select(*_AUTHZ_JOINED_COLUMNS)
    .select_from(_AUTHZ_JOIN)
    .where(authorizations.c.id == bindparam("b_id"))
    .order_by(challenges.c.position)
    .with_for_update(of=authorizations)
)


@cache
def select_reusable_authzs_joined(identifiers: int, statuses: int) -> Select[Any]:
    """An account's authorizations (with challenges) for identifiers ``b_type{i}``,
    ``b_value{i}``, ``b_wildcard{i}``, in statuses ``b_status{j}``, expiring after
    ``b_min_expires``; newest first, one authorization's rows together."""
    a = authorizations
    wanted = [
        and_(
            a.c.identifier_type == bindparam(f"b_type{i}", type_=a.c.identifier_type.type),
            a.c.identifier_value == bindparam(f"b_value{i}", type_=a.c.identifier_value.type),
            a.c.wildcard == bindparam(f"b_wildcard{i}", type_=a.c.wildcard.type),
        )
        for i in range(identifiers)
    ]
    values = [bindparam(f"b_value{i}", type_=a.c.identifier_value.type) for i in range(identifiers)]
    in_status = [bindparam(f"b_status{j}", type_=a.c.status.type) for j in range(statuses)]
    return (
        select(*_AUTHZ_JOINED_COLUMNS)
        .select_from(_AUTHZ_JOIN)
        .where(
            a.c.account_id == bindparam("b_account_id"),
            # Implied by the OR below, but lets SQLite search the reuse index
            # by (account_id, identifier_value) instead of scanning the account.
            a.c.identifier_value.in_(values),
            or_(*wanted),
            a.c.status.in_(in_status),
            a.c.expires > bindparam("b_min_expires", type_=MicroTimestamp),
        )
        .order_by(a.c.created_at.desc(), a.c.expires.desc(), a.c.id, challenges.c.position)
    )


_ACTIVE_CHALLENGE = challenges.alias("active_challenge")
# RFC 8555 §7.5.1: one validation attempt per authorization. The WHERE clause
# restates every precondition so the UPDATE alone is a correct guard.
START_CHALLENGE = (
    update(challenges)
    .where(
        challenges.c.authz_id == bindparam("b_authz_id"),
        challenges.c.id == bindparam("b_challenge_id"),
        challenges.c.status == PENDING,
        select(authorizations.c.id)
        .where(authorizations.c.id == bindparam("b_authz_id"), authorizations.c.status == PENDING)
        .exists(),
        ~select(_ACTIVE_CHALLENGE.c.id)
        .where(
            _ACTIVE_CHALLENGE.c.authz_id == bindparam("b_authz_id"),
            _one_of(_ACTIVE_CHALLENGE.c.status, (PROCESSING, VALID)),
        )
        .exists(),
    )
    .values(status=PROCESSING)
)
FINISH_CHALLENGE = (
    update(challenges)
    .where(
        challenges.c.authz_id == bindparam("b_authz_id"),
        challenges.c.id == bindparam("b_challenge_id"),
        challenges.c.status == PROCESSING,
    )
    .values(
        status=bindparam("b_status"),
        validated_at=bindparam("b_validated_at", type_=MicroTimestamp),
        error_json=bindparam("b_error_json"),
        validation_json=bindparam("b_validation_json"),
        perspectives=bindparam("b_perspectives"),
    )
)
FINISH_AUTHZ = (
    update(authorizations)
    .where(authorizations.c.id == bindparam("b_authz_id"), authorizations.c.status == PENDING)
    .values(
        status=bindparam("b_status"),
        expires=func.coalesce(
            bindparam("b_expires", type_=MicroTimestamp), authorizations.c.expires
        ),
    )
)
DEACTIVATE_AUTHZ = (
    update(authorizations)
    .where(
        authorizations.c.id == bindparam("b_authz_id"),
        _one_of(authorizations.c.status, (PENDING, VALID)),
    )
    .values(status=DEACTIVATED)
)

INSERT_AUTHORIZATIONS = authorizations.insert().values(_insert_binds(authorizations))
INSERT_CHALLENGES = challenges.insert().values(_insert_binds(challenges))

# --- orders ------------------------------------------------------------------

# seq is left out: the database assigns it (SQLite rowid, PostgreSQL BIGSERIAL).
INSERT_ORDER = orders.insert().values(_insert_binds(orders, skip=("seq",))).returning(orders.c.seq)
SELECT_ORDER = select(orders).where(orders.c.id == bindparam("b_id"))
SELECT_REUSABLE_ORDER = (
    select(orders)
    .where(
        orders.c.account_id == bindparam("b_account_id"),
        orders.c.identifiers_key == bindparam("b_identifiers_key"),
        orders.c.profile == bindparam("b_profile"),
        orders.c.not_before.is_(None),
        orders.c.not_after.is_(None),
        orders.c.finalize_state == FINALIZE_NONE,
        orders.c.expires > bindparam("b_now", type_=MicroTimestamp),
    )
    .order_by(orders.c.seq.desc())
    .limit(1)
)
LIST_ORDERS = (
    select(orders)
    .where(orders.c.account_id == bindparam("b_account_id"), orders.c.seq > bindparam("b_after"))
    .order_by(orders.c.seq)
    .limit(bindparam("b_limit"))
)
BEGIN_FINALIZE = (
    update(orders)
    .where(orders.c.id == bindparam("b_id"), orders.c.finalize_state == FINALIZE_NONE)
    .values(finalize_state=FINALIZE_PROCESSING)
)
COMPLETE_FINALIZE = (
    update(orders)
    .where(orders.c.id == bindparam("b_id"), orders.c.finalize_state == FINALIZE_PROCESSING)
    .values(finalize_state=FINALIZE_VALID, certificate_serial=bindparam("b_serial"))
    .returning(orders)
)
FAIL_FINALIZE = (
    update(orders)
    .where(orders.c.id == bindparam("b_id"), orders.c.finalize_state == FINALIZE_PROCESSING)
    .values(finalize_state=FINALIZE_INVALID, error_json=bindparam("b_error_json"))
    .returning(orders)
)

# --- certificates ------------------------------------------------------------

SELECT_CERTIFICATE = select(certificates).where(certificates.c.serial == bindparam("b_serial"))
SELECT_SERIAL_EXISTS = select(certificates.c.serial).where(
    certificates.c.serial == bindparam("b_serial")
)
# RETURNING names the CRL the revocation must reach (marked dirty in the
# same transaction).
_CRL_PLACE = (certificates.c.serial, certificates.c.issuer_id, certificates.c.crl_shard)
REVOKE_CERTIFICATE = (
    update(certificates)
    .where(certificates.c.serial == bindparam("b_serial"), certificates.c.status == CERT_GOOD)
    .values(
        status=CERT_REVOKED,
        revoked_at=bindparam("b_revoked_at", type_=MicroTimestamp),
        revocation_reason=bindparam("b_reason"),
    )
    .returning(*_CRL_PLACE)
)
SELECT_REVOCATION = select(
    certificates.c.status, certificates.c.revocation_reason, certificates.c.not_after
).where(certificates.c.serial == bindparam("b_serial"))
# Boulder's UpdateRevokedCertificate: an already revoked certificate may be
# re-revoked for keyCompromise (1) only; its revocation date stays.
_NOT_KEY_COMPROMISE = or_(
    certificates.c.revocation_reason.is_(None), certificates.c.revocation_reason != 1
)
REREVOKE_FOR_KEY_COMPROMISE = (
    update(certificates)
    .where(
        certificates.c.serial == bindparam("b_serial"),
        certificates.c.status == CERT_REVOKED,
        _NOT_KEY_COMPROMISE,
    )
    .values(revocation_reason=1)
    .returning(*_CRL_PLACE)
)
# A key-compromise revocation reaches every unexpired certificate of the key
# (BR 4.9.1.1 item 3), by any account: good ones are revoked, revoked ones
# get reason keyCompromise.
REVOKE_BY_KEY = (
    update(certificates)
    .where(
        certificates.c.key_spki_sha256 == bindparam("b_key"),
        certificates.c.status == CERT_GOOD,
        # Its own bind name: fastpath processes each named bind once per use.
        certificates.c.not_after > bindparam("b_now", type_=MicroTimestamp),
    )
    .values(
        status=CERT_REVOKED,
        revoked_at=bindparam("b_revoked_at", type_=MicroTimestamp),
        revocation_reason=1,
    )
    .returning(*_CRL_PLACE)
)
REREVOKE_BY_KEY = (
    update(certificates)
    .where(
        certificates.c.key_spki_sha256 == bindparam("b_key"),
        certificates.c.status == CERT_REVOKED,
        certificates.c.not_after > bindparam("b_now", type_=MicroTimestamp),
        _NOT_KEY_COMPROMISE,
    )
    .values(revocation_reason=1)
    .returning(*_CRL_PLACE)
)
REVOKE_BY_ACCOUNT = (
    update(certificates)
    .where(
        certificates.c.account_id == bindparam("b_account_id"),
        certificates.c.status == CERT_GOOD,
        # Its own bind name: fastpath processes each named bind once per use.
        certificates.c.not_after > bindparam("b_now", type_=MicroTimestamp),
    )
    .values(
        status=CERT_REVOKED,
        revoked_at=bindparam("b_revoked_at", type_=MicroTimestamp),
        revocation_reason=bindparam("b_reason"),
    )
    .returning(*_CRL_PLACE)
)
# RFC 9773: an operator's renewal window (or NULLs to fall back to the
# default rule); RETURNING says whether the certificate exists.
SET_RENEWAL_WINDOW = (
    update(certificates)
    .where(certificates.c.serial == bindparam("b_serial"))
    .values(
        ari_window_start=bindparam("b_start", type_=MicroTimestamp),
        ari_window_end=bindparam("b_end", type_=MicroTimestamp),
    )
    .returning(certificates)
)
# RFC 9773 §5: a certificate is replaced once. The WHERE clause is the guard:
# of two orders replacing one certificate, the second finds no row (or finds
# its own id, when the same order is recorded again).
MARK_REPLACED = (
    update(certificates)
    .where(
        certificates.c.serial == bindparam("b_serial"),
        or_(
            certificates.c.replaced_by_order.is_(None),
            certificates.c.replaced_by_order == bindparam("b_order_id"),
        ),
    )
    .values(replaced_by_order=bindparam("b_order_id"))
)
SELECT_REPLACED_BY = select(certificates.c.replaced_by_order).where(
    certificates.c.serial == bindparam("b_serial")
)
# RFC 5280 §5.1.2.6: a CRL need not list certificates past their notAfter.
_REVOKED_ENTRY = (
    certificates.c.serial,
    certificates.c.revoked_at,
    certificates.c.revocation_reason,
)
LIST_REVOKED = (
    select(*_REVOKED_ENTRY)
    .where(
        certificates.c.issuer_id == bindparam("b_issuer_id"),
        certificates.c.status == CERT_REVOKED,
        certificates.c.not_after > bindparam("b_now", type_=MicroTimestamp),
    )
    .order_by(certificates.c.serial)
)
LIST_REVOKED_IN_SHARD = (
    select(*_REVOKED_ENTRY)
    .where(
        certificates.c.issuer_id == bindparam("b_issuer_id"),
        certificates.c.crl_shard == bindparam("b_shard"),
        certificates.c.status == CERT_REVOKED,
        certificates.c.not_after > bindparam("b_now", type_=MicroTimestamp),
    )
    .order_by(certificates.c.serial)
)
# The highest shard any certificate of the issuer names: after an operator
# lowers --crl-shards, the higher shards are still served.
MAX_CRL_SHARD = select(func.max(certificates.c.crl_shard).label("shard")).where(
    certificates.c.issuer_id == bindparam("b_issuer_id")
)
SELECT_GOOD_SERIALS_BY_KEY = select(certificates.c.serial).where(
    certificates.c.key_spki_sha256 == bindparam("b_key"),
    certificates.c.status == CERT_GOOD,
    certificates.c.not_after > bindparam("b_now", type_=MicroTimestamp),
)
SELECT_GOOD_SERIALS_BY_ACCOUNT = select(certificates.c.serial).where(
    certificates.c.account_id == bindparam("b_account_id"),
    certificates.c.status == CERT_GOOD,
    certificates.c.not_after > bindparam("b_now", type_=MicroTimestamp),
)

# --- blocked keys (BR 6.1.1.3) -------------------------------------------------

SELECT_BLOCKED_KEY = select(blocked_keys).where(
    blocked_keys.c.key_spki_sha256 == bindparam("b_key")
)
LIST_BLOCKED_KEYS = select(blocked_keys).order_by(
    blocked_keys.c.added_at, blocked_keys.c.key_spki_sha256
)

# --- CRL shards ------------------------------------------------------------------

_CRL_STATE = tuple(c for c in crl_shards.c if c.key not in ("der", "lease_token"))
# Every revocation that reaches a shard marks it (and the complete CRL, shard
# 0) in its own transaction; the updater rebuilds marked shards soon after.
MARK_CRL_DIRTY = (
    update(crl_shards)
    .where(
        crl_shards.c.issuer_id == bindparam("b_issuer_id"),
        crl_shards.c.shard == bindparam("b_shard"),
    )
    .values(
        dirty_version=crl_shards.c.dirty_version + 1,
        dirty_since=func.coalesce(
            crl_shards.c.dirty_since, bindparam("b_now", type_=MicroTimestamp)
        ),
    )
)
LIST_CRL_STATES = (
    select(*_CRL_STATE)
    .where(crl_shards.c.issuer_id == bindparam("b_issuer_id"))
    .order_by(crl_shards.c.shard)
)
# A lease is taken only if nobody holds an unexpired one (Boulder's
# LeaseCRLShard); RETURNING is the state the builder starts from.
LEASE_CRL_SHARD = (
    update(crl_shards)
    .where(
        crl_shards.c.issuer_id == bindparam("b_issuer_id"),
        crl_shards.c.shard == bindparam("b_shard"),
        or_(
            crl_shards.c.leased_until.is_(None),
            crl_shards.c.leased_until <= bindparam("b_now", type_=MicroTimestamp),
        ),
    )
    .values(
        leased_until=bindparam("b_until", type_=MicroTimestamp),
        lease_token=bindparam("b_token"),
    )
    .returning(*_CRL_STATE)
)
# Stored only by the lease holder; the shard stays dirty if a revocation
# arrived after the builder read its entries (dirty_version moved on).
STORE_CRL = (
    update(crl_shards)
    .where(
        crl_shards.c.issuer_id == bindparam("b_issuer_id"),
        crl_shards.c.shard == bindparam("b_shard"),
        crl_shards.c.lease_token == bindparam("b_token"),
    )
    .values(
        crl_number=bindparam("b_number"),
        this_update=bindparam("b_this_update", type_=MicroTimestamp),
        next_update=bindparam("b_next_update", type_=MicroTimestamp),
        entries=bindparam("b_entries"),
        der=bindparam("b_der", type_=crl_shards.c.der.type),
        dirty_since=case(
            (crl_shards.c.dirty_version == bindparam("b_read_version"), null()),
            else_=crl_shards.c.dirty_since,
        ),
        leased_until=null(),
        lease_token=null(),
    )
)
RELEASE_CRL_LEASE = (
    update(crl_shards)
    .where(
        crl_shards.c.issuer_id == bindparam("b_issuer_id"),
        crl_shards.c.shard == bindparam("b_shard"),
        crl_shards.c.lease_token == bindparam("b_token"),
    )
    .values(leased_until=null(), lease_token=null())
)
SELECT_CRL = select(
    crl_shards.c.crl_number,
    crl_shards.c.this_update,
    crl_shards.c.next_update,
    crl_shards.c.der,
).where(
    crl_shards.c.issuer_id == bindparam("b_issuer_id"),
    crl_shards.c.shard == bindparam("b_shard"),
)
SELECT_CRL_NUMBER = select(crl_shards.c.crl_number).where(
    crl_shards.c.issuer_id == bindparam("b_issuer_id"),
    crl_shards.c.shard == bindparam("b_shard"),
)


@dataclass(frozen=True)
class DialectInserts:
    """INSERT ... ON CONFLICT DO NOTHING, spelled for the engine's dialect.

    Both SQLite (3.24+) and PostgreSQL support it; SQLAlchemy needs the
    dialect's own ``insert`` to render it. Doing nothing on conflict keeps a
    PostgreSQL transaction usable, where a raised IntegrityError would abort
    it. RETURNING says whether a row went in: no row back means conflict (an
    INSERT's DBAPI rowcount is not reliable across drivers).
    """

    account_if_new: Insert
    eab_key_if_new: Insert
    certificate_if_new: Insert
    blocked_key_if_new: Insert
    crl_shard_if_new: Insert


def dialect_inserts(engine: Engine) -> DialectInserts:
    name = engine.dialect.name
    make: Any
    if name == "sqlite":
        make = sqlite.insert
    elif name == "postgresql":
        make = postgresql.insert
    else:  # normalise_url admits no other backend
        raise ValueError(f"unsupported dialect {name}")
    return DialectInserts(
        account_if_new=make(accounts)
        .values(_insert_binds(accounts))
        .on_conflict_do_nothing(index_elements=["key_thumbprint"])
        .returning(accounts.c.id),
        eab_key_if_new=make(eab_keys)
        .values(_insert_binds(eab_keys))
        .on_conflict_do_nothing(index_elements=["kid"])
        .returning(eab_keys.c.kid),
        certificate_if_new=make(certificates)
        .values(_insert_binds(certificates))
        .on_conflict_do_nothing(index_elements=["serial"])
        .returning(certificates.c.serial),
        blocked_key_if_new=make(blocked_keys)
        .values(_insert_binds(blocked_keys))
        .on_conflict_do_nothing(index_elements=["key_spki_sha256"])
        .returning(blocked_keys.c.key_spki_sha256),
        # A row for a shard that has never had a CRL, so it can be leased.
        crl_shard_if_new=make(crl_shards)
        .values(
            issuer_id=bindparam("issuer_id"),
            shard=bindparam("shard"),
            dirty_version=0,
        )
        .on_conflict_do_nothing(index_elements=["issuer_id", "shard"]),
    )
