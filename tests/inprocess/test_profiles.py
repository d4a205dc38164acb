"""Certificate profiles end to end (draft-ietf-acme-profiles): the directory
offers classic, tlsserver and shortlived; each order's profile decides its
identifier types, name limit, authorization reuse and pending lifetime, and
the certificate's validity and shape. A profile the Baseline Requirements
forbid is refused by lint before anything is signed."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certmint.ca.config import CLASSIC, SHORTLIVED, TLSSERVER
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.protocol.csr import split_pem_chain
from certmint.protocol.messages import parse_rfc3339
from certmint.testing.acme_client import RawAcmeClient, make_csr
from tests.unit.issuance.issuance_support import SpySigner

from .conftest import START, TEST_POLICY, CAEnv, make_env_factory, problem_type
from .flows import certificate_count, validate_order

pytestmark = pytest.mark.anyio

PROFILES = {p.name: p for p in (CLASSIC, TLSSERVER, SHORTLIVED)}


async def _new_order(client: RawAcmeClient, idents: list[tuple[str, str]], **extra: Any) -> Any:
    payload = {"identifiers": [{"type": t, "value": v} for t, v in idents], **extra}
    return await client.post(client.dir["newOrder"], payload)


async def _finalize(
    client: RawAcmeClient, order: dict[str, Any], names: list[str], key: Any = None
) -> x509.Certificate:
    csr, _ = make_csr(names, key)
    response = await client.finalize(order, csr)
    assert response.status_code == 200, response.text
    pem = (await client.get(response.json()["certificate"])).text
    return x509.load_der_x509_certificate(split_pem_chain(pem)[0])


# -- offer and choice ----------------------------------------------------------


async def test_directory_offers_the_three_profiles(env: CAEnv) -> None:
    client = await env.client(register=False)
    offered = client.dir["meta"]["profiles"]
    assert sorted(offered) == ["classic", "shortlived", "tlsserver"]
    assert "90-day" in offered["classic"] and "160-hour" in offered["shortlived"]


async def test_the_default_profile_is_configurable(env_factory: Any) -> None:
    env: CAEnv = await env_factory(policy=replace(TEST_POLICY, default_profile="tlsserver"))
    client = await env.client()
    response = await client.new_order(["default.example.com"])
    assert response.status_code == 201, response.text
    assert response.json()["profile"] == "tlsserver"


@pytest.mark.parametrize("profile", [None, "classic", "tlsserver"])
async def test_ip_identifiers_only_under_shortlived(env: CAEnv, profile: str | None) -> None:
    client = await env.client()
    extra = {} if profile is None else {"profile": profile}
    response = await _new_order(client, [("dns", "www.example.com"), ("ip", "8.8.8.8")], **extra)
    assert response.status_code == 400, response.text
    assert problem_type(response) == "rejectedIdentifier"
    (sub,) = response.json()["subproblems"]
    assert sub["identifier"] == {"type": "ip", "value": "8.8.8.8"}
    assert f'"{profile or "classic"}" profile does not allow ip' in sub["detail"]
    assert '"shortlived"' in sub["detail"]


async def test_shortlived_allows_25_names(env: CAEnv) -> None:
    client = await env.client()
    names = [("dns", f"n{i}.example.com") for i in range(26)]
    refused = await _new_order(client, names, profile="shortlived")
    assert refused.status_code == 400 and problem_type(refused) == "rejectedIdentifier"
    assert "at most 25" in refused.json()["detail"]
    assert (await _new_order(client, names[:25], profile="shortlived")).status_code == 201
    assert (await _new_order(client, names, profile="classic")).status_code == 201


# -- authorization lifetimes ------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "pending"),
    [("classic", timedelta(days=7)), ("shortlived", timedelta(hours=7))],
)
async def test_pending_authorizations_live_as_long_as_the_profile_says(
    env: CAEnv, profile: str, pending: timedelta
) -> None:
    client = await env.client()
    response = await client.new_order(["pending.example.com"], profile=profile)
    assert response.status_code == 201, response.text
    order = response.json()
    authz = (await client.get(order["authorizations"][0])).json()
    assert parse_rfc3339(authz["expires"]) == START + pending
    # The order cannot outlive the authorization it still needs.
    assert parse_rfc3339(order["expires"]) == START + pending


async def _reuses(env: CAEnv, client: RawAcmeClient, name: str, profile: str) -> bool:
    response = await client.new_order([name], profile=profile)
    assert response.status_code == 201, response.text
    authz = (await client.get(response.json()["authorizations"][0])).json()
    return bool(authz["status"] == "valid")


async def test_each_profile_reuses_authorizations_for_its_own_window(env: CAEnv) -> None:
    """Let's Encrypt: classic reuses a validation for 30 days, tlsserver for 7
    days, shortlived for 7 hours."""
    client = await env.client()
    name = "reuse.example.com"
    order, _ = await validate_order(env, client, [name], profile="classic")
    await _finalize(client, order, [name])  # valid orders are not themselves reused
    env.clock.advance(timedelta(hours=6).total_seconds())
    assert await _reuses(env, client, name, "shortlived")
    env.clock.advance(timedelta(hours=2).total_seconds())  # 8 hours after validation
    assert not await _reuses(env, client, name, "shortlived")
    assert await _reuses(env, client, name, "tlsserver")
    env.clock.advance(timedelta(days=7).total_seconds())  # 7 days 8 hours
    assert not await _reuses(env, client, name, "tlsserver")
    assert await _reuses(env, client, name, "classic")


# -- the certificate each profile issues --------------------------------------------


@pytest.mark.parametrize("profile", ["classic", "tlsserver", "shortlived"])
async def test_certificate_shape_per_profile(env: CAEnv, profile: str) -> None:
    client = await env.client()
    names = ["www.example.com", "example.com"]
    order, _ = await validate_order(env, client, names, profile=profile)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = await _finalize(client, order, names, key)
    period = leaf.not_valid_after_utc - leaf.not_valid_before_utc + timedelta(seconds=1)
    assert period == PROFILES[profile].validity
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280 §4.2.1.6: empty subject
    assert sorted(san.value.get_values_for_type(x509.DNSName)) == sorted(names)
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment  # even for RSA
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


# -- lint refuses a profile the Baseline Requirements forbid ---------------------------


async def test_a_400_day_profile_is_refused_by_lint(
    tmp_path: Path, hierarchy: Hierarchy, caplog: pytest.LogCaptureFixture
) -> None:
    """BR 6.3.2 caps validity (398 days before 15 March 2026, 200 after):
    the operator's misconfiguration must not reach the issuing key. finalize
    answers serverInternal, the order is invalid with that error, no
    certificate is stored, and the issuing signer was never called."""
    spy = SpySigner(hierarchy.issuers[0].signer)
    spied = replace(hierarchy, issuers=(replace(hierarchy.issuers[0], signer=spy),))
    year = replace(CLASSIC, name="year", description="too long", validity=timedelta(days=400))
    env = await make_env_factory(tmp_path, spied)(
        policy=replace(TEST_POLICY, profiles=(CLASSIC, year))
    )
    try:
        client = await env.client()
        order, order_url = await validate_order(env, client, ["year.example.com"], profile="year")
        csr, _ = make_csr(["year.example.com"])
        with caplog.at_level(logging.INFO, logger="certmint.ca"):
            response = await client.finalize(order, csr)
        assert response.status_code == 500, response.text
        assert problem_type(response) == "serverInternal"
        assert "pre-issuance lint" in response.json()["detail"]
        failed = (await client.get(order_url)).json()
        assert failed["status"] == "invalid"
        assert failed["error"]["type"] == "urn:ietf:params:acme:error:serverInternal"
        assert "certificate" not in failed
        assert certificate_count(env) == 0
        assert spy.signed == []
        # The CA logged why, on certmint.ca.issuance, with pkilint's code.
        refusals = [r for r in caplog.records if r.name == "certmint.ca.issuance"]
        assert any(
            "cabf.serverauth.certificate_validity_period_exceeds_200_days" in r.getMessage()
            for r in refusals
        ), caplog.text
    finally:
        await env.drain()
        await env.http.aclose()
        env.server.sa.close()
