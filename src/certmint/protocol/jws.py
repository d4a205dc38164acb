"""JSON Web Signature for ACME requests (RFC 7515, RFC 7518, RFC 8037, RFC 8555 §6.2).

ACME uses only the flattened JSON serialization with a protected header.
``parse_jws`` checks the shape of an untrusted body; ``verify_jws`` checks the
signature against a key the caller chose (the server decides between ``kid``
and ``jwk``). Signing helpers serve the agent and the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from certmint.protocol.b64 import b64url_decode, b64url_encode
from certmint.protocol.jwk import (
    PrivateKey,
    PublicKey,
    alg_for_key,
    jwk_from_public_key,
)
from certmint.protocol.strictjson import strict_json_loads

ALLOWED_ALGS: tuple[str, ...] = ("RS256", "ES256", "ES384", "ES512", "EdDSA")
# External Account Binding only (RFC 8555 §7.3.4): MAC algorithms.
EAB_ALGS: tuple[str, ...] = ("HS256", "HS384", "HS512")

MALFORMED = "malformed"
BAD_SIGNATURE_ALGORITHM = "badSignatureAlgorithm"
BAD_SIGNATURE = "badSignature"

_HMAC_HASH = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
# alg → (hash, coordinate octets) for ECDSA (RFC 7518 §3.4); the curve itself
# is pinned by alg_for_key before any of this is used.
_ECDSA_PARAMS: dict[str, tuple[hashes.HashAlgorithm, int]] = {
    "ES256": (hashes.SHA256(), 32),
    "ES384": (hashes.SHA384(), 48),
    "ES512": (hashes.SHA512(), 66),
}
_FLATTENED_MEMBERS = frozenset({"protected", "payload", "signature"})


class JWSError(ValueError):
    """A JWS we refuse; ``kind`` is the ACME problem type to answer with."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class ParsedJWS:
    protected: dict[str, Any]
    protected_b64: str
    payload_b64: str
    payload: bytes
    signature: bytes
    alg: str
    nonce: str | None
    url: str | None
    kid: str | None
    jwk: dict[str, Any] | None

    @property
    def is_post_as_get(self) -> bool:
        """RFC 8555 §6.3: POST-as-GET carries the empty string as payload."""
        return self.payload_b64 == ""

    @property
    def signing_input(self) -> bytes:
        """RFC 7515 §5.2 step 8: ASCII(protected "." payload)."""
        return f"{self.protected_b64}.{self.payload_b64}".encode("ascii")

    def payload_json(self) -> Any:
        if not self.payload:
            raise JWSError(MALFORMED, "request payload is empty but a JSON object was expected")
        try:
            return strict_json_loads(self.payload)
        except ValueError as exc:
            raise JWSError(MALFORMED, f"request payload is not valid JSON: {exc}") from None


def _decode_member(body: dict[str, Any], name: str) -> tuple[str, bytes]:
    value = body[name]
    if not isinstance(value, str):
        raise JWSError(MALFORMED, f'JWS member "{name}" is not a string')
    try:
        return value, b64url_decode(value)
    except ValueError as exc:
        raise JWSError(MALFORMED, f'JWS member "{name}" is not valid base64url: {exc}') from None


def _optional_str(header: dict[str, Any], name: str) -> str | None:
    value = header.get(name)
    if value is not None and not isinstance(value, str):
        raise JWSError(MALFORMED, f'protected header "{name}" is not a string')
    return value


def parse_jws(body: bytes | str) -> ParsedJWS:
    """Check the shape of a flattened JWS (RFC 8555 §6.2); no signature check."""
    try:
        outer = strict_json_loads(body)
    except ValueError as exc:
        raise JWSError(MALFORMED, f"request body is not valid JSON: {exc}") from None
    if not isinstance(outer, dict):
        raise JWSError(MALFORMED, "request body is not a JSON object")
    # RFC 8555 §6.2: flattened serialization only, no unprotected header, no
    # general serialization with multiple signatures.
    unexpected = sorted(set(outer) - _FLATTENED_MEMBERS)
    if unexpected:
        raise JWSError(
            MALFORMED,
            "JWS must be flattened JSON with only protected, payload and signature; "
            f"unexpected member(s): {', '.join(unexpected)}",
        )
    missing = sorted(_FLATTENED_MEMBERS - set(outer))
    if missing:
        raise JWSError(MALFORMED, f"JWS is missing member(s): {', '.join(missing)}")

    protected_b64, protected_raw = _decode_member(outer, "protected")
    payload_b64, payload = _decode_member(outer, "payload")
    _, signature = _decode_member(outer, "signature")

    try:
        header = strict_json_loads(protected_raw)
    except ValueError as exc:
        raise JWSError(MALFORMED, f"protected header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise JWSError(MALFORMED, "protected header is not a JSON object")

    alg = header.get("alg")
    if not isinstance(alg, str):
        raise JWSError(MALFORMED, 'protected header "alg" is missing or not a string')
    if alg == "none":
        raise JWSError(BAD_SIGNATURE_ALGORITHM, 'the "none" algorithm is never accepted')
    # RFC 7515 §4.1.11: a recipient MUST reject extensions it does not
    # understand; we understand none, so any "crit" is refused.
    if "crit" in header:
        raise JWSError(MALFORMED, 'protected header "crit" lists extensions we do not support')
    # RFC 7797 unencoded payloads change what is signed; ACME never uses them.
    if "b64" in header:
        raise JWSError(MALFORMED, 'protected header "b64" (RFC 7797) is not supported')
    if "jwk" in header and "kid" in header:
        raise JWSError(MALFORMED, 'protected header must not contain both "jwk" and "kid"')

    jwk = header.get("jwk")
    if "jwk" in header and not isinstance(jwk, dict):
        raise JWSError(MALFORMED, 'protected header "jwk" is not a JSON object')

    return ParsedJWS(
        protected=header,
        protected_b64=protected_b64,
        payload_b64=payload_b64,
        payload=payload,
        signature=signature,
        alg=alg,
        nonce=_optional_str(header, "nonce"),
        url=_optional_str(header, "url"),
        kid=_optional_str(header, "kid"),
        jwk=jwk,
    )


def _check_alg_matches_key(alg: str, key: PublicKey) -> None:
    expected = alg_for_key(key)
    if alg != expected:
        raise JWSError(
            BAD_SIGNATURE_ALGORITHM,
            f'algorithm "{alg}" does not match the key (this key signs with "{expected}")',
        )


def verify_jws(
    parsed: ParsedJWS, key: PublicKey, allowed_algs: tuple[str, ...] = ALLOWED_ALGS
) -> None:
    """Verify an asymmetric signature; raise ``JWSError`` if it does not hold."""
    # HMAC is refused here even if a caller lists it: a MAC "verified" with a
    # public key as secret is the classic JOSE algorithm-confusion attack.
    if parsed.alg not in allowed_algs or parsed.alg not in ALLOWED_ALGS:
        raise JWSError(
            BAD_SIGNATURE_ALGORITHM,
            f'algorithm "{parsed.alg}" is not accepted '
            f"(accepted: {', '.join(a for a in allowed_algs if a in ALLOWED_ALGS)})",
        )
    _check_alg_matches_key(parsed.alg, key)
    data = parsed.signing_input
    sig = parsed.signature
    try:
        if isinstance(key, rsa.RSAPublicKey):
            # RFC 8017 §8.2.2 step 1: the signature is exactly k octets.
            if len(sig) != (key.key_size + 7) // 8:
                raise InvalidSignature
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            hash_alg, size = _ECDSA_PARAMS[parsed.alg]
            # RFC 7518 §3.4: fixed-length R || S, never DER.
            if len(sig) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(sig[:size], "big")
            s = int.from_bytes(sig[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_alg))
        else:
            key.verify(sig, data)
    except InvalidSignature:
        raise JWSError(BAD_SIGNATURE, "JWS signature is invalid") from None


def verify_hmac_jws(parsed: ParsedJWS, hmac_key: bytes) -> None:
    """Verify an External Account Binding MAC (RFC 8555 §7.3.4)."""
    hash_fn = _HMAC_HASH.get(parsed.alg)
    if hash_fn is None:
        raise JWSError(
            BAD_SIGNATURE_ALGORITHM,
            f'external account binding algorithm "{parsed.alg}" is not accepted '
            f"(accepted: {', '.join(EAB_ALGS)})",
        )
    if not hmac_key:
        raise JWSError(BAD_SIGNATURE, "external account binding key is empty")
    expected = hmac.new(hmac_key, parsed.signing_input, hash_fn).digest()
    if not hmac.compare_digest(expected, parsed.signature):
        raise JWSError(BAD_SIGNATURE, "external account binding signature is invalid")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _sign_bytes(key: PrivateKey, alg: str, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        hash_alg, size = _ECDSA_PARAMS[alg]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_alg)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise TypeError(f"unsupported key type {type(key).__name__}")


def sign_jws(key: PrivateKey, payload: bytes, protected: dict[str, Any]) -> dict[str, str]:
    """Flattened JWS over ``payload``; ``alg`` is filled from the key if absent."""
    header = dict(protected)
    expected_alg = alg_for_key(key)
    header.setdefault("alg", expected_alg)
    if header["alg"] != expected_alg:
        raise ValueError(f'algorithm "{header["alg"]}" does not match the key ({expected_alg})')
    protected_b64 = b64url_encode(_json_bytes(header))
    payload_b64 = b64url_encode(payload)
    signing_input = f"{protected_b64}.{payload_b64}".encode("ascii")
    signature = _sign_bytes(key, expected_alg, signing_input)
    return {
        "protected": protected_b64,
        "payload": payload_b64,
        "signature": b64url_encode(signature),
    }


def sign_acme_request(
    key: PrivateKey,
    payload: Any | None,
    *,
    url: str,
    nonce: str | None,
    kid: str | None = None,
) -> bytes:
    """An ACME request body (RFC 8555 §6.2). ``payload=None`` is POST-as-GET."""
    protected: dict[str, Any] = {"url": url}
    if nonce is not None:
        protected["nonce"] = nonce
    if kid is not None:
        protected["kid"] = kid
    else:
        protected["jwk"] = jwk_from_public_key(key.public_key())
    payload_bytes = b"" if payload is None else _json_bytes(payload)
    return _json_bytes(sign_jws(key, payload_bytes, protected))


def sign_eab(
    account_jwk: dict[str, Any], kid: str, hmac_key: bytes, url: str, alg: str = "HS256"
) -> dict[str, str]:
    """The inner External Account Binding JWS (RFC 8555 §7.3.4)."""
    hash_fn = _HMAC_HASH.get(alg)
    if hash_fn is None:
        raise ValueError(f'unsupported external account binding algorithm "{alg}"')
    protected_b64 = b64url_encode(_json_bytes({"alg": alg, "kid": kid, "url": url}))
    payload_b64 = b64url_encode(_json_bytes(account_jwk))
    mac = hmac.new(hmac_key, f"{protected_b64}.{payload_b64}".encode("ascii"), hash_fn).digest()
    return {"protected": protected_b64, "payload": payload_b64, "signature": b64url_encode(mac)}


def sign_key_change(
    old_key: PrivateKey | PublicKey, new_key: PrivateKey, account_url: str, url: str
) -> dict[str, str]:
    """The inner keyChange JWS (RFC 8555 §7.3.5): signed by the NEW key.

    Its protected header carries the new key as ``jwk`` and the same ``url``
    as the outer request, and no nonce; its payload names the account and the
    old key.
    """
    old_public: PublicKey = (
        old_key.public_key()
        if isinstance(
            old_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
        )
        else old_key
    )
    payload = {"account": account_url, "oldKey": jwk_from_public_key(old_public)}
    protected = {"jwk": jwk_from_public_key(new_key.public_key()), "url": url}
    return sign_jws(new_key, _json_bytes(payload), protected)
