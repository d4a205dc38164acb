"""Who holds an issuing key: the ``Signer`` seam (issue 5: file or HSM).

The CA never hands an issuing private key to ``cryptography``'s builders.
It builds every certificate and CRL with a throwaway key of the same family
(``signing.py``), lints that, and only then asks a ``Signer`` to sign the
to-be-signed bytes. A ``Signer`` is therefore only "sign these bytes": a key
file in memory (``FileSigner``) or a key that never leaves a PKCS#11 token
(``pkcs11.Pkcs11Signer``).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

SignatureHash = hashes.SHA256 | hashes.SHA384


class SignerError(Exception):
    """The signer could not sign (token gone, wrong PIN, unsupported key)."""


class Signer(Protocol):
    @property
    def key_id(self) -> str:
        """Stable and printable, for logs and audit records (never secret)."""
        ...

    @property
    def public_key(self) -> CertificateIssuerPublicKeyTypes: ...

    @property
    def hash_algorithm(self) -> SignatureHash:
        """BR 7.1.3.2: SHA-384 for P-384 keys, SHA-256 for P-256 and RSA."""
        ...

    def sign(self, tbs: bytes) -> bytes:
        """The X.509 signatureValue over ``tbs`` hashed with
        ``hash_algorithm``: PKCS#1 v1.5 for RSA (RFC 8017 §8.2), a DER
        ECDSA-Sig-Value for ECDSA (RFC 3279 §2.2.3). Raises SignerError."""
        ...


def hash_for(public_key: CertificateIssuerPublicKeyTypes) -> SignatureHash:
    """BR 7.1.3.2's pairing of key and digest."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.key_size >= 384:
        return hashes.SHA384()
    if isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return hashes.SHA256()
    raise SignerError(f"issuing keys are RSA or ECDSA, not {type(public_key).__name__}")


def spki_fingerprint(public_key: CertificateIssuerPublicKeyTypes) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo: how audit records name a key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def verify_signature(
    public_key: CertificateIssuerPublicKeyTypes, signature: bytes, tbs: bytes
) -> bool:
    """True when ``signature`` is ``public_key``'s over ``tbs``."""
    from cryptography.exceptions import InvalidSignature

    algorithm = hash_for(public_key)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, tbs, padding.PKCS1v15(), algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, tbs, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


class FileSigner:
    """An issuing key held in memory, loaded from a 0600 key file."""

    def __init__(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, key_id: str) -> None:
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SignerError(f"issuing keys are RSA or ECDSA, not {type(key).__name__}")
        self._key = key
        self._public = key.public_key()
        self._hash = hash_for(self._public)
        self._key_id = key_id

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._public

    @property
    def hash_algorithm(self) -> SignatureHash:
        return self._hash

    @property
    def private_key(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        """For the development hierarchy's own bootstrapping only."""
        return self._key

    def sign(self, tbs: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(tbs, padding.PKCS1v15(), self._hash)
        return self._key.sign(tbs, ec.ECDSA(self._hash))
