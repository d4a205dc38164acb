"""ARI (RFC 9773) over real sockets: `certmint-ca serve` on loopback, the raw
test client over HTTPS, the challenge test server answering http-01.

Issue, read renewalInfo with a plain GET, renew with ``replaces``, and see the
replacement in the management API's cert-status (``ReplacedBy``).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography import x509

from certmint.ca.ari import RETRY_AFTER_SECONDS, cert_id_of
from certmint.protocol.b64 import b64url_encode
from certmint.testing.acme_client import RawAcmeClient, make_csr
from certmint.testing.harness import LoopbackCA, running_ca

pytestmark = pytest.mark.anyio
NAME = "ari.example.com"
MAX_POLLS = 100  # 0.1 s apart: every poll loop below ends within ten seconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[LoopbackCA]:
    with running_ca(
        tmp_path, serve_args=["--workers", "1"], challtestsrv_answers_challenges=True
    ) as loopback:
        yield loopback


async def _order_certificate(
    ca: LoopbackCA, http: httpx.AsyncClient, client: RawAcmeClient, **extra: Any
) -> tuple[dict[str, Any], str, x509.Certificate]:
    created = await client.new_order([NAME], **extra)
    assert created.status_code == 201, created.text
    order_url = created.headers["Location"]
    for authz_url in created.json()["authorizations"]:
        authz = (await client.get(authz_url)).json()
        if authz["status"] == "valid":
            continue
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        content = client.key_authorization(challenge["token"])
        await http.post(
            f"{ca.challtestsrv_management_url}/add-http01",
            json={"token": challenge["token"], "content": content},
        )
        assert (await client.post(challenge["url"], {})).status_code == 200
        for _ in range(MAX_POLLS):
            status = (await client.get(authz_url)).json()["status"]
            if status != "pending":
                break
            await anyio.sleep(0.1)
        assert status == "valid", status
    order = (await client.get(order_url)).json()
    csr, _ = make_csr([NAME])
    final = await client.post(order["finalize"], {"csr": b64url_encode(csr)})
    assert final.status_code == 200, final.text
    pem = await client.get(final.json()["certificate"])
    return final.json(), order_url, x509.load_pem_x509_certificates(pem.content)[0]


async def test_renewal_with_replaces_over_real_sockets(ca: LoopbackCA) -> None:
    context = ssl.create_default_context(cafile=str(ca.root_pem_path))
    async with httpx.AsyncClient(verify=context, timeout=20) as http:
        client = RawAcmeClient(http, ca.directory_url)
        directory = await client.load_directory()
        assert (await client.new_account()).status_code == 201
        _, _, old = await _order_certificate(ca, http, client)
        cert_id = cert_id_of(old)

        info = await http.get(f"{directory['renewalInfo']}/{cert_id}")
        assert info.status_code == 200, info.text
        assert info.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert set(info.json()["suggestedWindow"]) == {"start", "end"}

        renewed, renewed_url, new = await _order_certificate(ca, http, client, replaces=cert_id)
        assert renewed["replaces"] == cert_id
        assert new.serial_number != old.serial_number

        status_url = f"{ca.management_url}/cert-status-by-serial/{old.serial_number:x}"
        status = (await http.get(status_url)).json()
        assert status["ReplacedBy"] == renewed_url.rsplit("/", 1)[1]
        again = await client.new_order([NAME], replaces=cert_id)
        assert again.status_code == 409
        assert again.json()["type"] == "urn:ietf:params:acme:error:alreadyReplaced"
