"""A raw ACME client for tests and benchmarks.

Unlike the agent in ``certmint.client`` it does not hide anything: every call
returns the ``httpx.Response``, and every part of a request (nonce, url, kid
or jwk, key, payload, content type, raw body) can be overridden, so tests can
send exactly the malformed request they mean to.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.protocol.b64 import b64url_encode
from certmint.protocol.jwk import (
    PrivateKey,
    generate_private_key,
    jwk_from_public_key,
    jwk_thumbprint,
)
from certmint.protocol.jws import sign_eab, sign_jws

JOSE = "application/jose+json"
_UNSET: Any = object()


def make_csr(
    names: list[str],
    key: Any = None,
    *,
    common_name: str | None = None,
    include_san: bool = True,
) -> tuple[bytes, Any]:
    """A DER CSR for ``names`` (SAN), optionally with a CN; returns (der, key)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder()
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = builder.subject_name(x509.Name(subject))
    if include_san and names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER), key


class RawAcmeClient:
    def __init__(self, http: httpx.AsyncClient, directory_url: str, key: PrivateKey | None = None):
        self.http = http
        self.directory_url = directory_url
        self.key: PrivateKey = key or generate_private_key("ES256")
        self.kid: str | None = None
        self.dir: dict[str, Any] = {}
        self._nonce: str | None = None

    @property
    def thumbprint(self) -> str:
        return jwk_thumbprint(jwk_from_public_key(self.key.public_key()))

    async def load_directory(self) -> dict[str, Any]:
        response = await self.http.get(self.directory_url)
        response.raise_for_status()
        self.dir = response.json()
        return self.dir

    async def nonce(self) -> str:
        if self._nonce is not None:
            nonce, self._nonce = self._nonce, None
            return nonce
        response = await self.http.head(self.dir["newNonce"])
        return response.headers["Replay-Nonce"]

    def body(
        self,
        url: str,
        payload: Any,
        *,
        nonce: str | None,
        key: PrivateKey | None = None,
        use_jwk: bool = False,
        kid: str | None = _UNSET,
        extra_protected: dict[str, Any] | None = None,
        signed_url: str | None = None,
    ) -> bytes:
        """Sign ``payload`` (None → POST-as-GET) into a flattened JWS body."""
        key = key or self.key
        protected: dict[str, Any] = {"url": signed_url or url}
        if nonce is not None:
            protected["nonce"] = nonce
        chosen_kid = self.kid if kid is _UNSET else kid
        if use_jwk or chosen_kid is None:
            protected["jwk"] = jwk_from_public_key(key.public_key())
        else:
            protected["kid"] = chosen_kid
        protected.update(extra_protected or {})
        raw = b"" if payload is None else json.dumps(payload).encode()
        return json.dumps(sign_jws(key, raw, protected)).encode()

    async def post(
        self,
        url: str,
        payload: Any = None,
        *,
        nonce: str | None = _UNSET,
        content_type: str = JOSE,
        raw_body: bytes | None = None,
        **sign_options: Any,
    ) -> httpx.Response:
        if raw_body is None:
            use_nonce = await self.nonce() if nonce is _UNSET else nonce
            raw_body = self.body(url, payload, nonce=use_nonce, **sign_options)
        response = await self.http.post(
            url, content=raw_body, headers={"Content-Type": content_type}
        )
        if "Replay-Nonce" in response.headers:
            self._nonce = response.headers["Replay-Nonce"]
        return response

    # -- conveniences for the happy path -----------------------------------

    async def new_account(
        self,
        *,
        contact: list[str] | None = None,
        agree: bool = True,
        only_return_existing: bool = False,
        eab: tuple[str, bytes] | None = None,
    ) -> httpx.Response:
        payload: dict[str, Any] = {"termsOfServiceAgreed": agree}
        if contact is not None:
            payload["contact"] = contact
        if only_return_existing:
            payload["onlyReturnExisting"] = True
        if eab is not None:
            payload["externalAccountBinding"] = sign_eab(
                jwk_from_public_key(self.key.public_key()), eab[0], eab[1], self.dir["newAccount"]
            )
        response = await self.post(self.dir["newAccount"], payload, use_jwk=True)
        if response.status_code in (200, 201):
            self.kid = response.headers["Location"]
        return response

    async def new_order(self, names: list[str], **extra: Any) -> httpx.Response:
        payload = {"identifiers": [{"type": "dns", "value": n} for n in names], **extra}
        return await self.post(self.dir["newOrder"], payload)

    async def get(self, url: str) -> httpx.Response:
        """POST-as-GET (RFC 8555 §6.3)."""
        return await self.post(url, None)

    async def finalize(self, order: dict[str, Any], csr_der: bytes) -> httpx.Response:
        return await self.post(order["finalize"], {"csr": b64url_encode(csr_der)})

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.thumbprint}"
