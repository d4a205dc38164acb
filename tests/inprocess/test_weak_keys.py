"""Weak keys through the whole CA (issue 5, acceptance 4): real Debian weak
keys (CVE-2008-0166) as account keys at newAccount and keyChange, and as
certificate keys at finalize, are refused with ``badPublicKey`` (RFC 8555
§6.7) and leave no account, no key change and no certificate behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certmint.protocol.jws import sign_key_change
from certmint.testing.acme_client import RawAcmeClient, make_csr

from .conftest import BASE_URL, CAEnv, problem_type
from .flows import certificate_count, validate_order

pytestmark = pytest.mark.anyio

WEAK_KEYS = Path(__file__).resolve().parent.parent / "data" / "weak_keys"
# The Debian weak keys whose private halves are published (HARICA's set).
DEBIAN_PRIVATE = sorted(WEAK_KEYS.glob("debian-weak-*-pid1000.pem"))
NAMES = ["weak.example.com"]


def load_private(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def assert_bad_public_key(response: Any, *words: str) -> None:
    assert response.status_code == 400, response.text
    assert problem_type(response) == "badPublicKey", response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


def test_the_published_private_keys_are_here() -> None:
    assert len(DEBIAN_PRIVATE) == 4


@pytest.mark.parametrize("path", DEBIAN_PRIVATE, ids=lambda p: p.stem)
async def test_new_account_with_a_debian_weak_key_is_bad_public_key(env: CAEnv, path: Path) -> None:
    client = RawAcmeClient(env.http, f"{BASE_URL}/directory", key=load_private(path))
    await client.load_directory()
    assert_bad_public_key(await client.new_account(), "account key", "CVE-2008-0166")
    # Nothing was created for the key.
    lookup = await client.new_account(only_return_existing=True)
    assert problem_type(lookup) == "accountDoesNotExist", lookup.text


async def test_key_change_to_a_debian_weak_key_is_bad_public_key(env: CAEnv) -> None:
    client = await env.client()
    weak = load_private(DEBIAN_PRIVATE[0])
    inner = sign_key_change(client.key, weak, client.kid or "", client.dir["keyChange"])
    response = await client.post(client.dir["keyChange"], inner)
    assert_bad_public_key(response, "CVE-2008-0166")
    # The account still answers to its old key.
    assert (await client.get(client.kid or "")).status_code == 200


@pytest.mark.parametrize("path", DEBIAN_PRIVATE, ids=lambda p: p.stem)
async def test_finalize_with_a_debian_weak_csr_key_is_bad_public_key(
    env: CAEnv, path: Path
) -> None:
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    csr, _ = make_csr(NAMES, key=load_private(path))
    assert_bad_public_key(await client.finalize(order, csr), "certificate key", "CVE-2008-0166")
    # A refused CSR leaves the order ready for a good key, and issues nothing.
    assert (await client.get(order_url)).json()["status"] == "ready"
    assert certificate_count(env) == 0
    good, _ = make_csr(NAMES, key=ec.generate_private_key(ec.SECP256R1()))
    response = await client.finalize(order, good)
    assert response.status_code == 200, response.text
    assert certificate_count(env) == 1


async def test_p521_account_keys_are_refused(env: CAEnv) -> None:
    """Issue 5: ECDSA P-256/P-384 only, for account keys too (P-521 was
    accepted for accounts before)."""
    key = ec.generate_private_key(ec.SECP521R1())
    client = RawAcmeClient(env.http, f"{BASE_URL}/directory", key=key)
    await client.load_directory()
    assert_bad_public_key(await client.new_account(), "secp521r1")
