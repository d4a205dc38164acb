"""Small flows and hand-built requests shared by the in-process error-path
tests (the happy path lives in ``conftest.issue``)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from certmint.ca.storage.schema import certificates
from certmint.protocol.b64 import b64url_encode
from certmint.testing.acme_client import RawAcmeClient, make_csr

from .conftest import CAEnv


async def validate_order(
    env: CAEnv, client: RawAcmeClient, names: list[str], **extra: Any
) -> tuple[dict[str, Any], str]:
    """newOrder, answer every pending authorization's http-01 challenge, and
    drain the VA; returns the order JSON (now ``ready``) and its URL."""
    response = await client.new_order(names, **extra)
    assert response.status_code == 201, response.text
    order_url = response.headers["Location"]
    for authz_url in response.json()["authorizations"]:
        authz = (await client.get(authz_url)).json()
        if authz["status"] != "pending":
            continue
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        answer = await client.post(challenge["url"], {})
        assert answer.status_code == 200, answer.text
    await env.drain()
    order = (await client.get(order_url)).json()
    assert order["status"] == "ready", order
    return order, order_url


async def issue_with_key(
    env: CAEnv, client: RawAcmeClient, names: list[str], **extra: Any
) -> tuple[dict[str, Any], ec.EllipticCurvePrivateKey]:
    """Like ``conftest.issue`` but also returns the certificate's private key."""
    order, order_url = await validate_order(env, client, names, **extra)
    cert_key = ec.generate_private_key(ec.SECP256R1())
    csr, _ = make_csr(names, cert_key)
    response = await client.finalize(order, csr)
    assert response.status_code == 200, response.text
    order = response.json()
    order["url"] = order_url
    return order, cert_key


def serial_of(order: dict[str, Any]) -> str:
    """The serial in a valid order's certificate URL (…/cert/<serial>)."""
    return str(order["certificate"]).rsplit("/", 1)[1]


def certificate_count(env: CAEnv) -> int:
    """How many certificates the SA holds: the ground truth for "issued once"."""
    with env.server.sa.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(certificates)).scalar_one())


def raw_jws(protected: dict[str, Any], payload: Any, signature: bytes) -> bytes:
    """A flattened JWS with exactly this header and signature (no checks),
    for requests no honest signer would produce."""
    body = {
        "protected": b64url_encode(json.dumps(protected).encode()),
        "payload": "" if payload is None else b64url_encode(json.dumps(payload).encode()),
        "signature": b64url_encode(signature),
    }
    return json.dumps(body).encode()


def signing_input(body: bytes) -> bytes:
    doc = json.loads(body)
    return f"{doc['protected']}.{doc['payload']}".encode("ascii")
