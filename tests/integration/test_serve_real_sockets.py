"""`certmint-ca serve` over real sockets: chaos knobs and worker processes.

The raw test client drives whole flows against a subprocess CA on loopback,
with the challenge test server answering http-01 through its management API.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from certmint.protocol.b64 import b64url_encode
from certmint.testing.acme_client import RawAcmeClient, make_csr
from certmint.testing.harness import LoopbackCA, running_ca

pytestmark = pytest.mark.anyio
MAX_ATTEMPTS = 20  # per request: bounds every retry loop below


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _client(ca: LoopbackCA, *, keep_alive: bool = True) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(ca.root_pem_path))
    limits = httpx.Limits(max_keepalive_connections=None if keep_alive else 0)
    return httpx.AsyncClient(verify=context, limits=limits, timeout=20)


class Counted:
    """Posts through a RawAcmeClient, retrying badNonce as RFC 8555 §6.5 asks."""

    def __init__(self, client: RawAcmeClient) -> None:
        self.client = client
        self.bad_nonces = 0

    async def post(self, url: str, payload: Any = None, **options: Any) -> httpx.Response:
        for _ in range(MAX_ATTEMPTS):
            response = await self.client.post(url, payload, **options)
            if response.status_code == 400 and response.json().get("type", "").endswith(
                ":badNonce"
            ):
                self.bad_nonces += 1
                continue
            return response
        raise AssertionError("badNonce on every attempt")


async def _issue(ca: LoopbackCA, http: httpx.AsyncClient, name: str) -> tuple[Counted, str]:
    client = RawAcmeClient(http, ca.directory_url)
    await client.load_directory()
    counted = Counted(client)
    account = await counted.post(
        client.dir["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=True
    )
    assert account.status_code == 201, account.text
    client.kid = account.headers["Location"]
    order_response = await counted.post(
        client.dir["newOrder"], {"identifiers": [{"type": "dns", "value": name}]}
    )
    assert order_response.status_code == 201, order_response.text
    order_url = order_response.headers["Location"]
    authz_url = order_response.json()["authorizations"][0]
    authz = (await counted.post(authz_url)).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    await http.post(
        f"{ca.challtestsrv_management_url}/add-http01",
        json={"token": challenge["token"], "content": client.key_authorization(challenge["token"])},
    )
    await counted.post(challenge["url"], {})
    for _ in range(MAX_ATTEMPTS * 5):  # bounded poll: at most 100 polls of 0.1 s
        status = (await counted.post(authz_url)).json()["status"]
        if status != "pending":
            break
        await anyio.sleep(0.1)
    assert status == "valid", status
    csr, _ = make_csr([name])
    order = (await counted.post(order_url)).json()
    final = await counted.post(order["finalize"], {"csr": b64url_encode(csr)})
    assert final.status_code == 200, final.text
    certificate = await counted.post(final.json()["certificate"])
    assert certificate.status_code == 200
    assert certificate.text.count("BEGIN CERTIFICATE") == 2
    return counted, certificate.text


@pytest.fixture
def chaotic_ca(tmp_path: Path) -> Iterator[LoopbackCA]:
    args = [
        "--workers", "1",
        "--chaos-nonce-reject", "30",
        "--chaos-validation-delay", "0.3",
        "--chaos-seed", "4242",
    ]
    with running_ca(tmp_path, serve_args=args, challtestsrv_answers_challenges=True) as ca:
        yield ca


async def test_chaos_rejects_nonces_and_delays_validation_yet_a_correct_client_succeeds(
    chaotic_ca: LoopbackCA,
) -> None:
    async with _client(chaotic_ca) as http:
        counted, _ = await _issue(chaotic_ca, http, "chaos.example.com")
    # Seed 4242 at 30 % rejects several of the ~10 requests; a client without
    # the §6.5 retry would have failed.
    assert counted.bad_nonces >= 1
    log = chaotic_ca.ca_log_path.read_text()
    assert "chaos on, seed 4242" in log


@pytest.fixture
def two_worker_ca(tmp_path: Path) -> Iterator[LoopbackCA]:
    with running_ca(
        tmp_path, serve_args=["--workers", "2"], challtestsrv_answers_challenges=True
    ) as ca:
        yield ca


async def test_nonces_are_good_across_worker_processes(two_worker_ca: LoopbackCA) -> None:
    """Without keep-alive every request is a new connection, which the kernel
    hands to either worker; a nonce from one must be good at the other."""
    async with _client(two_worker_ca, keep_alive=False) as http:
        for index in range(3):
            counted, _ = await _issue(two_worker_ca, http, f"w{index}.example.com")
            assert counted.bad_nonces == 0
