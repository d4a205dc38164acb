"""Issue 5, acceptance 2: for each profile (draft-ietf-acme-profiles), a
certificate issued by a real ``certmint-ca serve`` passes pkilint's CA/B Forum
TLS BR linter with no error and no warning, and carries the profile's exact
validity and extensions.

The raw ACME client asks for each profile in newOrder; the challenge test
server answers http-01. The CA publishes its URLs under a public name
(``PUBLIC_MANAGEMENT_BASE_URL``) as an operator would, so pkilint sees what a
publicly-trusted certificate would carry. (A profile the BR forbid, refused
by lint before signing, is tests/inprocess/test_profiles.py.)
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certmint.protocol.b64 import b64url_encode
from certmint.testing.acme_client import RawAcmeClient, make_csr
from certmint.testing.harness import (
    LoopbackCA,
    assert_lint_clean,
    openssl_verify,
    running_ca,
    split_pem_bundle,
)

from .conftest import PUBLIC_MANAGEMENT_BASE_URL

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

MAX_POLLS = 100  # of 0.1 s each: bounds every wait below

# name -> (whole validity period, key the subscriber uses). classic gets an
# RSA key: Let's Encrypt's classic adds keyEncipherment for RSA, which pkilint
# warns about, and certmint's does not.
PROFILES: dict[str, tuple[timedelta, Any]] = {
    "classic": (timedelta(days=90), lambda: rsa.generate_private_key(65537, 2048)),
    "tlsserver": (timedelta(days=45), lambda: ec.generate_private_key(ec.SECP256R1())),
    "shortlived": (timedelta(hours=160), lambda: ec.generate_private_key(ec.SECP384R1())),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def profiles_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCA]:
    serve_args = ["--management-base-url", PUBLIC_MANAGEMENT_BASE_URL, "--workers", "1"]
    with running_ca(
        tmp_path_factory.mktemp("profiles-ca"),
        serve_args=serve_args,
        challtestsrv_answers_challenges=True,
    ) as ca:
        yield ca


async def _poll_until_not(client: RawAcmeClient, url: str, status: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(MAX_POLLS):
        body = (await client.get(url)).json()
        if body["status"] != status:
            return body
        await anyio.sleep(0.1)
    raise AssertionError(f"{url} stayed {status}: {body}")


async def _issue(
    ca: LoopbackCA, http: httpx.AsyncClient, names: list[str], profile: str, key: Any
) -> tuple[dict[str, Any], str]:
    """newOrder with ``profile``, http-01 through the challenge test server,
    finalize; returns the final order and the PEM chain."""
    client = RawAcmeClient(http, ca.directory_url)
    await client.load_directory()
    assert profile in client.dir["meta"]["profiles"]
    assert (await client.new_account()).status_code == 201
    created = await client.new_order(names, profile=profile)
    assert created.status_code == 201, created.text
    assert created.json()["profile"] == profile
    order_url = created.headers["Location"]
    for authz_url in created.json()["authorizations"]:
        authz = (await client.get(authz_url)).json()
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        token = challenge["token"]
        added = await http.post(
            f"{ca.challtestsrv_management_url}/add-http01",
            json={"token": token, "content": client.key_authorization(token)},
        )
        assert added.status_code == 200, added.text
        assert (await client.post(challenge["url"], {})).status_code == 200
        authz = await _poll_until_not(client, authz_url, "pending")
        assert authz["status"] == "valid", authz
    order = (await client.get(order_url)).json()
    csr, _ = make_csr(names, key)
    final = await client.post(order["finalize"], {"csr": b64url_encode(csr)})
    assert final.status_code == 200, final.text
    order = final.json()
    if order["status"] == "processing":
        order = await _poll_until_not(client, order_url, "processing")
    assert order["status"] == "valid", order
    assert order["profile"] == profile
    pem = await client.get(order["certificate"])
    assert pem.status_code == 200, pem.text
    return order, pem.text


@pytest.mark.parametrize("profile", sorted(PROFILES))
async def test_each_profile_issues_a_lint_clean_certificate(
    profiles_ca: LoopbackCA, tmp_path: Path, profile: str
) -> None:
    validity, make_key = PROFILES[profile]
    names = [f"{profile}.interop.example.com", f"www.{profile}.interop.example.com"]
    context = ssl.create_default_context(cafile=str(profiles_ca.root_pem_path))
    async with httpx.AsyncClient(verify=context, timeout=20) as http:
        _, chain_pem = await _issue(profiles_ca, http, names, profile, make_key())

    leaf_pem, *intermediates = split_pem_bundle(chain_pem.encode())
    leaf_path = tmp_path / "leaf.pem"
    leaf_path.write_bytes(leaf_pem)
    chain_path = tmp_path / "chain.pem"
    chain_path.write_bytes(b"".join(intermediates))
    # pkilint, the CA/B Forum TLS BR linter (DV final certificate): no FATAL,
    # ERROR or WARNING.
    assert_lint_clean(leaf_path)
    openssl_verify(profiles_ca.root_pem_path, leaf_path, chain_path)

    leaf = x509.load_pem_x509_certificate(leaf_pem)
    # RFC 5280 §4.1.2.5: the validity period includes both ends.
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc + timedelta(seconds=1) == validity
    # No CN in any profile (see docs/divergences.md for classic), so the SAN
    # is critical (RFC 5280 §4.2.1.6) and holds exactly the order's names.
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert sorted(san.value.get_values_for_type(x509.DNSName)) == sorted(names)
    assert san.value.get_values_for_type(x509.IPAddress) == []
    # BR 7.1.2.7.11: digitalSignature only (no keyEncipherment, even for RSA).
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_encipherment and not usage.value.key_agreement
    # BR 7.1.2.7.10: serverAuth only.
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    # The CA's URLs are the public ones it was configured with.
    crl = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    (point,) = crl
    assert point.full_name is not None
    assert str(point.full_name[0].value).startswith(f"{PUBLIC_MANAGEMENT_BASE_URL}/crl/")
