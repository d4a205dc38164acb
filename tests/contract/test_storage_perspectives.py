"""Storage contract, multi-perspective corroboration (BR 3.2.2.9): each
perspective's outcome is stored with the challenge (migration 0003) and read
back by every query that returns challenges — on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from certmint.ca.storage import StorageAuthority
from certmint.ca.storage.records import INVALID, VALID

from .storage_builders import DAY, HOUR, T0, pending_authz

OUTCOMES = json.dumps(
    [
        {"region": "primary", "valid": True},
        {"region": "r1", "valid": True},
        {"region": "r2", "valid": False, "problemType": "dns", "detail": "SERVFAIL - \u00fc"},
    ]
)


def test_finish_challenge_stores_perspectives(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    chall = authz.challenges[0]
    sa.start_challenge(authz.id, chall.id)
    after = sa.finish_challenge(
        authz.id,
        chall.id,
        valid=True,
        validated_at=T0 + HOUR,
        error_json=None,
        validation_json="[]",
        authz_expires=T0 + 30 * DAY,
        perspectives_json=OUTCOMES,
    )
    assert after.status == VALID
    assert after.challenges[0].perspectives_json == OUTCOMES
    assert [c.perspectives_json for c in after.challenges[1:]] == [None, None]
    # Every read path returns the column.
    assert sa.get_authz(authz.id) == after
    assert sa.get_authzs([authz.id]) == [after]
    key = (authz.identifier_type, authz.identifier_value, authz.wildcard)
    reusable = sa.find_reusable_authzs(authz.account_id, [key], (VALID,), T0)
    assert reusable[key].challenges[0].perspectives_json == OUTCOMES


def test_finish_challenge_without_perspectives_stores_null(sa: StorageAuthority) -> None:
    authz = pending_authz(sa)
    chall = authz.challenges[1]
    sa.start_challenge(authz.id, chall.id)
    after = sa.finish_challenge(
        authz.id, chall.id, valid=False, validated_at=None, error_json="{}",
        validation_json=None, authz_expires=None,
    )  # fmt: skip
    assert after.status == INVALID
    assert all(c.perspectives_json is None for c in after.challenges)
    assert sa.get_authz(authz.id) == after
