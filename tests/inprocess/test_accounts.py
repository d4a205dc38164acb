"""Accounts (RFC 8555 §7.3): creation, lookup, contacts, terms, external
account binding, update, deactivation, orders list and key rollover."""

from __future__ import annotations

import re
from typing import Any

import pytest

from certmint.ca.config import PolicyConfig
from certmint.ca.storage.records import EabKeyRecord
from certmint.protocol.jwk import generate_private_key, jwk_from_public_key
from certmint.protocol.jws import sign_eab, sign_jws, sign_key_change
from certmint.testing.acme_client import RawAcmeClient

from .conftest import BASE_URL, START, CAEnv, problem_type

pytestmark = pytest.mark.anyio

EAB_KID = "kid-1"
EAB_HMAC = b"\x01" * 32


def assert_problem(response: Any, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert problem_type(response) == kind, response.text


def next_link(response: Any) -> str | None:
    match = re.search(r'<([^>]+)>;rel="next"', response.headers.get("Link", ""))
    return match.group(1) if match else None


# -- newAccount (§7.3) -------------------------------------------------------------


async def test_new_account_is_201_with_location_and_body(env: CAEnv) -> None:
    client = await env.client(register=False)
    response = await client.new_account(contact=["mailto:admin@example.com"])
    assert response.status_code == 201
    location = response.headers["Location"]
    assert location.startswith(f"{BASE_URL}/acme/acct/")
    body = response.json()
    assert body["status"] == "valid"
    assert body["orders"] == f"{location}/orders"
    assert body["contact"] == ["mailto:admin@example.com"]
    assert body["key"] == jwk_from_public_key(client.key.public_key())


async def test_same_key_again_is_200_with_same_location(env: CAEnv) -> None:
    """§7.3.1: a newAccount for a known key returns the existing account."""
    client = await env.client()
    again = await client.new_account()
    assert again.status_code == 200
    assert again.headers["Location"] == client.kid


async def test_only_return_existing_unknown_key_is_account_does_not_exist(env: CAEnv) -> None:
    """§7.3.1: onlyReturnExisting never creates an account."""
    client = await env.client(register=False)
    response = await client.new_account(only_return_existing=True)
    assert_problem(response, 400, "accountDoesNotExist")
    # ...and nothing was created: a plain newAccount now is a 201.
    assert (await client.new_account()).status_code == 201


async def test_only_return_existing_known_key_is_200(env: CAEnv) -> None:
    client = await env.client()
    response = await client.new_account(only_return_existing=True)
    assert response.status_code == 200
    assert response.headers["Location"] == client.kid


@pytest.mark.parametrize("contact", ["tel:+15551234567", "https://example.com/me", "nomail"])
async def test_non_mailto_contact_is_unsupported_contact(env: CAEnv, contact: str) -> None:
    client = await env.client(register=False)
    response = await client.new_account(contact=[contact])
    assert_problem(response, 400, "unsupportedContact")


@pytest.mark.parametrize(
    "contact",
    [
        "mailto:a@b?subject=x",  # RFC 6068 header fields
        "mailto:a@example.com,b@example.com",  # several addresses
        "mailto:not-an-address",
        "mailto:@example.com",
        "mailto:me@bad_domain!",
        "mailto:white space@example.com",
    ],
)
async def test_bad_mailto_is_invalid_contact(env: CAEnv, contact: str) -> None:
    client = await env.client(register=False)
    response = await client.new_account(contact=[contact])
    assert_problem(response, 400, "invalidContact")


async def test_too_many_contacts_is_invalid_contact(env_factory: Any) -> None:
    env: CAEnv = await env_factory(policy=PolicyConfig(max_contacts=2))
    client = await env.client(register=False)
    contacts = [f"mailto:a{i}@example.com" for i in range(3)]
    response = await client.new_account(contact=contacts)
    assert_problem(response, 400, "invalidContact")


async def test_contact_of_wrong_json_type_is_malformed(env: CAEnv) -> None:
    client = await env.client(register=False)
    response = await client.post(
        client.dir["newAccount"], {"contact": "mailto:a@example.com"}, use_jwk=True
    )
    assert_problem(response, 400, "malformed")


async def test_terms_required_but_not_agreed_is_malformed(env_factory: Any) -> None:
    """§7.3: with meta.termsOfService set, termsOfServiceAgreed must be true."""
    env: CAEnv = await env_factory(terms_of_service="https://acme.test/terms")
    client = await env.client(register=False)
    refused = await client.new_account(agree=False)
    assert_problem(refused, 400, "malformed")
    accepted = await client.new_account(agree=True)
    assert accepted.status_code == 201
    assert accepted.json()["termsOfServiceAgreed"] is True


async def test_terms_not_configured_need_no_agreement(env: CAEnv) -> None:
    client = await env.client(register=False)
    assert (await client.new_account(agree=False)).status_code == 201


# -- external account binding (§7.3.4) ------------------------------------------------


async def eab_env(env_factory: Any) -> CAEnv:
    env: CAEnv = await env_factory(eab_required=True)
    env.server.sa.create_eab_key(EabKeyRecord(EAB_KID, EAB_HMAC, START, None))
    return env


async def test_eab_required_without_binding_is_external_account_required(
    env_factory: Any,
) -> None:
    env = await eab_env(env_factory)
    client = await env.client(register=False)
    response = await client.new_account()
    assert_problem(response, 400, "externalAccountRequired")


async def test_eab_valid_binding_creates_account(env_factory: Any) -> None:
    env = await eab_env(env_factory)
    client = await env.client(register=False)
    response = await client.new_account(eab=(EAB_KID, EAB_HMAC))
    assert response.status_code == 201, response.text
    bound = env.server.sa.get_eab_key(EAB_KID)
    assert bound is not None
    assert response.headers["Location"].endswith(f"/{bound.account_id}")


async def test_eab_kid_used_twice_is_unauthorized(env_factory: Any) -> None:
    env = await eab_env(env_factory)
    first = await env.client(register=False)
    assert (await first.new_account(eab=(EAB_KID, EAB_HMAC))).status_code == 201
    second = await env.client(register=False)
    response = await second.new_account(eab=(EAB_KID, EAB_HMAC))
    assert_problem(response, 403, "unauthorized")


async def test_eab_unknown_kid_is_unauthorized(env_factory: Any) -> None:
    env = await eab_env(env_factory)
    client = await env.client(register=False)
    response = await client.new_account(eab=("no-such-kid", EAB_HMAC))
    assert_problem(response, 403, "unauthorized")


async def test_eab_wrong_hmac_is_unauthorized(env_factory: Any) -> None:
    env = await eab_env(env_factory)
    client = await env.client(register=False)
    response = await client.new_account(eab=(EAB_KID, b"\x02" * 32))
    assert_problem(response, 403, "unauthorized")
    # The failed attempt did not use up the key.
    assert (await client.new_account(eab=(EAB_KID, EAB_HMAC))).status_code == 201


async def test_eab_over_a_different_jwk_is_unauthorized(env_factory: Any) -> None:
    """§7.3.4: the binding's payload MUST be the outer JWS's jwk."""
    env = await eab_env(env_factory)
    client = await env.client(register=False)
    other = jwk_from_public_key(generate_private_key("ES256").public_key())
    binding = sign_eab(other, EAB_KID, EAB_HMAC, client.dir["newAccount"])
    payload = {"termsOfServiceAgreed": True, "externalAccountBinding": binding}
    response = await client.post(client.dir["newAccount"], payload, use_jwk=True)
    assert_problem(response, 403, "unauthorized")


async def test_eab_with_wrong_url_is_malformed(env_factory: Any) -> None:
    """§7.3.4: the binding's url MUST equal the outer url (newAccount)."""
    env = await eab_env(env_factory)
    client = await env.client(register=False)
    jwk = jwk_from_public_key(client.key.public_key())
    binding = sign_eab(jwk, EAB_KID, EAB_HMAC, client.dir["newOrder"])
    payload = {"termsOfServiceAgreed": True, "externalAccountBinding": binding}
    response = await client.post(client.dir["newAccount"], payload, use_jwk=True)
    assert_problem(response, 400, "malformed")


async def test_eab_with_asymmetric_alg_is_refused(env_factory: Any) -> None:
    """§7.3.4: the binding MUST use a MAC algorithm."""
    env = await eab_env(env_factory)
    client = await env.client(register=False)
    jwk = jwk_from_public_key(client.key.public_key())
    import json

    binding = sign_jws(
        client.key, json.dumps(jwk).encode(), {"kid": EAB_KID, "url": client.dir["newAccount"]}
    )
    payload = {"termsOfServiceAgreed": True, "externalAccountBinding": binding}
    response = await client.post(client.dir["newAccount"], payload, use_jwk=True)
    assert_problem(response, 400, "badSignatureAlgorithm")


# -- the account resource (§7.3.2, §7.3.6) ---------------------------------------------


async def test_account_post_as_get_returns_it(env: CAEnv) -> None:
    client = await env.client(contact=["mailto:a@example.com"])
    response = await client.get(client.kid or "")
    assert response.status_code == 200
    assert response.json()["status"] == "valid"
    assert response.json()["contact"] == ["mailto:a@example.com"]


async def test_update_contact(env: CAEnv) -> None:
    client = await env.client(contact=["mailto:a@example.com"])
    response = await client.post(client.kid or "", {"contact": ["mailto:b@example.com"]})
    assert response.status_code == 200
    assert response.json()["contact"] == ["mailto:b@example.com"]
    assert (await client.get(client.kid or "")).json()["contact"] == ["mailto:b@example.com"]


async def test_update_with_bad_contact_is_refused(env: CAEnv) -> None:
    client = await env.client(contact=["mailto:a@example.com"])
    response = await client.post(client.kid or "", {"contact": ["tel:123"]})
    assert_problem(response, 400, "unsupportedContact")


async def test_update_by_another_accounts_key_is_unauthorized(env: CAEnv) -> None:
    """§7.3.2: only the account's own key may update it."""
    alice = await env.client(contact=["mailto:alice@example.com"])
    bob = await env.client()
    response = await bob.post(alice.kid or "", {"contact": ["mailto:bob@example.com"]})
    assert_problem(response, 403, "unauthorized")
    peek = await bob.get(alice.kid or "")
    assert_problem(peek, 403, "unauthorized")
    assert (await alice.get(alice.kid or "")).json()["contact"] == ["mailto:alice@example.com"]


async def test_deactivation_locks_the_key_out(env: CAEnv) -> None:
    """§7.3.6: after deactivation the server MUST NOT accept the account's
    key for any request (unauthorized)."""
    client = await env.client()
    response = await client.post(client.kid or "", {"status": "deactivated"})
    assert response.status_code == 200
    assert response.json()["status"] == "deactivated"
    after = await client.get(client.kid or "")
    assert_problem(after, 403, "unauthorized")
    order = await client.new_order(["deactivated.example.com"])
    assert_problem(order, 403, "unauthorized")
    again = await client.new_account()
    assert_problem(again, 403, "unauthorized")


@pytest.mark.parametrize("status", ["valid", "revoked", "pending", "banana"])
async def test_status_other_than_deactivated_is_malformed(env: CAEnv, status: str) -> None:
    client = await env.client()
    response = await client.post(client.kid or "", {"status": status})
    assert_problem(response, 400, "malformed")
    assert (await client.get(client.kid or "")).json()["status"] == "valid"


# -- orders list (§7.1.2.1) -------------------------------------------------------------


async def test_orders_list_is_paginated_and_complete(env_factory: Any) -> None:
    """§7.1.2.1: the list is paginated with Link rel="next"."""
    env: CAEnv = await env_factory(orders_page_size=2)
    client = await env.client()
    made = set()
    for i in range(5):
        created = await client.new_order([f"page{i}.example.com"])
        made.add(created.headers["Location"])
    url: str | None = (await client.get(client.kid or "")).json()["orders"]
    seen: list[str] = []
    pages = 0
    while url is not None and pages < 10:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        page = response.json()["orders"]
        assert len(page) <= 2
        seen.extend(page)
        pages += 1
        url = next_link(response)
        if url is not None:
            assert "cursor=" in url
    assert pages >= 3
    assert sorted(seen) == sorted(made)


async def test_orders_list_of_another_account_is_unauthorized(env: CAEnv) -> None:
    alice = await env.client()
    await alice.new_order(["alice.example.com"])
    bob = await env.client()
    orders_url = f"{alice.kid}/orders"
    response = await bob.get(orders_url)
    assert_problem(response, 403, "unauthorized")


async def test_orders_list_bad_cursor_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    response = await client.get(f"{client.kid}/orders?cursor=abc")
    assert_problem(response, 400, "malformed")


# -- key rollover (§7.3.5) ---------------------------------------------------------------


async def roll(client: RawAcmeClient, inner: Any) -> Any:
    return await client.post(client.dir["keyChange"], inner)


async def test_key_change_moves_the_account_to_the_new_key(env: CAEnv) -> None:
    client = await env.client()
    old_key = client.key
    new_key = generate_private_key("ES256")
    inner = sign_key_change(old_key, new_key, client.kid or "", client.dir["keyChange"])
    response = await roll(client, inner)
    assert response.status_code == 200, response.text
    assert response.json()["key"] == jwk_from_public_key(new_key.public_key())
    # The old key no longer verifies for this kid: the signature is bad.
    stale = await client.get(client.kid or "")
    assert_problem(stale, 400, "malformed")
    # The new key works, and newAccount with it finds the same account.
    client.key = new_key
    assert (await client.get(client.kid or "")).status_code == 200
    again = await client.new_account(only_return_existing=True)
    assert again.status_code == 200
    assert again.headers["Location"] == response.headers["Location"]


async def test_key_change_inner_url_differs_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    new_key = generate_private_key("ES256")
    inner = sign_key_change(client.key, new_key, client.kid or "", client.dir["newOrder"])
    assert_problem(await roll(client, inner), 400, "malformed")


async def test_key_change_inner_with_nonce_is_malformed(env: CAEnv) -> None:
    """§7.3.5: the inner JWS MUST NOT have a nonce."""
    client = await env.client()
    new_key = generate_private_key("ES256")
    import json

    payload = {"account": client.kid, "oldKey": jwk_from_public_key(client.key.public_key())}
    protected = {
        "jwk": jwk_from_public_key(new_key.public_key()),
        "url": client.dir["keyChange"],
        "nonce": (await env.http.head("/acme/new-nonce")).headers["Replay-Nonce"],
    }
    inner = sign_jws(new_key, json.dumps(payload).encode(), protected)
    assert_problem(await roll(client, inner), 400, "malformed")


async def test_key_change_inner_account_wrong_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    other = await env.client()
    new_key = generate_private_key("ES256")
    inner = sign_key_change(client.key, new_key, other.kid or "", client.dir["keyChange"])
    assert_problem(await roll(client, inner), 400, "malformed")


async def test_key_change_old_key_wrong_is_unauthorized(env: CAEnv) -> None:
    client = await env.client()
    new_key = generate_private_key("ES256")
    not_old = generate_private_key("ES256")
    inner = sign_key_change(not_old, new_key, client.kid or "", client.dir["keyChange"])
    assert_problem(await roll(client, inner), 403, "unauthorized")
    assert (await client.get(client.kid or "")).status_code == 200


async def test_key_change_inner_not_signed_by_new_key_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    new_key = generate_private_key("ES256")
    inner = sign_key_change(client.key, new_key, client.kid or "", client.dir["keyChange"])
    inner["signature"] = sign_key_change(
        client.key, generate_private_key("ES256"), client.kid or "", client.dir["keyChange"]
    )["signature"]
    assert_problem(await roll(client, inner), 400, "malformed")


async def test_key_change_to_a_key_in_use_is_409_with_that_account(env: CAEnv) -> None:
    """§7.3.5: if the new key is already an account's, 409 Conflict with
    Location naming that account."""
    client = await env.client()
    other = await env.client()
    inner = sign_key_change(client.key, other.key, client.kid or "", client.dir["keyChange"])
    response = await roll(client, inner)
    assert response.status_code == 409, response.text
    assert response.headers["Location"] == other.kid
    assert (await client.get(client.kid or "")).status_code == 200


async def test_key_change_inner_payload_not_json_is_malformed(env: CAEnv) -> None:
    """Hostile bytes in the inner payload are a client error, never a 500."""
    client = await env.client()
    new_key = generate_private_key("ES256")
    protected = {"jwk": jwk_from_public_key(new_key.public_key()), "url": client.dir["keyChange"]}
    inner = sign_jws(new_key, b"not json", protected)
    assert_problem(await roll(client, inner), 400, "malformed")


async def test_key_change_inner_with_kid_is_malformed(env: CAEnv) -> None:
    """§7.3.5: the inner JWS carries the new key as "jwk"."""
    client = await env.client()
    new_key = generate_private_key("ES256")
    import json

    payload = {"account": client.kid, "oldKey": jwk_from_public_key(client.key.public_key())}
    protected = {"kid": client.kid, "url": client.dir["keyChange"]}
    inner = sign_jws(new_key, json.dumps(payload).encode(), protected)
    assert_problem(await roll(client, inner), 400, "malformed")


async def test_key_change_to_the_same_key_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    inner = sign_key_change(client.key, client.key, client.kid or "", client.dir["keyChange"])
    response = await roll(client, inner)
    assert response.status_code in (400, 409), response.text
    assert (await client.get(client.kid or "")).status_code == 200


async def test_key_change_to_a_weak_key_is_bad_public_key(env: CAEnv) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    client = await env.client()
    weak = rsa.generate_private_key(65537, 1024)
    inner = sign_key_change(client.key, weak, client.kid or "", client.dir["keyChange"])
    assert_problem(await roll(client, inner), 400, "badPublicKey")


async def test_new_account_with_weak_rsa_key_is_bad_public_key(env: CAEnv) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    client = RawAcmeClient(
        env.http, f"{BASE_URL}/directory", key=rsa.generate_private_key(65537, 1024)
    )
    await client.load_directory()
    response = await client.new_account()
    assert_problem(response, 400, "badPublicKey")
