"""Finalizing an order (RFC 8555 §7.4): readiness, exactly-once issuance,
and the CSR rules (§7.4 "The CSR MUST indicate the exact same set of
requested identifiers"; §11.1 the account key must not be certified)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certmint.testing.acme_client import make_csr

from .conftest import CAEnv, problem_type
from .flows import certificate_count, validate_order

pytestmark = pytest.mark.anyio

NAMES = ["fin.example.com", "www.fin.example.com"]


def assert_problem(response: Any, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert problem_type(response) == kind, response.text


async def assert_still_ready(env: CAEnv, client: Any, order_url: str) -> None:
    """A refused CSR leaves the order ready for a corrected one."""
    assert (await client.get(order_url)).json()["status"] == "ready"
    assert certificate_count(env) == 0


# -- readiness and exactly-once ---------------------------------------------------


async def test_finalize_before_ready_is_order_not_ready(env: CAEnv) -> None:
    """§7.4: finalizing a pending order → 403 orderNotReady."""
    client = await env.client()
    created = await client.new_order(NAMES)
    csr, _ = make_csr(NAMES)
    response = await client.finalize(created.json(), csr)
    assert_problem(response, 403, "orderNotReady")
    assert certificate_count(env) == 0


async def test_finalize_issues_and_order_becomes_valid(env: CAEnv) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    csr, _ = make_csr(NAMES)
    response = await client.finalize(order, csr)
    assert response.status_code == 200
    assert response.headers["Location"] == order_url
    body = response.json()
    assert body["status"] == "valid"
    assert body["certificate"]
    assert certificate_count(env) == 1


async def test_double_finalize_issues_exactly_one_certificate(env: CAEnv) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    csr, _ = make_csr(NAMES)
    first = await client.finalize(order, csr)
    assert first.status_code == 200
    second = await client.finalize(order, make_csr(NAMES)[0])
    assert_problem(second, 403, "orderNotReady")
    assert certificate_count(env) == 1
    after = (await client.get(order_url)).json()
    assert after["status"] == "valid"
    assert after["certificate"] == first.json()["certificate"]


async def test_concurrent_double_finalize_issues_exactly_one_certificate(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await validate_order(env, client, NAMES)
    results = await asyncio.gather(
        client.finalize(order, make_csr(NAMES)[0]),
        client.finalize(order, make_csr(NAMES)[0]),
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 403], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 403)
    assert problem_type(loser) == "orderNotReady"
    assert certificate_count(env) == 1


async def test_another_account_finalizing_is_unauthorized(env: CAEnv) -> None:
    alice = await env.client()
    bob = await env.client()
    order, order_url = await validate_order(env, alice, NAMES)
    response = await bob.finalize(order, make_csr(NAMES)[0])
    assert_problem(response, 403, "unauthorized")
    await assert_still_ready(env, alice, order_url)


# -- CSR names (§7.4) ------------------------------------------------------------------


async def test_csr_missing_a_name_is_bad_csr(env: CAEnv) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    response = await client.finalize(order, make_csr(NAMES[:1])[0])
    assert_problem(response, 400, "badCSR")
    await assert_still_ready(env, client, order_url)


async def test_csr_with_an_extra_name_is_bad_csr(env: CAEnv) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    response = await client.finalize(order, make_csr([*NAMES, "extra.example.com"])[0])
    assert_problem(response, 400, "badCSR")
    await assert_still_ready(env, client, order_url)


async def test_csr_names_compare_case_insensitively(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await validate_order(env, client, NAMES)
    response = await client.finalize(order, make_csr([n.upper() for n in NAMES])[0])
    assert response.status_code == 200, response.text


async def test_cn_only_csr_for_a_single_name_is_accepted(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await validate_order(env, client, ["cn.example.com"])
    csr, _ = make_csr(["cn.example.com"], common_name="cn.example.com", include_san=False)
    response = await client.finalize(order, csr)
    assert response.status_code == 200, response.text


async def test_cn_not_among_sans_is_bad_csr(env: CAEnv) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    csr, _ = make_csr(NAMES, common_name="other.example.com")
    assert_problem(await client.finalize(order, csr), 400, "badCSR")
    await assert_still_ready(env, client, order_url)


async def test_cn_among_sans_is_accepted(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await validate_order(env, client, NAMES)
    csr, _ = make_csr(NAMES, common_name=NAMES[1])
    assert (await client.finalize(order, csr)).status_code == 200


async def test_csr_with_no_names_is_bad_csr(env: CAEnv) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    csr, _ = make_csr([], include_san=False)
    assert_problem(await client.finalize(order, csr), 400, "badCSR")
    await assert_still_ready(env, client, order_url)


# -- CSR keys ---------------------------------------------------------------------------


async def test_account_key_in_csr_is_bad_csr(env: CAEnv) -> None:
    """§11.1: the CA MUST NOT certify the account key."""
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    csr, _ = make_csr(NAMES, key=client.key)
    assert_problem(await client.finalize(order, csr), 400, "badCSR")
    await assert_still_ready(env, client, order_url)


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: rsa.generate_private_key(65537, 1024),
        lambda: ec.generate_private_key(ec.SECP521R1()),
    ],
    ids=["rsa1024", "p521"],
)
async def test_disallowed_csr_key_is_bad_public_key(env: CAEnv, make_key: Any) -> None:
    """BR 6.1.5: RSA 2048/3072/4096 and ECDSA P-256/P-384 only."""
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    csr, _ = make_csr(NAMES, key=make_key())
    assert_problem(await client.finalize(order, csr), 400, "badPublicKey")
    await assert_still_ready(env, client, order_url)


async def test_rsa_2048_csr_key_is_accepted(env: CAEnv) -> None:
    client = await env.client()
    order, _ = await validate_order(env, client, NAMES)
    csr, _ = make_csr(NAMES, key=rsa.generate_private_key(65537, 2048))
    assert (await client.finalize(order, csr)).status_code == 200


# -- the finalize payload ----------------------------------------------------------------


async def test_garbage_csr_is_bad_csr(env: CAEnv) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    response = await client.finalize(order, b"\x30\x03\x02\x01\x00not a csr")
    assert_problem(response, 400, "badCSR")
    await assert_still_ready(env, client, order_url)


async def test_csr_with_broken_signature_is_bad_csr(env: CAEnv) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    csr = bytearray(make_csr(NAMES)[0])
    csr[-5] ^= 0xFF
    assert_problem(await client.finalize(order, bytes(csr)), 400, "badCSR")
    await assert_still_ready(env, client, order_url)


@pytest.mark.parametrize("bad", ["not base64!", "YWJj=", "a+b/"])
async def test_csr_not_base64url_is_malformed(env: CAEnv, bad: str) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    response = await client.post(order["finalize"], {"csr": bad})
    assert_problem(response, 400, "malformed")
    await assert_still_ready(env, client, order_url)


@pytest.mark.parametrize("payload", [{}, {"csr": 5}, {"csr": ""}, [], None])
async def test_finalize_payload_without_csr_is_malformed(env: CAEnv, payload: Any) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    response = await client.post(order["finalize"], payload)
    assert_problem(response, 400, "malformed")
    await assert_still_ready(env, client, order_url)


async def test_racing_finalize_in_threads_issues_exactly_one_certificate(env: CAEnv) -> None:
    """In-process requests interleave only at awaits, so also race the RA
    itself from two threads: the SA's conditional update must let exactly
    one finalize through."""
    import threading

    from certmint.ca import errors

    client = await env.client()
    _, order_url = await validate_order(env, client, NAMES)
    account = env.server.sa.get_account((client.kid or "").rsplit("/", 1)[1])
    assert account is not None
    order_id = order_url.rsplit("/", 1)[1]
    barrier = threading.Barrier(2)

    def finalize_once() -> str:
        barrier.wait(timeout=5)
        try:
            env.server.ra.finalize(account, order_id, make_csr(NAMES)[0])
        except errors.AcmeError as exc:
            return exc.problem_type
        return "issued"

    outcomes = list(
        await asyncio.gather(asyncio.to_thread(finalize_once), asyncio.to_thread(finalize_once))
    )
    assert sorted(outcomes) == ["issued", "orderNotReady"], outcomes
    assert certificate_count(env) == 1
