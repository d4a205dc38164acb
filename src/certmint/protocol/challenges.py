"""Challenge arithmetic shared by the VA and the agent (RFC 8555 §8, RFC 8737).

Everything here is a pure function of a token and an account key thumbprint;
the network side lives in the VA and in the agent's plugins.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from certmint.protocol.b64 import b64url_encode
from certmint.protocol.jwk import PrivateKey

if TYPE_CHECKING:
    # Only the protocol type: this package stays free of runtime imports.
    from certmint.runtime import Entropy

# RFC 8555 §8.1: tokens carry at least 128 bits of entropy; we use 256.
TOKEN_BYTES = 32
_MIN_TOKEN_CHARS = 22  # 128 bits in base64url
_MAX_TOKEN_CHARS = 256
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")

HTTP01_PATH_PREFIX = "/.well-known/acme-challenge/"  # RFC 8555 §8.3
DNS01_LABEL = "_acme-challenge"  # RFC 8555 §8.4

ACME_TLS_ALPN_PROTOCOL = "acme-tls/1"  # RFC 8737 §6.2
ID_PE_ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 §6.1

# Without a clock, the challenge certificate is valid "forever" (RFC 5280
# §4.1.2.5: 99991231235959Z means no well-defined expiration). RFC 8737
# validators do not check its validity period.
_FOREVER_NOT_BEFORE = datetime(2000, 1, 1, tzinfo=UTC)
_FOREVER_NOT_AFTER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def new_token(entropy: Entropy) -> str:
    """A fresh challenge token: base64url of ``TOKEN_BYTES`` random octets."""
    return b64url_encode(entropy.token_bytes(TOKEN_BYTES))


def is_valid_token(token: str) -> bool:
    """RFC 8555 §8.3/§8.4: base64url alphabet only, ≥128 bits. A token ends up
    in a URL path and a file name, so nothing else may pass."""
    return (
        isinstance(token, str)
        and _MIN_TOKEN_CHARS <= len(token) <= _MAX_TOKEN_CHARS
        and _TOKEN_ALPHABET.fullmatch(token) is not None
    )


def key_authorization(token: str, thumbprint: str) -> str:
    """RFC 8555 §8.1: token || '.' || base64url(JWK thumbprint)."""
    return f"{token}.{thumbprint}"


def http01_path(token: str) -> str:
    """RFC 8555 §8.3: the path the VA fetches over HTTP on port 80."""
    return HTTP01_PATH_PREFIX + token


def dns01_record_name(domain: str) -> str:
    """RFC 8555 §8.4: ``_acme-challenge.<domain>``; a wildcard's base name is used."""
    base = domain.removeprefix("*.").rstrip(".")
    return f"{DNS01_LABEL}.{base}"


def dns01_txt_value(key_authorization: str) -> str:
    """RFC 8555 §8.4: base64url(SHA-256(key authorization))."""
    return b64url_encode(hashlib.sha256(key_authorization.encode("utf-8")).digest())


def tls_alpn01_extension_value(key_authorization: str) -> bytes:
    """RFC 8737 §3: the acmeIdentifier extension's value, the DER encoding of
    ``Authorization ::= OCTET STRING (SIZE (32))`` holding SHA-256(key authz)."""
    digest = hashlib.sha256(key_authorization.encode("utf-8")).digest()
    return b"\x04\x20" + digest


def _san_for(identifier: str) -> x509.GeneralName:
    # RFC 8738 §6: an IP identifier is proven with an iPAddress SAN.
    try:
        return x509.IPAddress(ipaddress.ip_address(identifier))
    except ValueError:
        return x509.DNSName(identifier)


def tls_alpn01_certificate(
    domain: str,
    key_authorization: str,
    key: PrivateKey | None = None,
    *,
    now: datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """The self-signed tls-alpn-01 certificate of RFC 8737 §3.

    Exactly one subjectAltName (the identifier) and the critical
    acmeIdentifier extension. Pass ``now`` for a short validity window;
    without it the certificate does not expire (no clock needed here).
    """
    private_key: PrivateKey = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    public_key = private_key.public_key()
    if now is None:
        not_before, not_after = _FOREVER_NOT_BEFORE, _FOREVER_NOT_AFTER
    else:
        not_before, not_after = now - timedelta(days=1), now + timedelta(days=7)
    # Deterministic positive serial: no randomness source is needed for a
    # certificate no one else trusts.
    seed = hashlib.sha256(f"{domain}\x00{key_authorization}".encode()).digest()
    serial = int.from_bytes(seed[:16], "big") >> 1 | 1
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certmint tls-alpn-01")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san_for(domain)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(
                ID_PE_ACME_IDENTIFIER, tls_alpn01_extension_value(key_authorization)
            ),
            critical=True,
        )
    )
    algorithm = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(private_key, algorithm), private_key
