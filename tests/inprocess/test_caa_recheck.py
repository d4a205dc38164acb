"""CAA at finalize (BR 3.2.2.8): authorizations validated longer ago than
``caa_recheck_after`` are re-checked, and a refusal leaves the order ready.
The VA's CAA logic itself is tested over real sockets
(tests/integration/test_va_caa.py); here the scripted VA answers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from certmint.protocol.problems import Problem, ProblemType
from certmint.testing.acme_client import make_csr

from .conftest import BASE_URL, CAEnv, problem_type
from .flows import validate_order

pytestmark = pytest.mark.anyio
NAME = "caa.example.com"


async def test_validation_request_carries_account_uri_and_wildcard(env: CAEnv) -> None:
    client = await env.client()
    await validate_order(env, client, [NAME])
    (request,) = env.va.requests
    assert request.account_uri == client.kid
    assert request.account_uri is not None and request.account_uri.startswith(BASE_URL)
    assert request.wildcard is False


async def test_fresh_authorization_is_not_rechecked(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await validate_order(env, client, [NAME])
    env.va.caa_problem = Problem(ProblemType.CAA, "CAA record for example.com prevents", 403)
    env.clock.advance(timedelta(hours=7).total_seconds())
    csr, _ = make_csr([NAME])
    response = await client.finalize(order, csr)
    assert response.status_code == 200, response.text
    assert env.va.caa_checks == []


async def test_stale_authorization_is_rechecked_and_refusal_keeps_order_ready(
    env: CAEnv,
) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, [NAME])
    env.clock.advance(timedelta(hours=9).total_seconds())
    env.va.caa_problem = Problem(
        ProblemType.CAA, "CAA record for example.com prevents issuance", 403
    )
    csr, _ = make_csr([NAME])
    response = await client.finalize(order, csr)
    assert response.status_code == 403, response.text
    assert problem_type(response) == "caa"
    assert "Rechecking CAA for caa.example.com" in response.json()["detail"]
    assert env.va.caa_checks == [(NAME, "http-01", client.kid, False)]
    assert (await client.get(order_url)).json()["status"] == "ready"
    # Once CAA permits again, the same order finalizes.
    env.va.caa_problem = None
    response = await client.finalize(order, csr)
    assert response.status_code == 200, response.text


async def test_recheck_lookup_failure_is_a_dns_error(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await validate_order(env, client, [NAME])
    env.clock.advance(timedelta(days=1).total_seconds())
    env.va.caa_problem = Problem(ProblemType.DNS, "DNS problem: SERVFAIL looking up CAA", 400)
    csr, _ = make_csr([NAME])
    response = await client.finalize(order, csr)
    assert response.status_code == 400, response.text
    assert problem_type(response) == "dns"
