"""Account business rules of the RA (RFC 8555 §7.3): creation with contact,
terms and External Account Binding checks, update, deactivation, key change.

Split from ``ra.py`` by concept; the RA owns one ``AccountRegistrar`` and the
WFE reaches it as ``ra.accounts``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from certmint.ca import errors
from certmint.ca.config import CAConfig
from certmint.ca.policy import PolicyAuthority
from certmint.ca.storage.errors import EabKeyUnavailable, KeyInUse, StaleState
from certmint.ca.storage.records import ACCOUNT_VALID, AccountRecord, EabKeyRecord
from certmint.ca.storage.sa import StorageAuthority
from certmint.ca.urls import AcmeUrls
from certmint.protocol.b64 import b64url_encode
from certmint.protocol.jwk import (
    JWKError,
    canonical_jwk_json,
    jwk_thumbprint,
    public_key_from_jwk,
)
from certmint.protocol.jws import EAB_ALGS, JWSError, parse_jws, verify_hmac_jws, verify_jws
from certmint.protocol.messages import AccountUpdateRequest, NewAccountRequest
from certmint.runtime import Clock, Entropy


class AccountRegistrar:
    def __init__(
        self,
        *,
        config: CAConfig,
        sa: StorageAuthority,
        pa: PolicyAuthority,
        urls: AcmeUrls,
        clock: Clock,
        new_id: Callable[[], str],
    ) -> None:
        self._config = config
        self._sa = sa
        self._pa = pa
        self._urls = urls
        self._clock = clock
        self._new_id = new_id

    def new_account(
        self, jwk: dict[str, Any], request: NewAccountRequest
    ) -> tuple[AccountRecord, bool]:
        """Create the account for ``jwk`` or return the one that exists."""
        thumbprint = jwk_thumbprint(jwk)
        existing = self._sa.get_account_by_thumbprint(thumbprint)
        if existing is not None:
            # §7.3.1: a newAccount for a known key returns that account.
            return existing, False
        if request.only_return_existing:
            raise errors.AccountDoesNotExist("no account exists for this key")
        if self._config.terms_of_service and request.terms_of_service_agreed is not True:
            raise errors.Malformed(
                "you must agree to the terms of service (termsOfServiceAgreed: true)"
            )
        key = public_key_from_jwk(jwk)
        self._pa.check_account_key(key)
        contact = self._pa.check_contacts(request.contact or ())
        eab_kid = None
        if request.external_account_binding is not None:
            eab_kid = self._verify_eab(request.external_account_binding, jwk)
        elif self._config.eab_required:
            raise errors.ExternalAccountRequired(
                "this CA requires an external account binding (RFC 8555 §7.3.4)"
            )
        record = AccountRecord(
            id=self._new_id(),
            key_thumbprint=thumbprint,
            jwk_json=canonical_jwk_json(jwk),
            status=ACCOUNT_VALID,
            contact=contact,
            tos_agreed=bool(request.terms_of_service_agreed),
            eab_kid=eab_kid,
            created_at=self._clock.now(),
        )
        try:
            return self._sa.create_account(record, eab_kid=eab_kid)
        except EabKeyUnavailable:
            raise errors.Unauthorized(
                "external account binding key is unknown or already used"
            ) from None

    def _verify_eab(self, binding: dict[str, Any], outer_jwk: dict[str, Any]) -> str:
        """RFC 8555 §7.3.4: an HMAC-signed JWS over the account key."""
        try:
            inner = parse_jws(json.dumps(binding).encode())
        except JWSError as exc:
            raise errors.Malformed(f"externalAccountBinding: {exc}") from None
        if inner.alg not in EAB_ALGS:
            raise errors.BadSignatureAlgorithm(
                f"externalAccountBinding must use an HMAC algorithm, not {inner.alg}",
                algorithms=EAB_ALGS,
            )
        if inner.nonce is not None:
            raise errors.Malformed("externalAccountBinding must not carry a nonce")
        if inner.url != self._urls.new_account:
            raise errors.Malformed("externalAccountBinding url must be the newAccount URL")
        if not inner.kid:
            raise errors.Malformed("externalAccountBinding must name its key with kid")
        try:
            bound_jwk = inner.payload_json()
        except JWSError as exc:
            raise errors.Malformed(f"externalAccountBinding payload: {exc}") from None
        try:
            same_key = canonical_jwk_json(bound_jwk) == canonical_jwk_json(outer_jwk)
        except (JWKError, ValueError, KeyError, TypeError):
            same_key = False
        if not same_key:
            raise errors.Unauthorized(
                "externalAccountBinding payload is not this account's key"
            )
        eab = self._sa.get_eab_key(inner.kid)
        if eab is None or eab.account_id is not None:
            raise errors.Unauthorized("external account binding key is unknown or already used")
        try:
            verify_hmac_jws(inner, eab.hmac_key)
        except JWSError:
            raise errors.Unauthorized("externalAccountBinding signature is not valid") from None
        return inner.kid

    def update_account(
        self, account: AccountRecord, request: AccountUpdateRequest
    ) -> AccountRecord:
        try:
            if request.status is not None:
                if request.status != "deactivated":
                    raise errors.Malformed(
                        f"an account's status can only be set to deactivated, "
                        f"not {request.status!r}"
                    )
                # §7.3.6: deactivation; later requests with this key fail.
                return self._sa.deactivate_account(account.id)
            if request.contact is not None:
                contact = self._pa.check_contacts(request.contact)
                return self._sa.update_account_contact(account.id, contact)
        except StaleState:
            raise errors.Unauthorized("account is no longer valid") from None
        return account

    def change_key(
        self, account: AccountRecord, inner_body: Any, outer_url: str
    ) -> AccountRecord:
        """RFC 8555 §7.3.5 key rollover; the outer JWS is already checked."""
        try:
            inner = parse_jws(json.dumps(inner_body).encode())
        except (JWSError, TypeError, ValueError) as exc:
            raise errors.Malformed(f"keyChange inner JWS: {exc}") from None
        if inner.jwk is None or inner.kid is not None:
            raise errors.Malformed("keyChange inner JWS must carry the new key as jwk")
        if inner.url != outer_url:
            raise errors.Malformed("keyChange inner JWS url must equal the outer url")
        if inner.nonce is not None:
            raise errors.Malformed("keyChange inner JWS must not carry a nonce")
        try:
            new_key = public_key_from_jwk(inner.jwk)
        except JWKError as exc:
            raise errors.BadPublicKey(f"new key: {exc}") from None
        try:
            verify_jws(inner, new_key)
        except JWSError as exc:
            if exc.kind == "badSignatureAlgorithm":
                raise errors.BadSignatureAlgorithm(str(exc)) from None
            raise errors.Malformed(f"keyChange inner JWS: {exc}") from None
        # The inner payload is client bytes like any other: bad JSON is
        # malformed (RFC 8555 §7.3.5), never an internal error.
        try:
            payload = inner.payload_json()
        except JWSError as exc:
            raise errors.Malformed(f"keyChange inner payload: {exc}") from None
        if not isinstance(payload, dict):
            raise errors.Malformed("keyChange payload must be an object")
        if payload.get("account") != self._urls.account(account.id):
            raise errors.Malformed("keyChange account does not match the signing account")
        old_key = payload.get("oldKey")
        old_matches = False
        if isinstance(old_key, dict):
            try:
                old_matches = jwk_thumbprint(old_key) == account.key_thumbprint
            except (JWKError, ValueError):
                old_matches = False
        if not old_matches:
            raise errors.Unauthorized("keyChange oldKey is not this account's current key")
        self._pa.check_account_key(new_key)
        new_thumbprint = jwk_thumbprint(inner.jwk)
        if new_thumbprint == account.key_thumbprint:
            raise errors.Malformed("the new key is the same as the current key")
        try:
            return self._sa.change_account_key(
                account.id, account.key_thumbprint, new_thumbprint, canonical_jwk_json(inner.jwk)
            )
        except KeyInUse as exc:
            conflict = errors.Conflict("the new key is already in use by another account")
            conflict.location = self._urls.account(exc.account_id)  # type: ignore[attr-defined]
            raise conflict from None
        except StaleState:
            raise errors.Unauthorized("account changed concurrently; retry") from None


# RFC 8555 §7.3.4 leaves the MAC key's size to the CA; 256 bits, as for HS256.
EAB_HMAC_KEY_BYTES = 32
_EAB_KEY_DRAWS = 64


def new_eab_key(clock: Clock, entropy: Entropy) -> EabKeyRecord:
    """A fresh, unbound EAB key pair (kid, HMAC key) for an operator to hand out.

    The base64url HMAC key never starts with "-": clients parse
    ``--eab-hmac-key -xyz...`` as a missing value plus an unknown option
    (certbot: "expected one argument"), one key in 64. Redrawing costs
    log2(64/63) = 0.02 bits of the 256."""
    for _ in range(_EAB_KEY_DRAWS):
        hmac_key = entropy.token_bytes(EAB_HMAC_KEY_BYTES)
        if not b64url_encode(hmac_key).startswith("-"):
            return EabKeyRecord(
                kid="kid-" + b64url_encode(entropy.token_bytes(12)),
                hmac_key=hmac_key,
                created_at=clock.now(),
                account_id=None,
            )
    raise RuntimeError("the entropy source keeps returning keys that start with '-'")
