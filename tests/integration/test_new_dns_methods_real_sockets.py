"""dns-account-01 and dns-persist-01 end to end over real sockets: `certmint-ca
serve` on loopback with both enabled issues wildcard certificates validated by
each, with the TXT records set through the challenge test server's management
API; a CA left at its defaults does not offer them."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography import x509

from certmint.protocol.challenges import (
    dns01_txt_value,
    dns_account01_record_name,
    dns_persist01_record_name,
    dns_persist01_txt_value,
)
from certmint.protocol.csr import split_pem_chain
from certmint.testing.acme_client import RawAcmeClient, make_csr
from certmint.testing.harness import LoopbackCA, running_ca

pytestmark = pytest.mark.anyio
MAX_POLLS = 100  # of 0.1 s each: bounds the wait for validation
NEW_METHODS = ["--enable-challenge", "dns-account-01", "--enable-challenge", "dns-persist-01"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def new_methods_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCA]:
    work_dir = tmp_path_factory.mktemp("new-dns-methods")
    with running_ca(work_dir, serve_args=["--workers", "1", *NEW_METHODS]) as ca:
        yield ca


def _http(ca: LoopbackCA) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=str(ca.root_pem_path)), timeout=20
    )


async def _account(ca: LoopbackCA, http: httpx.AsyncClient) -> RawAcmeClient:
    client = RawAcmeClient(http, ca.directory_url)
    await client.load_directory()
    response = await client.new_account()
    assert response.status_code == 201, response.text
    return client


async def _wildcard_authz(client: RawAcmeClient, name: str) -> tuple[str, str, dict[str, Any]]:
    """newOrder for ``name`` (a wildcard): (order URL, authz URL, authz JSON)."""
    response = await client.new_order([name])
    assert response.status_code == 201, response.text
    authz_url = response.json()["authorizations"][0]
    authz = (await client.get(authz_url)).json()
    assert authz["identifier"] == {"type": "dns", "value": name.removeprefix("*.")}
    assert authz["wildcard"] is True
    return response.headers["Location"], authz_url, authz


async def _set_txt(http: httpx.AsyncClient, ca: LoopbackCA, host: str, value: str) -> None:
    added = await http.post(
        f"{ca.challtestsrv_management_url}/set-txt", json={"host": host, "value": value}
    )
    assert added.status_code == 200, added.text


async def _answer_and_finalize(
    client: RawAcmeClient, order_url: str, authz_url: str, challenge: dict[str, Any], name: str
) -> x509.Certificate:
    assert (await client.post(challenge["url"], {})).status_code == 200
    authz: dict[str, Any] = {}
    for _ in range(MAX_POLLS):
        authz = (await client.get(authz_url)).json()
        if authz["status"] != "pending":
            break
        await anyio.sleep(0.1)
    assert authz["status"] == "valid", authz
    done = next(c for c in authz["challenges"] if c["type"] == challenge["type"])
    assert done["status"] == "valid"
    order = (await client.get(order_url)).json()
    assert order["status"] == "ready", order
    csr, _ = make_csr([name])
    final = await client.finalize(order, csr)
    assert final.status_code == 200, final.text
    pem = await client.get(final.json()["certificate"])
    assert pem.status_code == 200, pem.text
    return x509.load_der_x509_certificate(split_pem_chain(pem.text)[0])


def _dns_names(leaf: x509.Certificate) -> list[str]:
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


async def test_wildcard_certificate_via_dns_account01(new_methods_ca: LoopbackCA) -> None:
    ca = new_methods_ca
    async with _http(ca) as http:
        client = await _account(ca, http)
        order_url, authz_url, authz = await _wildcard_authz(client, "*.acct.example")
        # A wildcard is offered the DNS-based methods only, all three here.
        assert sorted(c["type"] for c in authz["challenges"]) == [
            "dns-01",
            "dns-account-01",
            "dns-persist-01",
        ]
        challenge = next(c for c in authz["challenges"] if c["type"] == "dns-account-01")
        assert client.kid is not None
        record = dns_account01_record_name("acct.example", client.kid)
        value = dns01_txt_value(client.key_authorization(challenge["token"]))
        await _set_txt(http, ca, record, value)
        leaf = await _answer_and_finalize(client, order_url, authz_url, challenge, "*.acct.example")
    assert _dns_names(leaf) == ["*.acct.example"]


async def test_wildcard_certificate_via_dns_persist01(new_methods_ca: LoopbackCA) -> None:
    ca = new_methods_ca
    async with _http(ca) as http:
        client = await _account(ca, http)
        order_url, authz_url, authz = await _wildcard_authz(client, "*.persist.example")
        challenge = next(c for c in authz["challenges"] if c["type"] == "dns-persist-01")
        # draft-ietf-acme-dns-persist-00 §3.1: no token, the CA's issuer
        # names instead (its CAA identities, as the directory lists them).
        assert "token" not in challenge
        caa_identities = client.dir["meta"]["caaIdentities"]
        assert challenge["issuer-domain-names"] == caa_identities
        assert client.kid is not None
        value = dns_persist01_txt_value(
            challenge["issuer-domain-names"][0], client.kid, wildcard=True
        )
        await _set_txt(http, ca, dns_persist01_record_name("persist.example"), value)
        leaf = await _answer_and_finalize(
            client, order_url, authz_url, challenge, "*.persist.example"
        )
    assert _dns_names(leaf) == ["*.persist.example"]


async def test_dns_persist01_record_without_wildcard_policy_fails(
    new_methods_ca: LoopbackCA,
) -> None:
    ca = new_methods_ca
    async with _http(ca) as http:
        client = await _account(ca, http)
        _, authz_url, authz = await _wildcard_authz(client, "*.nopolicy.example")
        challenge = next(c for c in authz["challenges"] if c["type"] == "dns-persist-01")
        assert client.kid is not None
        issuer = challenge["issuer-domain-names"][0]
        value = dns_persist01_txt_value(issuer, client.kid)
        await _set_txt(http, ca, dns_persist01_record_name("nopolicy.example"), value)
        assert (await client.post(challenge["url"], {})).status_code == 200
        for _ in range(MAX_POLLS):
            authz = (await client.get(authz_url)).json()
            if authz["status"] != "pending":
                break
            await anyio.sleep(0.1)
    assert authz["status"] == "invalid", authz
    failed = next(c for c in authz["challenges"] if c["type"] == "dns-persist-01")
    assert failed["error"]["type"] == "urn:ietf:params:acme:error:unauthorized"
    assert "needs policy=wildcard" in failed["error"]["detail"]


async def test_default_ca_does_not_offer_them(tmp_path: Path) -> None:
    with running_ca(tmp_path, serve_args=["--workers", "1"]) as ca:
        async with _http(ca) as http:
            client = await _account(ca, http)
            _, _, wildcard = await _wildcard_authz(client, "*.default.example")
            response = await client.new_order(["www.default.example"])
            assert response.status_code == 201, response.text
            plain = (await client.get(response.json()["authorizations"][0])).json()
    assert [c["type"] for c in wildcard["challenges"]] == ["dns-01"]
    assert sorted(c["type"] for c in plain["challenges"]) == ["dns-01", "http-01", "tls-alpn-01"]
