"""JSON Web Keys for ACME account keys (RFC 7517, RFC 7518 §6, RFC 8037, RFC 7638).

Every JWK a client sends is hostile input: it decides which account a request
acts for. ``public_key_from_jwk`` accepts only public, asymmetric keys of the
kinds we can verify, in their one canonical spelling, so that one key always
has one thumbprint (RFC 7638 §3) and therefore one account.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from certmint.protocol.b64 import b64url_decode, b64url_encode

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# RFC 7518 §6.2.1.1 curve names → (curve, coordinate length in octets).
_EC_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_CURVE_NAME_BY_OPENSSL = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

# Members that only a private or symmetric JWK carries (RFC 7518 §6.2.2,
# §6.3.2, §6.4; RFC 8037 §2). A client that sends them has leaked its key.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

# Account keys: below 2048 bits is breakable (Baseline Requirements §6.1.5);
# above 8192 is a denial-of-service lever on verification cost.
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
# NIST SP 800-89 §5.3.3 / FIPS 186-5: 65537 ≤ e < 2^256, e odd.
RSA_MIN_EXPONENT = 65537
RSA_MAX_EXPONENT_BITS = 256

_ALG_FOR_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


class JWKError(ValueError):
    """A JWK that is malformed, private, weak or of a kind we do not accept."""


def _int_to_b64(value: int) -> str:
    # RFC 7518 §6.3.1.1: unsigned big-endian, minimum number of octets.
    return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _curve_name(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    name = _CURVE_NAME_BY_OPENSSL.get(key.curve.name)
    if name is None:
        raise JWKError(f"unsupported elliptic curve {key.curve.name}")
    return name


def jwk_from_public_key(key: PublicKey) -> dict[str, str]:
    """The RFC 7638 §3.2 required members only — the form we store and hash."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"e": _int_to_b64(numbers.e), "kty": "RSA", "n": _int_to_b64(numbers.n)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _curve_name(key)
        size = _EC_CURVES[crv][1]
        ec_numbers = key.public_numbers()
        # RFC 7518 §6.2.1.2: coordinates are the full size of the field.
        return {
            "crv": crv,
            "kty": "EC",
            "x": b64url_encode(ec_numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(ec_numbers.y.to_bytes(size, "big")),
        }
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    raise JWKError(f"unsupported key type {type(key).__name__}")


def _member(jwk: dict[str, Any], name: str) -> str:
    value = jwk.get(name)
    if value is None:
        raise JWKError(f'JWK is missing the "{name}" member')
    if not isinstance(value, str):
        raise JWKError(f'JWK member "{name}" is not a string')
    return value


def _member_bytes(jwk: dict[str, Any], name: str) -> bytes:
    try:
        return b64url_decode(_member(jwk, name))
    except JWKError:
        raise
    except ValueError as exc:
        raise JWKError(f'JWK member "{name}" is not canonical base64url: {exc}') from None


def _rsa_from_jwk(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    n_bytes = _member_bytes(jwk, "n")
    e_bytes = _member_bytes(jwk, "e")
    # RFC 7518 §6.3.1.1 "MUST utilize the minimum number of octets": a leading
    # zero would give the same key a second thumbprint.
    for name, raw in (("n", n_bytes), ("e", e_bytes)):
        if not raw or raw[0] == 0:
            raise JWKError(f'RSA JWK member "{name}" is empty or has leading zero octets')
    n = int.from_bytes(n_bytes, "big")
    e = int.from_bytes(e_bytes, "big")
    if not RSA_MIN_BITS <= n.bit_length() <= RSA_MAX_BITS:
        raise JWKError(
            f"RSA modulus is {n.bit_length()} bits; accepted sizes are "
            f"{RSA_MIN_BITS} to {RSA_MAX_BITS} bits"
        )
    if n % 2 == 0:
        raise JWKError("RSA modulus is even")
    if e % 2 == 0 or e < RSA_MIN_EXPONENT or e.bit_length() > RSA_MAX_EXPONENT_BITS:
        raise JWKError(f"RSA public exponent {e} is not an odd number in [65537, 2^256)")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise JWKError(f"invalid RSA public key: {exc}") from None


def _ec_from_jwk(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    crv = _member(jwk, "crv")
    if crv not in _EC_CURVES:
        raise JWKError(f'unsupported EC curve "{crv}" (accepted: P-256, P-384, P-521)')
    curve, size = _EC_CURVES[crv]
    x = _member_bytes(jwk, "x")
    y = _member_bytes(jwk, "y")
    if len(x) != size or len(y) != size:
        raise JWKError(f"EC JWK coordinates for {crv} must be exactly {size} octets each")
    try:
        # OpenSSL checks the coordinates are field elements and on the curve.
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    except ValueError:
        raise JWKError(f"EC JWK point is not on curve {crv}") from None


def _okp_from_jwk(jwk: dict[str, Any]) -> ed25519.Ed25519PublicKey:
    crv = _member(jwk, "crv")
    if crv != "Ed25519":
        raise JWKError(f'unsupported OKP curve "{crv}" (accepted: Ed25519)')
    x = _member_bytes(jwk, "x")
    if len(x) != 32:
        raise JWKError('Ed25519 JWK member "x" must be exactly 32 octets')
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(x)
    except ValueError as exc:  # pragma: no cover - length checked above
        raise JWKError(f"invalid Ed25519 public key: {exc}") from None


def public_key_from_jwk(jwk: object) -> PublicKey:
    """Turn an untrusted JWK into a public key, or raise ``JWKError``."""
    if not isinstance(jwk, dict):
        raise JWKError("JWK is not a JSON object")
    present_private = [m for m in _PRIVATE_MEMBERS if m in jwk]
    if present_private:
        raise JWKError(
            "JWK contains private or symmetric key material "
            f"({', '.join(present_private)}); send only the public key"
        )
    kty = jwk.get("kty")
    if not isinstance(kty, str):
        raise JWKError('JWK "kty" is missing or not a string')
    if kty == "RSA":
        return _rsa_from_jwk(jwk)
    if kty == "EC":
        return _ec_from_jwk(jwk)
    if kty == "OKP":
        return _okp_from_jwk(jwk)
    if kty == "oct":
        raise JWKError("symmetric (oct) keys cannot be account keys")
    raise JWKError(f'unsupported JWK key type "{kty}" (accepted: RSA, EC, OKP)')


def _as_public_key(jwk: dict[str, Any] | PublicKey) -> PublicKey:
    if isinstance(jwk, dict):
        return public_key_from_jwk(jwk)
    return jwk


def canonical_jwk_json(jwk: dict[str, Any] | PublicKey) -> str:
    """RFC 7638 §3.3 input: required members, sorted, no whitespace.

    A dict is validated first (``JWKError`` if unacceptable), so the result is
    also the canonical text for storage.
    """
    required = jwk_from_public_key(_as_public_key(jwk))
    return json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def jwk_thumbprint(jwk: dict[str, Any] | PublicKey) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url (also RFC 8555 §8.1's input)."""
    digest = hashlib.sha256(canonical_jwk_json(jwk).encode("utf-8")).digest()
    return b64url_encode(digest)


def generate_private_key(alg: str) -> PrivateKey:
    """A fresh account or challenge key for a JWS algorithm name."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "ES512":
        return ec.generate_private_key(ec.SECP521R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f'cannot generate a key for algorithm "{alg}"')


def alg_for_key(key: PrivateKey | PublicKey) -> str:
    """The one JWS algorithm we use with this key (RFC 7518 §3.1, RFC 8037 §3.1)."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return _ALG_FOR_CURVE[_curve_name(key)]
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise JWKError(f"unsupported key type {type(key).__name__}")


# These two accept any certificate key type (a superset of PublicKey) so a key
# read from a certificate or CSR can be compared without narrowing first.
def _spki_der(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_keys_equal(a: CertificatePublicKeyTypes, b: CertificatePublicKeyTypes) -> bool:
    """Same key material, compared on SubjectPublicKeyInfo DER."""
    return _spki_der(a) == _spki_der(b)


def spki_sha256_hex(key: CertificatePublicKeyTypes) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo DER (e.g. for blocked-key lookups)."""
    return hashlib.sha256(_spki_der(key)).hexdigest()
