"""The whole RFC 8555 flow through the real WFE/RA/SA/CA, in-process."""

from __future__ import annotations

import pytest
from cryptography import x509

from certmint.protocol.csr import split_pem_chain

from .conftest import CAEnv, issue

pytestmark = pytest.mark.anyio


async def test_directory_has_every_resource_and_meta(env: CAEnv) -> None:
    client = await env.client(register=False)
    directory = client.dir
    for name in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"):
        assert directory[name].startswith("https://acme.test/")
    meta = directory["meta"]
    assert meta["externalAccountRequired"] is False
    assert "classic" in meta["profiles"]
    assert meta["caaIdentities"]


async def test_issue_certificate_end_to_end(env: CAEnv) -> None:
    client = await env.client(contact=["mailto:admin@example.com"])
    order = await issue(env, client, ["example.com", "www.example.com"])
    assert order["status"] == "valid"
    response = await client.get(order["certificate"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pem-certificate-chain"
    chain = split_pem_chain(response.text)
    assert len(chain) == 2
    leaf = x509.load_der_x509_certificate(chain[0])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["example.com", "www.example.com"]
    assert 'rel="alternate"' in response.headers["Link"]
    assert 'rel="index"' in response.headers["Link"]
    # The VA was asked with this account's key authorization.
    request = env.va.requests[0]
    assert request.key_authorization == client.key_authorization(request.token)
