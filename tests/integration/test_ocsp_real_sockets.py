"""The optional OCSP responder over real sockets: ``certmint-ca serve --ocsp``.

A certificate is issued through the raw ACME client, then ``openssl ocsp``
asks the management port about it: ``good``, and after an ACME revokeCert
``revoked`` with its reason. Without ``--ocsp`` there is no ``/ocsp`` and no
OCSP URL in what the CA issues.
"""

from __future__ import annotations

import base64
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from certmint.protocol.b64 import b64url_encode
from certmint.testing.acme_client import RawAcmeClient, make_csr
from certmint.testing.harness import LoopbackCA, running_ca, split_pem_bundle

pytestmark = pytest.mark.anyio
MAX_POLLS = 100  # of 0.1 s: bounds the authorization poll


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ocsp_ca(tmp_path: Path) -> Iterator[LoopbackCA]:
    args = ["--workers", "1", "--ocsp"]
    with running_ca(tmp_path, serve_args=args, challtestsrv_answers_challenges=True) as ca:
        yield ca


@pytest.fixture
def plain_ca(tmp_path: Path) -> Iterator[LoopbackCA]:
    args = ["--workers", "1"]
    with running_ca(tmp_path, serve_args=args, challtestsrv_answers_challenges=True) as ca:
        yield ca


def _http(ca: LoopbackCA) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(ca.root_pem_path))
    return httpx.AsyncClient(verify=context, timeout=20)


async def _issue(ca: LoopbackCA, http: httpx.AsyncClient, name: str) -> tuple[RawAcmeClient, bytes]:
    """One certificate through the whole ACME flow (http-01 answered by the
    challenge test server); returns the account's client and the PEM chain."""
    client = RawAcmeClient(http, ca.directory_url)
    await client.load_directory()
    assert (await client.new_account()).status_code == 201
    order_response = await client.new_order([name])
    assert order_response.status_code == 201, order_response.text
    order_url = order_response.headers["Location"]
    authz_url = order_response.json()["authorizations"][0]
    authz = (await client.get(authz_url)).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    await http.post(
        f"{ca.challtestsrv_management_url}/add-http01",
        json={"token": challenge["token"], "content": client.key_authorization(challenge["token"])},
    )
    await client.post(challenge["url"], {})
    status = "pending"
    for _ in range(MAX_POLLS):
        status = (await client.get(authz_url)).json()["status"]
        if status != "pending":
            break
        await anyio.sleep(0.1)
    assert status == "valid", status
    csr, _ = make_csr([name])
    final = await client.finalize((await client.get(order_url)).json(), csr)
    assert final.status_code == 200, final.text
    chain = await client.get(final.json()["certificate"])
    assert chain.status_code == 200, chain.text
    return client, chain.content


def _openssl_ocsp(tmp_path: Path, ca: LoopbackCA, leaf: Path, issuer: Path) -> str:
    done = subprocess.run(
        [
            *("openssl", "ocsp", "-issuer", str(issuer), "-cert", str(leaf)),
            *("-url", f"{ca.management_url}/ocsp", "-CAfile", str(ca.root_pem_path)),
            *("-timeout", "20"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    # The signature chains to the root through the delegated responder, and
    # openssl's default nonce came back (else: "WARNING: no nonce in response").
    assert "Response verify OK" in said, said
    assert "nonce" not in said.lower(), said
    return said


async def test_openssl_sees_good_then_revoked(ocsp_ca: LoopbackCA, tmp_path: Path) -> None:
    async with _http(ocsp_ca) as http:
        client, chain = await _issue(ocsp_ca, http, "ocsp.example.com")
        leaf_pem, issuer_pem = split_pem_bundle(chain)[:2]
        leaf, issuer = tmp_path / "leaf.pem", tmp_path / "E1.pem"
        leaf.write_bytes(leaf_pem)
        issuer.write_bytes(issuer_pem)
        cert = x509.load_pem_x509_certificate(leaf_pem)
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp_urls = [
            d.access_location.value
            for d in aia
            if d.access_method == AuthorityInformationAccessOID.OCSP
        ]
        assert ocsp_urls == [f"{ocsp_ca.management_url}/ocsp"]

        said = _openssl_ocsp(tmp_path, ocsp_ca, leaf, issuer)
        assert f"{leaf}: good" in said, said

        # RFC 8555 §7.6, signed by the issuing account.
        der = cert.public_bytes(serialization.Encoding.DER)
        revoked = await client.post(
            client.dir["revokeCert"], {"certificate": b64url_encode(der), "reason": 5}
        )
        assert revoked.status_code == 200, revoked.text

        said = _openssl_ocsp(tmp_path, ocsp_ca, leaf, issuer)
        assert f"{leaf}: revoked" in said, said
        assert "Reason: cessationOfOperation" in said, said

        # The same over GET (RFC 6960 §A.1), base64 URL-encoded in the path.
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, x509.load_pem_x509_certificate(issuer_pem), hashes.SHA256())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        encoded = quote(base64.b64encode(request).decode("ascii"), safe="")
        reply = await http.get(f"{ocsp_ca.management_url}/ocsp/{encoded}")
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/ocsp-response"
        answer = ocsp.load_der_ocsp_response(reply.content)
        assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert answer.revocation_reason == x509.ReasonFlags.cessation_of_operation


async def test_without_the_flag_there_is_no_ocsp(plain_ca: LoopbackCA) -> None:
    async with _http(plain_ca) as http:
        _, chain = await _issue(plain_ca, http, "no-ocsp.example.com")
        cert = x509.load_pem_x509_certificate(split_pem_bundle(chain)[0])
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert [d.access_method for d in aia] == [AuthorityInformationAccessOID.CA_ISSUERS]
        posted = await http.post(
            f"{plain_ca.management_url}/ocsp",
            content=b"\x30\x00",
            headers={"Content-Type": "application/ocsp-request"},
        )
        assert posted.status_code == 404
        assert (await http.get(f"{plain_ca.management_url}/ocsp/MAA%3D")).status_code == 404
