"""Strict base64url (RFC 7515 §2, RFC 4648 §5) for everything JOSE carries.

JWS and JWK values are base64url *without* padding. We decode strictly: one
byte string has exactly one accepted encoding, so a signed message cannot be
re-spelled (malleated) and two spellings of one key cannot yield two accounts.
"""

from __future__ import annotations

import base64
import binascii
import re

_URLSAFE_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """base64url without ``=`` padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url, rejecting every non-canonical spelling.

    Raises ``ValueError`` on padding, characters outside ``[A-Za-z0-9_-]``
    (including whitespace), an impossible length (≡ 1 mod 4), or non-zero
    trailing bits (RFC 4648 §3.5: encoders set them to zero; we insist).
    """
    if not isinstance(text, str):
        raise ValueError("base64url value is not a string")
    if _URLSAFE_ALPHABET.fullmatch(text) is None:
        raise ValueError("base64url value contains characters outside [A-Za-z0-9_-] or padding")
    if len(text) % 4 == 1:
        raise ValueError("base64url value has an impossible length")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - alphabet checked above
        raise ValueError(f"base64url value does not decode: {exc}") from None
    if b64url_encode(data) != text:
        raise ValueError("base64url value is not canonical (non-zero trailing bits)")
    return data
