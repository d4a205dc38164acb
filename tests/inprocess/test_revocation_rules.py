"""Revocation rules through the real WFE and RA (ca/ra_revocation.py): the
reason each way of asking gets, keyCompromise blocking the key and revoking
every certificate with it (any account), ip identifiers, expiry, and a
blocked key refused for new accounts and new certificates (badPublicKey)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certmint.ca.keypolicy import spki_sha256
from certmint.ca.storage.records import BLOCKED_BY_REVOCATION, CERT_GOOD, CERT_REVOKED
from certmint.protocol.b64 import b64url_encode
from certmint.protocol.csr import split_pem_chain
from certmint.testing.acme_client import RawAcmeClient, make_csr

from .conftest import BASE_URL, CAEnv, problem_type
from .flows import issue_with_key, serial_of, validate_order
from .test_identifiers import PUBLIC_V4, SHORTLIVED, csr_for, ident, ready_order

pytestmark = pytest.mark.anyio

NAMES = ["rules.example.com"]


async def leaf_der(client: RawAcmeClient, order: dict[str, Any]) -> bytes:
    response = await client.get(order["certificate"])
    assert response.status_code == 200, response.text
    return split_pem_chain(response.text)[0]


def payload(der: bytes, reason: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"certificate": b64url_encode(der)}
    if reason is not None:
        body["reason"] = reason
    return body


def revocation(env: CAEnv, order: dict[str, Any]) -> tuple[str, int | None]:
    record = env.server.sa.get_certificate(serial_of(order))
    assert record is not None
    return record.status, record.revocation_reason


async def issue_for_key(
    env: CAEnv, client: RawAcmeClient, names: list[str], key: ec.EllipticCurvePrivateKey
) -> dict[str, Any]:
    order, order_url = await validate_order(env, client, names)
    csr, _ = make_csr(names, key)
    response = await client.finalize(order, csr)
    assert response.status_code == 200, response.text
    done: dict[str, Any] = response.json()
    done["url"] = order_url
    return done


async def test_the_certificate_key_forces_key_compromise_and_blocks_the_key(env: CAEnv) -> None:
    """Boulder's RevokeCertByKey: reason keyCompromise whatever was asked,
    the key blocked, and every unexpired certificate with it revoked, even
    another account's (Let's Encrypt CPS 4.9.3)."""
    alice, bob = await env.client(), await env.client()
    mine, key = await issue_with_key(env, alice, NAMES)
    bobs = await issue_for_key(env, bob, ["other.example.com"], key)
    unrelated, _ = await issue_with_key(env, bob, ["third.example.com"])
    stranger = await env.client(register=False)
    der = await leaf_der(alice, mine)
    response = await stranger.post(
        stranger.dir["revokeCert"], payload(der, 4), key=key, use_jwk=True
    )
    assert response.status_code == 200, response.text
    assert revocation(env, mine) == (CERT_REVOKED, 1)
    assert revocation(env, bobs) == (CERT_REVOKED, 1)
    assert revocation(env, unrelated) == (CERT_GOOD, None)
    blocked = env.server.sa.get_blocked_key(spki_sha256(key.public_key()).hex())
    assert blocked is not None
    assert (blocked.source, blocked.revoked_serial) == (BLOCKED_BY_REVOCATION, serial_of(mine))
    # Asking again: already revoked for keyCompromise.
    again = await stranger.post(stranger.dir["revokeCert"], payload(der), key=key, use_jwk=True)
    assert again.status_code == 400 and problem_type(again) == "alreadyRevoked"


async def test_a_blocked_key_is_refused_for_accounts_and_certificates(env: CAEnv) -> None:
    client = await env.client()
    order, key = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    response = await client.post(client.dir["revokeCert"], payload(der), key=key, use_jwk=True)
    assert response.status_code == 200, response.text

    # A new order whose CSR carries the compromised key: badPublicKey.
    ready, _ = await validate_order(env, client, ["again.example.com"])
    csr, _ = make_csr(["again.example.com"], key)
    refused = await client.finalize(ready, csr)
    assert refused.status_code == 400, refused.text
    assert problem_type(refused) == "badPublicKey"
    assert "blocked" in refused.json()["detail"]
    # A newAccount with it: badPublicKey too.
    holder = RawAcmeClient(env.http, f"{BASE_URL}/directory", key=key)
    await holder.load_directory()
    account = await holder.new_account()
    assert account.status_code == 400, account.text
    assert problem_type(account) == "badPublicKey"


async def test_subscriber_key_compromise_also_blocks_and_cascades(env: CAEnv) -> None:
    """The subscriber proved possession of the key in its CSR; its
    keyCompromise is taken as evidence (docs/divergences.md)."""
    alice, bob = await env.client(), await env.client()
    mine, key = await issue_with_key(env, alice, NAMES)
    bobs = await issue_for_key(env, bob, ["other.example.com"], key)
    response = await alice.post(alice.dir["revokeCert"], payload(await leaf_der(alice, mine), 1))
    assert response.status_code == 200, response.text
    assert revocation(env, mine) == (CERT_REVOKED, 1)
    assert revocation(env, bobs) == (CERT_REVOKED, 1)
    assert env.server.sa.is_key_blocked(spki_sha256(key.public_key()))


@pytest.mark.parametrize("asked", [None, 1, 3, 4])
async def test_an_account_holding_authorizations_gets_cessation_of_operation(
    env: CAEnv, asked: int | None
) -> None:
    """Boulder / Mozilla Root Store Policy 6.1.1: not the subscriber, so the
    reason is cessationOfOperation, and nothing is blocked."""
    alice, bob = await env.client(), await env.client()
    order, key = await issue_with_key(env, alice, NAMES)
    await validate_order(env, bob, NAMES)
    response = await bob.post(bob.dir["revokeCert"], payload(await leaf_der(alice, order), asked))
    assert response.status_code == 200, response.text
    assert revocation(env, order) == (CERT_REVOKED, 5)
    assert not env.server.sa.is_key_blocked(spki_sha256(key.public_key()))


@pytest.mark.parametrize("reason", [2, 6, 8, 9, 10])
async def test_the_certificate_key_cannot_give_a_non_subscriber_reason(
    env: CAEnv, reason: int
) -> None:
    client = await env.client()
    order, key = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    response = await client.post(
        client.dir["revokeCert"], payload(der, reason), key=key, use_jwk=True
    )
    assert response.status_code == 400
    assert problem_type(response) == "badRevocationReason"
    assert revocation(env, order) == (CERT_GOOD, None)
    assert not env.server.sa.is_key_blocked(spki_sha256(key.public_key()))


async def test_ip_certificates_revoked_by_an_account_holding_ip_authorizations(
    env: CAEnv,
) -> None:
    """RFC 8555 §7.6 for RFC 8738 identifiers: iPAddress SANs need ip
    authorizations (dns ones for the same text do not count)."""
    alice, bob, carol = await env.client(), await env.client(), await env.client()
    idents = (ident("dns", "www.example.com"), ident("ip", PUBLIC_V4))
    order = await ready_order(env, alice, *idents, profile=SHORTLIVED)
    response = await alice.finalize(order, csr_for(["www.example.com"], [PUBLIC_V4]))
    assert response.status_code == 200, response.text
    issued = response.json()
    der = await leaf_der(alice, issued)
    # Carol holds only the dns name: not enough.
    await validate_order(env, carol, ["www.example.com"])
    refused = await carol.post(carol.dir["revokeCert"], payload(der))
    assert refused.status_code == 403 and problem_type(refused) == "unauthorized"
    # Bob holds both.
    await ready_order(env, bob, *idents, profile=SHORTLIVED)
    done = await bob.post(bob.dir["revokeCert"], payload(der))
    assert done.status_code == 200, done.text
    assert revocation(env, issued) == (CERT_REVOKED, 5)


async def test_an_expired_certificate_is_not_revoked(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    env.clock.advance(timedelta(days=91).total_seconds())
    response = await client.post(client.dir["revokeCert"], payload(der))
    assert response.status_code == 403 and problem_type(response) == "unauthorized"
    assert "expired" in response.json()["detail"]
    assert revocation(env, order) == (CERT_GOOD, None)


async def test_the_crl_shows_a_key_compromise_in_every_shard_it_reaches(env: CAEnv) -> None:
    alice, bob = await env.client(), await env.client()
    first, key = await issue_with_key(env, alice, NAMES)
    second = await issue_for_key(env, bob, ["other.example.com"], key)
    updater = env.server.crl_updater
    updater.run_once()
    response = await alice.post(
        alice.dir["revokeCert"], payload(await leaf_der(alice, first)), key=key, use_jwk=True
    )
    assert response.status_code == 200, response.text
    env.clock.advance(updater.config.update_after_revocation.total_seconds())
    updater.run_once()
    for order in (first, second):
        record = env.server.sa.get_certificate(serial_of(order))
        assert record is not None and record.crl_shard is not None
        for shard in (record.crl_shard, 0):
            der = env.server.crl_publisher.crl_der(record.issuer_id, shard)
            assert der is not None
            entry = x509.load_der_x509_crl(der).get_revoked_certificate_by_serial_number(
                int(record.serial, 16)
            )
            assert entry is not None, (record.serial, shard)
