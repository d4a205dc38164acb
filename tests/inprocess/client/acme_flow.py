"""Driving ``AcmeClient`` through a whole issuance against a real CA, with the
challenge test server (ours or Pebble's) serving the http-01 answers.

Shared by the tests against certmint-ca and against Pebble, so both CAs see
exactly the same client behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509

from certmint.client.acme import AcmeClient
from certmint.protocol.challenges import key_authorization
from certmint.protocol.jwk import jwk_from_public_key, jwk_thumbprint
from certmint.protocol.messages import AuthorizationMsg, Identifier, OrderMsg
from certmint.testing.acme_client import make_csr


@dataclass(frozen=True)
class Issued:
    order_url: str
    order: OrderMsg
    fullchain_pem: str
    cert_key: Any

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.fullchain_pem.encode())[0]


def provision_http01(challtestsrv_url: str, token: str, content: str) -> None:
    response = httpx.post(
        f"{challtestsrv_url}/add-http01", json={"token": token, "content": content}, timeout=5
    )
    response.raise_for_status()


def authorize_http01(client: AcmeClient, authz_url: str, challtestsrv_url: str) -> AuthorizationMsg:
    """Answer the authorization's http-01 challenge and wait for the outcome."""
    authz = client.get_authorization(authz_url)
    if authz.status != "pending":  # reused from an earlier order
        return authz
    challenge = next(c for c in authz.challenges if c.type == "http-01")
    assert challenge.token is not None
    thumbprint = jwk_thumbprint(jwk_from_public_key(client.session.key.public_key()))
    provision_http01(
        challtestsrv_url, challenge.token, key_authorization(challenge.token, thumbprint)
    )
    client.answer_challenge(challenge.url)
    return client.poll_authorization(authz_url, timeout=60)


def obtain(
    client: AcmeClient,
    names: list[str],
    challtestsrv_url: str,
    *,
    replaces: str | None = None,
    profile: str | None = None,
    preferred_chain: str | None = None,
) -> Issued:
    order_url, order = client.new_order(
        [Identifier("dns", name) for name in names], replaces=replaces, profile=profile
    )
    for authz_url in order.authorizations:
        authz = authorize_http01(client, authz_url, challtestsrv_url)
        assert authz.status == "valid", authz
    order = client.poll_order(order_url, timeout=60)
    assert order.status == "ready", order
    csr_der, cert_key = make_csr(names)
    order = client.finalize(order_url, order, csr_der)
    assert order.certificate is not None
    pem = client.download_certificate(order.certificate, preferred_chain=preferred_chain)
    return Issued(order_url, order, pem, cert_key)


def san_names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))
