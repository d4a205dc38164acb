"""An IP-address certificate (RFC 8738) over real sockets: `certmint-ca serve`
on loopback validates the ip identifier 127.0.0.1 by http-01 against the
challenge test server, and signs a certificate with an iPAddress SAN.

127.0.0.1 is a special-purpose address that a public CA refuses, so the CA
runs with ``--allow-private-ip-identifiers``; without it the order is refused.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certmint.protocol.b64 import b64url_encode
from certmint.protocol.csr import split_pem_chain
from certmint.testing.acme_client import RawAcmeClient
from certmint.testing.harness import LoopbackCA, running_ca

pytestmark = pytest.mark.anyio
LOOPBACK = "127.0.0.1"
MAX_POLLS = 100  # of 0.1 s each: bounds the wait for validation


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ip_ca(tmp_path: Path) -> Iterator[LoopbackCA]:
    args = ["--workers", "1", "--allow-private-ip-identifiers"]
    with running_ca(tmp_path, serve_args=args, challtestsrv_answers_challenges=True) as ca:
        yield ca


def _http(ca: LoopbackCA) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=str(ca.root_pem_path)), timeout=20
    )


async def _account(ca: LoopbackCA, http: httpx.AsyncClient) -> RawAcmeClient:
    client = RawAcmeClient(http, ca.directory_url)
    await client.load_directory()
    response = await client.post(
        client.dir["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=True
    )
    assert response.status_code == 201, response.text
    client.kid = response.headers["Location"]
    return client


def _csr_for_ip(address: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


async def test_ip_certificate_issued_via_http01(ip_ca: LoopbackCA) -> None:
    async with _http(ip_ca) as http:
        client = await _account(ip_ca, http)
        response = await client.post(
            client.dir["newOrder"],
            {"identifiers": [{"type": "ip", "value": LOOPBACK}], "profile": "shortlived"},
        )
        assert response.status_code == 201, response.text
        order_url = response.headers["Location"]
        authz_url = response.json()["authorizations"][0]
        authz = (await client.get(authz_url)).json()
        assert authz["identifier"] == {"type": "ip", "value": LOOPBACK}
        assert sorted(c["type"] for c in authz["challenges"]) == ["http-01", "tls-alpn-01"]
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        token = challenge["token"]
        added = await http.post(
            f"{ip_ca.challtestsrv_management_url}/add-http01",
            json={"token": token, "content": client.key_authorization(token)},
        )
        assert added.status_code == 200, added.text
        assert (await client.post(challenge["url"], {})).status_code == 200
        status = "pending"
        for _ in range(MAX_POLLS):
            status = (await client.get(authz_url)).json()["status"]
            if status != "pending":
                break
            await anyio.sleep(0.1)
        assert status == "valid", (await client.get(authz_url)).text
        order = (await client.get(order_url)).json()
        final = await client.post(order["finalize"], {"csr": b64url_encode(_csr_for_ip(LOOPBACK))})
        assert final.status_code == 200, final.text
        pem = await client.get(final.json()["certificate"])
        assert pem.status_code == 200, pem.text
    leaf = x509.load_der_x509_certificate(split_pem_chain(pem.text)[0])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(LOOPBACK)]
    assert san.get_values_for_type(x509.DNSName) == []


async def test_loopback_ip_refused_without_the_operator_flag(tmp_path: Path) -> None:
    with running_ca(tmp_path, serve_args=["--workers", "1"]) as ca:
        async with _http(ca) as http:
            client = await _account(ca, http)
            response = await client.post(
                client.dir["newOrder"],
                {"identifiers": [{"type": "ip", "value": LOOPBACK}], "profile": "shortlived"},
            )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
    assert body["subproblems"][0]["identifier"] == {"type": "ip", "value": LOOPBACK}
    assert "loopback" in body["subproblems"][0]["detail"]
