"""Certificate download (RFC 8555 §7.4.2) and revocation (§7.6), with the
CRL (RFC 5280 §5) that publishes it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.ca.storage.records import CERT_GOOD, CERT_REVOKED
from certmint.protocol.b64 import b64url_encode
from certmint.protocol.csr import split_pem_chain
from certmint.testing.acme_client import RawAcmeClient

from .conftest import BASE_URL, START, CAEnv, problem_type
from .flows import issue_with_key, serial_of, validate_order

pytestmark = pytest.mark.anyio

NAMES = ["cert.example.com", "www.cert.example.com"]


def assert_problem(response: Any, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert problem_type(response) == kind, response.text


async def leaf_der(client: RawAcmeClient, order: dict[str, Any]) -> bytes:
    response = await client.get(order["certificate"])
    assert response.status_code == 200, response.text
    return split_pem_chain(response.text)[0]


def revoke_payload(der: bytes, reason: int | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"certificate": b64url_encode(der)}
    if reason is not None:
        payload["reason"] = reason
    return payload


def status_of(env: CAEnv, order: dict[str, Any]) -> str:
    record = env.server.sa.get_certificate(serial_of(order))
    assert record is not None
    return record.status


# -- download (§7.4.2) -------------------------------------------------------------


async def test_download_is_a_pem_chain_with_alternates(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    response = await client.get(order["certificate"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pem-certificate-chain"
    chain = split_pem_chain(response.text)
    assert len(chain) >= 2  # leaf + at least one intermediate
    leaf = x509.load_der_x509_certificate(chain[0])
    issuer = x509.load_der_x509_certificate(chain[1])
    assert leaf.issuer == issuer.subject
    alternate = f"{order['certificate']}/1"
    assert f'<{alternate}>;rel="alternate"' in response.headers["Link"]
    other = await client.get(alternate)
    assert other.status_code == 200
    other_chain = split_pem_chain(other.text)
    assert other_chain[0] == chain[0]  # same leaf...
    assert other_chain[1:] != chain[1:]  # ...another path to a root
    assert f'<{order["certificate"]}>;rel="alternate"' in other.headers["Link"]


async def test_alternate_beyond_the_last_is_404(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    assert_problem(await client.get(f"{order['certificate']}/2"), 404, "malformed")
    assert_problem(await client.get(f"{order['certificate']}/x"), 404, "malformed")


async def test_unknown_certificate_download_is_404(env: CAEnv) -> None:
    client = await env.client()
    assert_problem(await client.get(f"{BASE_URL}/acme/cert/abcdef"), 404, "malformed")


async def test_another_account_downloading_is_unauthorized(env: CAEnv) -> None:
    alice = await env.client()
    bob = await env.client()
    order, _ = await issue_with_key(env, alice, NAMES)
    assert_problem(await bob.get(order["certificate"]), 403, "unauthorized")


# -- revocation (§7.6) ----------------------------------------------------------------


async def test_owner_account_revokes(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    response = await client.post(client.dir["revokeCert"], revoke_payload(der))
    assert response.status_code == 200, response.text
    assert response.headers["Replay-Nonce"]
    record = env.server.sa.get_certificate(serial_of(order))
    assert record is not None
    assert record.status == CERT_REVOKED
    assert record.revoked_at == env.clock.now()


async def test_certificate_key_revokes_via_jwk(env: CAEnv) -> None:
    """§7.6: a request signed by the certificate's key (jwk) is authorized."""
    client = await env.client()
    order, cert_key = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    stranger = await env.client(register=False)
    response = await stranger.post(
        stranger.dir["revokeCert"], revoke_payload(der, 1), key=cert_key, use_jwk=True
    )
    assert response.status_code == 200, response.text
    assert status_of(env, order) == CERT_REVOKED


async def test_non_owner_account_without_authorizations_is_unauthorized(env: CAEnv) -> None:
    alice = await env.client()
    bob = await env.client()
    order, _ = await issue_with_key(env, alice, NAMES)
    der = await leaf_der(alice, order)
    response = await bob.post(bob.dir["revokeCert"], revoke_payload(der))
    assert_problem(response, 403, "unauthorized")
    assert status_of(env, order) == CERT_GOOD


async def test_non_owner_with_authorizations_for_only_some_names_is_unauthorized(
    env: CAEnv,
) -> None:
    alice = await env.client()
    bob = await env.client()
    order, _ = await issue_with_key(env, alice, NAMES)
    der = await leaf_der(alice, order)
    await validate_order(env, bob, NAMES[:1])
    response = await bob.post(bob.dir["revokeCert"], revoke_payload(der))
    assert_problem(response, 403, "unauthorized")
    assert status_of(env, order) == CERT_GOOD


async def test_account_holding_authorizations_for_every_name_revokes(env: CAEnv) -> None:
    """§7.6: the server MUST consider authorized "an account that holds
    authorizations for all of the identifiers in the certificate"."""
    alice = await env.client()
    bob = await env.client()
    order, _ = await issue_with_key(env, alice, NAMES)
    der = await leaf_der(alice, order)
    await validate_order(env, bob, NAMES)
    response = await bob.post(bob.dir["revokeCert"], revoke_payload(der))
    assert response.status_code == 200, response.text
    assert status_of(env, order) == CERT_REVOKED


async def test_expired_authorizations_do_not_authorize_revocation(env: CAEnv) -> None:
    alice = await env.client()
    bob = await env.client()
    await validate_order(env, bob, NAMES)
    env.clock.advance(timedelta(days=31).total_seconds())  # bob's authzs lapse (30 days)
    order, _ = await issue_with_key(env, alice, NAMES)
    der = await leaf_der(alice, order)
    response = await bob.post(bob.dir["revokeCert"], revoke_payload(der))
    assert_problem(response, 403, "unauthorized")


async def test_unrelated_jwk_is_unauthorized(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    stranger = await env.client(register=False)
    response = await stranger.post(stranger.dir["revokeCert"], revoke_payload(der), use_jwk=True)
    assert_problem(response, 403, "unauthorized")
    assert status_of(env, order) == CERT_GOOD


async def test_account_key_as_jwk_is_not_the_certificate_key(env: CAEnv) -> None:
    """Signing with the owner's account key as a bare jwk proves control of
    the account key, not of the certificate key."""
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    response = await client.post(client.dir["revokeCert"], revoke_payload(der), use_jwk=True)
    assert_problem(response, 403, "unauthorized")


@pytest.mark.parametrize("reason", [0, 1, 3, 4, 5])
async def test_subscriber_reason_codes_are_accepted(env: CAEnv, reason: int) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    response = await client.post(client.dir["revokeCert"], revoke_payload(der, reason))
    assert response.status_code == 200, response.text
    record = env.server.sa.get_certificate(serial_of(order))
    assert record is not None
    assert record.revocation_reason == reason


@pytest.mark.parametrize("reason", [2, 6, 7, 8, 9, 10, 11, -1])
async def test_other_reason_codes_are_bad_revocation_reason(env: CAEnv, reason: int) -> None:
    """RFC 5280 §5.3.1; BR 4.9.1.1 / 7.2.2: cACompromise, certificateHold,
    removeFromCRL, privilegeWithdrawn, aACompromise are not a subscriber's."""
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    response = await client.post(client.dir["revokeCert"], revoke_payload(der, reason))
    assert_problem(response, 400, "badRevocationReason")
    assert status_of(env, order) == CERT_GOOD


async def test_non_integer_reason_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    payload = {"certificate": b64url_encode(der), "reason": "keyCompromise"}
    assert_problem(await client.post(client.dir["revokeCert"], payload), 400, "malformed")


async def test_revoking_twice_is_already_revoked(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    assert (await client.post(client.dir["revokeCert"], revoke_payload(der))).status_code == 200
    again = await client.post(client.dir["revokeCert"], revoke_payload(der, 4))
    assert_problem(again, 400, "alreadyRevoked")


async def test_a_revoked_certificate_may_be_re_revoked_for_key_compromise(env: CAEnv) -> None:
    """Boulder's UpdateRevokedCertificate: reason → keyCompromise, the date stays."""
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    assert (await client.post(client.dir["revokeCert"], revoke_payload(der, 4))).status_code == 200
    revoked_at = env.clock.now()
    env.clock.advance(60)
    again = await client.post(client.dir["revokeCert"], revoke_payload(der, 1))
    assert again.status_code == 200, again.text
    record = env.server.sa.get_certificate(serial_of(order))
    assert record is not None
    assert (record.revocation_reason, record.revoked_at) == (1, revoked_at)
    third = await client.post(client.dir["revokeCert"], revoke_payload(der, 1))
    assert_problem(third, 400, "alreadyRevoked")


def foreign_certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not ours")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(START + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


async def test_unknown_certificate_is_404(env: CAEnv) -> None:
    client = await env.client()
    response = await client.post(client.dir["revokeCert"], revoke_payload(foreign_certificate()))
    assert_problem(response, 404, "malformed")


async def test_certificate_not_der_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    response = await client.post(client.dir["revokeCert"], revoke_payload(b"not a certificate"))
    assert_problem(response, 400, "malformed")


async def test_revocation_payload_without_certificate_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    assert_problem(await client.post(client.dir["revokeCert"], {}), 400, "malformed")


# -- the CRL (RFC 5280 §5) ---------------------------------------------------------------


async def test_crl_lists_the_revoked_serial(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    der = await leaf_der(client, order)
    record = env.server.sa.get_certificate(serial_of(order))
    assert record is not None and record.crl_shard is not None
    serial = x509.load_der_x509_certificate(der).serial_number
    env.server.crl_updater.run_once()
    publisher = env.server.crl_publisher
    before = publisher.crl_der(record.issuer_id, record.crl_shard)
    assert before is not None
    assert x509.load_der_x509_crl(before).get_revoked_certificate_by_serial_number(serial) is None
    response = await client.post(client.dir["revokeCert"], revoke_payload(der, 4))
    assert response.status_code == 200
    # The revocation marked the shard and the complete CRL (shard 0) dirty;
    # the updater rebuilds exactly those two.
    env.clock.advance(env.server.crl_updater.config.update_after_revocation.total_seconds())
    rebuilt = env.server.crl_updater.run_once()
    assert {(b.shard, b.reason) for b in rebuilt} == {
        (0, "revocation"),
        (record.crl_shard, "revocation"),
    }
    for shard in (record.crl_shard, 0):
        body = publisher.crl_der(record.issuer_id, shard)
        assert body is not None
        entry = x509.load_der_x509_crl(body).get_revoked_certificate_by_serial_number(serial)
        assert entry is not None
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason == x509.ReasonFlags.superseded


async def test_default_issuer_is_e1(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await issue_with_key(env, client, NAMES)
    record = env.server.sa.get_certificate(serial_of(order))
    assert record is not None
    assert record.issuer_id == "e1"
    env.server.crl_updater.run_once()
    assert env.server.crl_publisher.crl_der("e1", 0)
