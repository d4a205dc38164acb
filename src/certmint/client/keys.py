"""The agent's keys: certificate keys, account keys as JWK files, and CSRs.

Certificate keys follow certbot's options (``--key-type rsa|ecdsa``,
``--rsa-key-size``, ``--elliptic-curve secp256r1|secp384r1|secp521r1``) and
are written as unencrypted PKCS#8 PEM, as certbot writes ``privkey.pem``.
Account keys are stored as a JWK with its private members (RFC 7517,
RFC 7518 §6.2.2 and §6.3.2), the format of certbot's ``private_key.json``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certmint.client.errors import ClientError
from certmint.protocol.b64 import b64url_decode, b64url_encode
from certmint.protocol.jwk import (
    JWKError,
    PrivateKey,
    jwk_from_public_key,
    public_key_from_jwk,
)

CertificateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# certbot's --elliptic-curve names → curve and JWK coordinate size (RFC 7518 §6.2.1.1).
_CURVES: dict[str, tuple[ec.EllipticCurve, str, int]] = {
    "secp256r1": (ec.SECP256R1(), "P-256", 32),
    "secp384r1": (ec.SECP384R1(), "P-384", 48),
    "secp521r1": (ec.SECP521R1(), "P-521", 66),
}
_CURVE_BY_JWK_NAME = {jwk_name: name for name, (_, jwk_name, _) in _CURVES.items()}
# Baseline Requirements §6.1.5: at least 2048 bits, modulus a multiple of 8.
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
_RSA_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")


def generate_key(key_type: str, rsa_key_size: int, elliptic_curve: str) -> CertificateKey:
    """A fresh certificate key, as certbot's --key-type/--rsa-key-size/--elliptic-curve."""
    if key_type == "rsa":
        if not RSA_MIN_BITS <= rsa_key_size <= RSA_MAX_BITS or rsa_key_size % 8:
            raise ClientError(
                f"--rsa-key-size {rsa_key_size} is not a multiple of 8 between "
                f"{RSA_MIN_BITS} and {RSA_MAX_BITS}"
            )
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_key_size)
    if key_type == "ecdsa":
        curve = _CURVES.get(elliptic_curve.lower())
        if curve is None:
            raise ClientError(
                f"--elliptic-curve {elliptic_curve} is not one of {', '.join(_CURVES)}"
            )
        return ec.generate_private_key(curve[0])
    raise ClientError(f"--key-type {key_type} is neither rsa nor ecdsa")


def key_to_pem(key: CertificateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``), as certbot writes."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_from_pem(pem: bytes) -> CertificateKey:
    """A certificate key from an unencrypted PEM file (PKCS#8 or traditional)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ClientError(f"the private key does not load: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ClientError(f"unsupported private key type {type(key).__name__}")
    return key


def _int_to_b64(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(length, "big"))


def _b64_to_int(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ClientError(f'the account key JWK lacks the private member "{name}"')
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except ValueError as exc:
        raise ClientError(f'the account key JWK member "{name}" is not base64url: {exc}') from None


def private_key_to_jwk(key: PrivateKey) -> dict[str, str]:
    """The JWK with private members: RFC 7518 §6.3.2 (RSA), §6.2.2 (EC), RFC 8037 §2."""
    jwk = jwk_from_public_key(key.public_key())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        jwk["d"] = b64url_encode(raw)
        return jwk
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        jwk.update(
            d=_int_to_b64(numbers.d),
            p=_int_to_b64(numbers.p),
            q=_int_to_b64(numbers.q),
            dp=_int_to_b64(numbers.dmp1),
            dq=_int_to_b64(numbers.dmq1),
            qi=_int_to_b64(numbers.iqmp),
        )
        return jwk
    size = _CURVES[key.curve.name][2]
    # RFC 7518 §6.2.2.1: "d" is the full coordinate size, leading zeros kept.
    jwk["d"] = _int_to_b64(key.private_numbers().private_value, size)
    return jwk


def private_key_from_jwk(jwk: Mapping[str, Any]) -> PrivateKey:
    """A private key from a JWK with private members; the public members must match."""
    try:
        public_key = public_key_from_jwk(
            {k: v for k, v in jwk.items() if k in ("kty", "crv", "n", "e", "x", "y")},
        )
    except JWKError as exc:
        raise ClientError(f"the account key JWK is not usable: {exc}") from None
    if isinstance(public_key, rsa.RSAPublicKey):
        public_numbers = public_key.public_numbers()
        d = _b64_to_int(jwk, "d")
        if all(isinstance(jwk.get(m), str) for m in _RSA_PRIVATE_MEMBERS):
            p, q = _b64_to_int(jwk, "p"), _b64_to_int(jwk, "q")
            dmp1, dmq1, iqmp = (
                _b64_to_int(jwk, "dp"),
                _b64_to_int(jwk, "dq"),
                _b64_to_int(jwk, "qi"),
            )
        else:
            # RFC 7518 §6.3.2: the CRT members are optional; recover them.
            p, q = rsa.rsa_recover_prime_factors(public_numbers.n, public_numbers.e, d)
            dmp1, dmq1, iqmp = (
                rsa.rsa_crt_dmp1(d, p),
                rsa.rsa_crt_dmq1(d, q),
                rsa.rsa_crt_iqmp(p, q),
            )
        try:
            return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, public_numbers).private_key()
        except ValueError as exc:
            raise ClientError(f"the account key JWK is inconsistent: {exc}") from None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve_name = _CURVE_BY_JWK_NAME[str(jwk["crv"])]
        try:
            key = ec.derive_private_key(_b64_to_int(jwk, "d"), _CURVES[curve_name][0])
        except ValueError as exc:
            raise ClientError(f"the account key JWK is inconsistent: {exc}") from None
        if key.public_key().public_numbers() != public_key.public_numbers():
            raise ClientError("the account key JWK's private and public parts do not match")
        return key
    seed = jwk.get("d")
    try:
        if not isinstance(seed, str):
            raise ValueError('no "d" member')
        okp = ed25519.Ed25519PrivateKey.from_private_bytes(b64url_decode(seed))
    except ValueError as exc:
        raise ClientError(f"the account key JWK is not usable: {exc}") from None
    if jwk_from_public_key(okp.public_key()) != jwk_from_public_key(public_key):
        raise ClientError("the account key JWK's private and public parts do not match")
    return okp


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_csr(key: CertificateKey, names: Sequence[str]) -> bytes:
    """A DER CSR for ``names`` (RFC 2986; RFC 8555 §7.4).

    The names go in subjectAltName only: the Baseline Requirements (§7.1.4.3)
    make the common name optional and the CA decides it; certbot does the same.
    IP addresses become iPAddress entries (RFC 8738).
    """
    if not names:
        raise ClientError("a certificate needs at least one name")
    san = x509.SubjectAlternativeName([_general_name(name) for name in names])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)
