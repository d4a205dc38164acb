"""Authenticating an ACME POST (RFC 8555 §6.2-6.5) before the RA sees it.

Order of checks: media type, size, JWS syntax, algorithm, nonce, URL, key
(``kid`` or ``jwk`` as the endpoint demands), then the signature. Every failure
is a typed error the WFE renders as a problem document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from certmint.ca import errors
from certmint.ca.nonces import NonceService
from certmint.ca.storage.records import ACCOUNT_VALID, AccountRecord
from certmint.ca.storage.sa import StorageAuthority
from certmint.ca.urls import AcmeUrls
from certmint.protocol.jwk import JWKError, PublicKey, public_key_from_jwk
from certmint.protocol.jws import ALLOWED_ALGS, JWSError, ParsedJWS, parse_jws, verify_jws

JOSE_CONTENT_TYPE = "application/jose+json"
KEY_CACHE_SIZE = 10_000


class KeyRule(Enum):
    KID = "kid"  # an existing account signs (most endpoints)
    JWK = "jwk"  # a bare key signs (newAccount)
    EITHER = "either"  # revokeCert: the account or the certificate's key


@dataclass(frozen=True)
class Authenticated:
    jws: ParsedJWS
    key: PublicKey
    account: AccountRecord | None  # set when signed by kid
    jwk: dict[str, Any] | None  # set when signed by jwk

    def payload(self) -> Any:
        """The JSON payload, or a malformed error (never a traceback)."""
        try:
            return self.jws.payload_json()
        except JWSError as exc:
            raise errors.Malformed(f"request payload is not valid JSON: {exc}") from None


def check_content_type(header: str | None) -> None:
    media = (header or "").split(";", 1)[0].strip().lower()
    if media != JOSE_CONTENT_TYPE:
        # RFC 8555 §6.2: 415 with type malformed.
        raise errors.UnsupportedMediaType(
            f"Content-Type must be {JOSE_CONTENT_TYPE}, not {header or 'missing'}"
        )


class RequestAuthenticator:
    def __init__(self, urls: AcmeUrls, nonces: NonceService, sa: StorageAuthority) -> None:
        self._urls = urls
        self._nonces = nonces
        self._sa = sa
        self._key_cache: dict[str, PublicKey] = {}

    def authenticate(self, body: bytes, request_url: str, rule: KeyRule) -> Authenticated:
        try:
            jws = parse_jws(body)
        except JWSError as exc:
            raise _jws_error(exc) from None
        if jws.alg not in ALLOWED_ALGS:
            raise errors.BadSignatureAlgorithm(
                f"JWS algorithm {jws.alg!r} is not accepted", algorithms=ALLOWED_ALGS
            )
        # §6.5: a nonce is single-use; a missing or used one is badNonce.
        if not jws.nonce:
            raise errors.BadNonce("JWS has no nonce")
        if not self._nonces.redeem(jws.nonce):
            raise errors.BadNonce("JWS has an invalid anti-replay nonce; fetch a fresh one")
        # §6.4: the signed url must be exactly the URL requested.
        if jws.url is None:
            raise errors.Malformed("JWS protected header has no url")
        if jws.url != request_url:
            raise errors.Unauthorized(
                f"JWS url {jws.url!r} does not match the request URL {request_url!r}"
            )
        account, jwk, key = self._resolve_key(jws, rule)
        try:
            verify_jws(jws, key)
        except JWSError as exc:
            raise _jws_error(exc) from None
        return Authenticated(jws=jws, key=key, account=account, jwk=jwk)

    def _resolve_key(
        self, jws: ParsedJWS, rule: KeyRule
    ) -> tuple[AccountRecord | None, dict[str, Any] | None, PublicKey]:
        # §6.2: exactly one of kid and jwk; which one depends on the endpoint.
        if jws.kid is not None:
            if rule is KeyRule.JWK:
                raise errors.Malformed("this request must be signed with a jwk, not a kid")
            account = self._account_for_kid(jws.kid)
            return account, None, self._account_key(account.jwk_json)
        if jws.jwk is not None:
            if rule is KeyRule.KID:
                raise errors.Malformed("this request must be signed with an account kid, not a jwk")
            try:
                key = public_key_from_jwk(jws.jwk)
            except JWKError as exc:
                raise errors.BadPublicKey(f"JWS jwk is not acceptable: {exc}") from None
            return None, jws.jwk, key
        raise errors.Malformed("JWS protected header needs a kid or a jwk")

    def _account_key(self, jwk_json: str) -> PublicKey:
        """The key object for a stored JWK. Parsing and validating a JWK costs
        more than verifying a signature, so keys are cached by their JSON text
        (immutable: a key change stores a new text)."""
        key = self._key_cache.get(jwk_json)
        if key is None:
            try:
                key = public_key_from_jwk(json.loads(jwk_json))
            except (JWKError, ValueError) as exc:
                raise errors.ServerInternal(f"stored account key unusable: {exc}") from None
            if len(self._key_cache) >= KEY_CACHE_SIZE:
                self._key_cache.pop(next(iter(self._key_cache)))
            self._key_cache[jwk_json] = key
        return key

    def _account_for_kid(self, kid: str) -> AccountRecord:
        account_id = self._urls.account_id_from_kid(kid)
        account = self._sa.get_account(account_id) if account_id else None
        if account is None:
            raise errors.AccountDoesNotExist(f"no account for kid {kid!r}")
        if account.status != ACCOUNT_VALID:
            # §7.3.6: a deactivated account's key may sign nothing more.
            raise errors.Unauthorized(f"account is {account.status}")
        return account


def _jws_error(exc: JWSError) -> errors.AcmeError:
    if exc.kind == "badSignatureAlgorithm":
        return errors.BadSignatureAlgorithm(str(exc), algorithms=ALLOWED_ALGS)
    return errors.Malformed(f"JWS could not be verified: {exc}")
