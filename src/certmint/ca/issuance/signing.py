"""Lint before sign: nothing unlinted is ever signed by an issuing key.

Every certificate and CRL is first built and signed with a throwaway key of
the issuing key's family and size (Boulder does the same with its "lint
key"), so the linter sees the exact to-be-signed bytes, extensions and
signature algorithm the real one will carry. Only when the lint hook
returns does the ``Signer`` sign those TBS bytes; the real signature is then
spliced in place of the throwaway one and verified against the issuer's
public key before anything is returned.

X.509 certificates and CRLs share one outer shape (RFC 5280 §4.1 and §5.1)::

    SEQUENCE { tbs, signatureAlgorithm AlgorithmIdentifier, signatureValue BIT STRING }

so one splice serves both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from certmint.ca.issuance.signer import Signer, SignerError, verify_signature

CertificateLint = Callable[[x509.Certificate], None]
CrlLint = Callable[[x509.CertificateRevocationList], None]


class LintError(Exception):
    """The linter refused what was about to be signed; nothing was signed."""

    def __init__(self, what: str, findings: tuple[str, ...]) -> None:
        super().__init__(f"{what} failed lint: " + "; ".join(findings))
        self.findings = findings


class SigningError(Exception):
    """The signer failed or returned a signature that does not verify."""


LintKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_lint_keys: dict[tuple[str, int], LintKey] = {}
_lint_keys_lock = threading.Lock()


def _lint_key(
    public_key: CertificateIssuerPublicKeyTypes,
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """A throwaway key shaped like the issuing key, made once per process.

    Not secret and never trusted: what it signs is only ever linted. Same
    size, so the linted signature field has the real one's length too."""
    if isinstance(public_key, rsa.RSAPublicKey):
        shape = ("rsa", public_key.key_size)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        shape = (public_key.curve.name, public_key.curve.key_size)
    else:
        raise SignerError(f"issuing keys are RSA or ECDSA, not {type(public_key).__name__}")
    with _lint_keys_lock:
        key = _lint_keys.get(shape)
        if key is None:
            if isinstance(public_key, rsa.RSAPublicKey):
                key = rsa.generate_private_key(public_exponent=65537, key_size=shape[1])
            else:
                assert isinstance(public_key, ec.EllipticCurvePublicKey)
                key = ec.generate_private_key(type(public_key.curve)())
            _lint_keys[shape] = key
        return key


def sign_certificate(
    builder: x509.CertificateBuilder, signer: Signer, lint: CertificateLint | None = None
) -> x509.Certificate:
    """Build, lint (``lint`` raises ``LintError`` to refuse), then sign."""
    try:
        draft = builder.sign(_lint_key(signer.public_key), signer.hash_algorithm)
    except ValueError as exc:
        raise SigningError(f"cannot build the certificate: {exc}") from None
    if lint is not None:
        lint(draft)
    der = _resigned(draft.public_bytes(serialization.Encoding.DER), signer)
    return x509.load_der_x509_certificate(der)


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, signer: Signer, lint: CrlLint | None = None
) -> x509.CertificateRevocationList:
    """The same for a CRL (RFC 5280 §5)."""
    try:
        draft = builder.sign(_lint_key(signer.public_key), signer.hash_algorithm)
    except ValueError as exc:
        raise SigningError(f"cannot build the CRL: {exc}") from None
    if lint is not None:
        lint(draft)
    der = _resigned(draft.public_bytes(serialization.Encoding.DER), signer)
    return x509.load_der_x509_crl(der)


def _signed(signer: Signer, tbs: bytes) -> bytes:
    try:
        signature = signer.sign(tbs)
    except SignerError as exc:
        raise SigningError(f"signer {signer.key_id}: {exc}") from None
    # A wrong key, a token fault or a corrupted signature must never reach a
    # subscriber: check it the way every relying party will.
    if not verify_signature(signer.public_key, signature, tbs):
        raise SigningError(f"signer {signer.key_id} returned a signature that does not verify")
    return signature


# -- DER splice --------------------------------------------------------------


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _read_tlv(data: bytes, offset: int) -> tuple[int, int]:
    """(start of content, end of element) of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise SigningError("truncated DER")
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or position + count > len(data):
            raise SigningError("unsupported DER length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    end = position + length
    if end > len(data):
        raise SigningError("truncated DER")
    return position, end


def _resigned(draft_der: bytes, signer: Signer) -> bytes:
    """``draft_der`` with its signatureValue replaced by ``signer``'s over
    the very TBS bytes that were linted (sliced out of the draft, not
    re-encoded: a 1M-entry CRL is 46 MB)."""
    if not draft_der or draft_der[0] != 0x30:
        raise SigningError("not a DER SEQUENCE")
    content, end = _read_tlv(draft_der, 0)
    if end != len(draft_der) or draft_der[content] != 0x30:
        raise SigningError("the draft does not start with its TBS")
    _, tbs_end = _read_tlv(draft_der, content)
    tbs = draft_der[content:tbs_end]
    if tbs_end >= end or draft_der[tbs_end] != 0x30:
        raise SigningError("no AlgorithmIdentifier after the TBS")
    _, algorithm_end = _read_tlv(draft_der, tbs_end)
    algorithm = draft_der[tbs_end:algorithm_end]
    signature = _signed(signer, tbs)
    bit_string = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    body = tbs + algorithm + bit_string
    return b"\x30" + _der_length(len(body)) + body
