"""Orders (RFC 8555 §7.4, §7.1.3, §7.1.6): creation, reuse, identifier
policy, profiles, requested validity, ownership and expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509

from certmint.ca.config import ChaosConfig, PolicyConfig
from certmint.protocol.csr import split_pem_chain
from certmint.protocol.messages import format_rfc3339, parse_rfc3339
from certmint.testing.acme_client import make_csr

from .conftest import BASE_URL, START, CAEnv, problem_type
from .flows import issue_with_key, validate_order

pytestmark = pytest.mark.anyio


def assert_problem(response: Any, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert problem_type(response) == kind, response.text


# -- newOrder (§7.4) ---------------------------------------------------------------


async def test_new_order_is_201_with_location_and_retry_after(env: CAEnv) -> None:
    client = await env.client()
    response = await client.new_order(["www.example.com", "example.com"])
    assert response.status_code == 201
    assert response.headers["Location"].startswith(f"{BASE_URL}/acme/order/")
    assert int(response.headers["Retry-After"]) >= 1
    order = response.json()
    assert order["status"] == "pending"
    assert {i["value"] for i in order["identifiers"]} == {"example.com", "www.example.com"}
    assert len(order["authorizations"]) == 2
    assert order["finalize"].endswith("/finalize")
    assert parse_rfc3339(order["expires"]) > START


async def test_order_post_as_get_returns_it(env: CAEnv) -> None:
    client = await env.client()
    created = await client.new_order(["get.example.com"])
    fetched = await client.get(created.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.json() == created.json()
    assert "Retry-After" in fetched.headers


async def test_identical_pending_order_is_reused_for_the_same_account(env: CAEnv) -> None:
    client = await env.client()
    first = await client.new_order(["a.example.com", "b.example.com"])
    again = await client.new_order(["b.example.com", "A.example.com"])
    assert again.headers["Location"] == first.headers["Location"]
    assert again.json()["authorizations"] == first.json()["authorizations"]


async def test_pending_order_is_not_reused_for_another_account(env: CAEnv) -> None:
    alice = await env.client()
    bob = await env.client()
    first = await alice.new_order(["shared.example.com"])
    other = await bob.new_order(["shared.example.com"])
    assert other.status_code == 201
    assert other.headers["Location"] != first.headers["Location"]
    assert set(other.json()["authorizations"]).isdisjoint(first.json()["authorizations"])


async def test_valid_authorizations_are_reused_by_the_same_account(env: CAEnv) -> None:
    """§7.4.1: the server may reuse valid authorizations; the new order is
    ready at once."""
    client = await env.client()
    first, _ = await validate_order(env, client, ["r1.example.com", "r2.example.com"])
    second = await client.new_order(["r1.example.com"])
    assert second.status_code == 201
    assert second.json()["status"] == "ready"
    assert second.json()["authorizations"][0] in first["authorizations"]
    # Reused authorizations bound the order's lifetime.
    assert "Retry-After" not in second.headers


async def test_valid_authorizations_are_not_reused_across_accounts(env: CAEnv) -> None:
    alice = await env.client()
    bob = await env.client()
    await validate_order(env, alice, ["mine.example.com", "x.example.com"])
    theirs = await bob.new_order(["mine.example.com"])
    assert theirs.json()["status"] == "pending"


async def test_chaos_reuse_zero_percent_never_reuses(env_factory: Any) -> None:
    env: CAEnv = await env_factory(chaos=ChaosConfig(authz_reuse_percent=0, seed=1))
    client = await env.client()
    first, _ = await validate_order(env, client, ["c1.example.com", "c2.example.com"])
    second = await client.new_order(["c1.example.com"])
    assert second.json()["status"] == "pending"
    assert second.json()["authorizations"][0] not in first["authorizations"]


async def test_plain_authorization_is_not_reused_for_a_wildcard(env: CAEnv) -> None:
    """A wildcard needs its own (dns-01) authorization (BR 3.2.2.6); a valid
    authorization for the base name does not stand in for it."""
    client = await env.client()
    await validate_order(env, client, ["wc.example.com", "wc2.example.com"])
    wildcard = await client.new_order(["*.wc.example.com"])
    assert wildcard.json()["status"] == "pending"
    authz = (await client.get(wildcard.json()["authorizations"][0])).json()
    assert authz["wildcard"] is True
    assert authz["status"] == "pending"


# -- identifiers (§7.1.3, §6.7.1) ---------------------------------------------------


async def test_bad_identifiers_are_rejected_with_one_subproblem_each(env: CAEnv) -> None:
    """§6.7.1: one subproblem per refused identifier, naming it."""
    client = await env.client()
    response = await client.new_order(["ok.example.com", "bad_name.example.com", "-x.example.com"])
    assert_problem(response, 400, "rejectedIdentifier")
    sub = response.json()["subproblems"]
    assert {s["identifier"]["value"] for s in sub} == {"bad_name.example.com", "-x.example.com"}
    for s in sub:
        assert s["identifier"]["type"] == "dns"
        assert s["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"


async def test_unsupported_identifier_type_is_unsupported_identifier(env: CAEnv) -> None:
    client = await env.client()
    payload = {"identifiers": [{"type": "email", "value": "a@example.com"}]}
    response = await client.post(client.dir["newOrder"], payload)
    assert_problem(response, 400, "unsupportedIdentifier")
    assert response.json()["subproblems"][0]["identifier"]["type"] == "email"


async def test_too_many_names_is_rejected_identifier(env_factory: Any) -> None:
    env: CAEnv = await env_factory(policy=PolicyConfig(max_names_per_order=2))
    client = await env.client()
    response = await client.new_order(["n1.example.com", "n2.example.com", "n3.example.com"])
    assert_problem(response, 400, "rejectedIdentifier")
    assert (await client.new_order(["n1.example.com", "n2.example.com"])).status_code == 201


async def test_empty_identifiers_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    response = await client.post(client.dir["newOrder"], {"identifiers": []})
    assert_problem(response, 400, "malformed")


async def test_blocked_name_is_rejected(env_factory: Any) -> None:
    env: CAEnv = await env_factory(
        policy=PolicyConfig(blocked_suffixes=frozenset({"bank.example.com"}))
    )
    client = await env.client()
    response = await client.new_order(["www.bank.example.com"])
    assert_problem(response, 400, "rejectedIdentifier")


async def test_wildcard_order_offers_only_dns_01(env: CAEnv) -> None:
    """BR 3.2.2.6 / RFC 8555 §7.1.3: a wildcard is validated by dns-01."""
    client = await env.client()
    response = await client.new_order(["*.wild.example.com"])
    assert response.status_code == 201
    authz = (await client.get(response.json()["authorizations"][0])).json()
    assert authz["identifier"]["value"] == "wild.example.com"
    assert authz["wildcard"] is True
    assert [c["type"] for c in authz["challenges"]] == ["dns-01"]


# -- profiles (draft-ietf-acme-profiles) ---------------------------------------------


async def test_unknown_profile_is_invalid_profile(env: CAEnv) -> None:
    client = await env.client()
    response = await client.new_order(["p.example.com"], profile="shortlived-9000")
    assert_problem(response, 400, "invalidProfile")


async def test_profile_is_shown_in_the_order(env: CAEnv) -> None:
    client = await env.client()
    response = await client.new_order(["p.example.com"], profile="classic")
    assert response.status_code == 201
    assert response.json()["profile"] == "classic"


# -- requested validity (§7.4 notBefore / notAfter) ----------------------------------


def leaf_of(pem_chain: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(split_pem_chain(pem_chain)[0])


async def test_requested_validity_is_honoured(env: CAEnv) -> None:
    client = await env.client()
    not_before = START + timedelta(hours=2)
    not_after = START + timedelta(days=30)
    extra = {"notBefore": format_rfc3339(not_before), "notAfter": format_rfc3339(not_after)}
    order, _ = await issue_with_key(env, client, ["when.example.com"], **extra)
    assert order["notBefore"] == extra["notBefore"]
    assert order["notAfter"] == extra["notAfter"]
    leaf = leaf_of((await client.get(order["certificate"])).text)
    assert leaf.not_valid_before_utc == not_before
    assert leaf.not_valid_after_utc == not_after


async def test_requested_not_after_alone_stays_within_the_profile(env: CAEnv) -> None:
    """With only notAfter at the profile's limit the certificate still must
    not outlive the profile (BR 7.1.2.7: validity counts both ends)."""
    client = await env.client()
    # The latest notAfter the profile admits (validity includes both ends).
    not_after = START + timedelta(days=90) - timedelta(seconds=1)
    order, _ = await issue_with_key(
        env, client, ["upto.example.com"], notAfter=format_rfc3339(not_after)
    )
    leaf = leaf_of((await client.get(order["certificate"])).text)
    assert leaf.not_valid_after_utc == not_after
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc + timedelta(seconds=1)
    assert lifetime <= timedelta(days=90)


async def test_requested_not_after_passed_by_finalize_is_refused_cleanly(env: CAEnv) -> None:
    """A notAfter that has passed by finalize time yields a client error,
    not a failed issuance (500) that spoils the order."""
    client = await env.client()
    not_after = format_rfc3339(START + timedelta(days=1))
    order, _ = await validate_order(env, client, ["expiring.example.com"], notAfter=not_after)
    env.clock.advance(timedelta(days=2).total_seconds())
    csr, _ = make_csr(["expiring.example.com"])
    response = await client.finalize(order, csr)
    assert response.status_code < 500, response.text
    assert_problem(response, 400, "malformed")


async def test_requested_full_window_stays_within_the_profile(env: CAEnv) -> None:
    """notBefore + 90 days exactly would be 90 days and one second of
    inclusive validity (RFC 5280 §4.1.2.5); the order must not yield that."""
    client = await env.client()
    not_before = START + timedelta(hours=1)
    window = {
        "notBefore": format_rfc3339(not_before),
        "notAfter": format_rfc3339(not_before + timedelta(days=90)),
    }
    response = await client.new_order(["edge.example.com"], **window)
    if response.status_code == 201:
        order, _ = await issue_with_key(env, client, ["edge.example.com"], **window)
        leaf = leaf_of((await client.get(order["certificate"])).text)
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc + timedelta(seconds=1)
        assert lifetime <= timedelta(days=90)
    else:
        assert_problem(response, 400, "malformed")


async def test_not_before_in_the_past_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    past = format_rfc3339(START - timedelta(days=1))
    response = await client.new_order(["past.example.com"], notBefore=past)
    assert_problem(response, 400, "malformed")


async def test_validity_longer_than_the_profile_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    extra = {
        "notBefore": format_rfc3339(START),
        "notAfter": format_rfc3339(START + timedelta(days=200)),
    }
    response = await client.new_order(["long.example.com"], **extra)
    assert_problem(response, 400, "malformed")


async def test_not_after_before_not_before_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    extra = {
        "notBefore": format_rfc3339(START + timedelta(days=2)),
        "notAfter": format_rfc3339(START + timedelta(days=1)),
    }
    response = await client.new_order(["backwards.example.com"], **extra)
    assert_problem(response, 400, "malformed")


async def test_not_before_too_far_ahead_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    response = await client.new_order(
        ["future.example.com"], notBefore=format_rfc3339(START + timedelta(days=30))
    )
    assert_problem(response, 400, "malformed")


async def test_unparsable_not_after_is_malformed(env: CAEnv) -> None:
    client = await env.client()
    response = await client.new_order(["garbage.example.com"], notAfter="next tuesday")
    assert_problem(response, 400, "malformed")


# -- ownership (§7.4, §6.3) ----------------------------------------------------------


async def test_another_accounts_order_is_unauthorized(env: CAEnv) -> None:
    alice = await env.client()
    bob = await env.client()
    created = await alice.new_order(["private.example.com"])
    response = await bob.get(created.headers["Location"])
    assert_problem(response, 403, "unauthorized")


async def test_unknown_order_is_404(env: CAEnv) -> None:
    client = await env.client()
    response = await client.get(f"{BASE_URL}/acme/order/no-such-order")
    assert_problem(response, 404, "malformed")


# -- expiry (§7.1.6) -----------------------------------------------------------------


async def test_order_past_expires_is_invalid(env: CAEnv) -> None:
    client = await env.client()
    created = await client.new_order(["late.example.com"])
    expires = parse_rfc3339(created.json()["expires"])
    env.clock.set(expires + timedelta(seconds=1))
    order = (await client.get(created.headers["Location"])).json()
    assert order["status"] == "invalid"


async def test_ready_order_past_expires_is_invalid(env: CAEnv) -> None:
    client = await env.client()
    order, url = await validate_order(env, client, ["lateready.example.com"])
    env.clock.set(parse_rfc3339(order["expires"]) + timedelta(seconds=1))
    assert (await client.get(url)).json()["status"] == "invalid"


async def test_authz_expiry_makes_the_order_invalid(env_factory: Any) -> None:
    env: CAEnv = await env_factory(pending_authz_lifetime=timedelta(days=1))
    client = await env.client()
    created = await client.new_order(["authzlate.example.com"])
    env.clock.advance(timedelta(days=2).total_seconds())
    order = (await client.get(created.headers["Location"])).json()
    assert order["status"] == "invalid"
    authz = (await client.get(order["authorizations"][0])).json()
    assert authz["status"] == "expired"


async def test_expired_order_is_not_reused(env: CAEnv) -> None:
    client = await env.client()
    first = await client.new_order(["again.example.com"])
    env.clock.set(parse_rfc3339(first.json()["expires"]) + timedelta(seconds=1))
    second = await client.new_order(["again.example.com"])
    assert second.status_code == 201
    assert second.headers["Location"] != first.headers["Location"]
    assert second.json()["status"] == "pending"


async def test_order_expires_is_not_after_its_authorizations(env: CAEnv) -> None:
    """An order cannot outlive the authorizations it needs."""
    client = await env.client()
    created = await client.new_order(["bound.example.com"])
    order = created.json()
    authz = (await client.get(order["authorizations"][0])).json()
    assert parse_rfc3339(order["expires"]) <= parse_rfc3339(authz["expires"])
