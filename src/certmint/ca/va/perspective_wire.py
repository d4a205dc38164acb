"""The wire between the primary VA and its remote perspectives (BR 3.2.2.9).

Both directions are authenticated with one shared secret:

- request:  ``Certmint-MAC: b64url(HMAC-SHA256(secret, b"req\\0" + body))``;
  the body's JSON carries a fresh random ``nonce``.
- response: ``Certmint-MAC: b64url(HMAC-SHA256(secret, b"resp\\0" + nonce +
  b"\\0" + body))``, so a response recorded for one request cannot be
  replayed as the answer to another (its nonce differs), and the distinct
  prefixes keep a request MAC from ever verifying as a response MAC.

The MAC covers the exact bytes on the wire, checked before the JSON is
parsed: nothing unauthenticated reaches the parser.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from certmint.protocol.b64 import b64url_encode

MAC_HEADER = "Certmint-MAC"
# A validation request or result is a few hundred bytes; records and
# problem details stay far below this. Anything larger is not ours.
MAX_BODY_BYTES = 64 * 1024
# 256-bit HMAC keys (RFC 2104 §3: at least the hash output length).
MIN_SECRET_BYTES = 32
NONCE_BYTES = 16
# base64url, 16 bytes at least (22 characters), bounded.
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{22,128}")

VALIDATE_PATH = "/v1/validate"
CHECK_CAA_PATH = "/v1/check-caa"
HEALTH_PATH = "/v1/health"


class SecretError(ValueError):
    """The shared secret file is missing, unreadable or too short."""


def load_secret(path: Path) -> bytes:
    """The shared secret: the file's content with surrounding whitespace
    stripped (so ``echo secret > file`` works), at least 32 bytes."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    check_secret(secret)
    return secret


def check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"the shared secret must be at least {MIN_SECRET_BYTES} bytes, not {len(secret)}"
        )


def request_mac(secret: bytes, body: bytes) -> str:
    return b64url_encode(hmac.new(secret, b"req\0" + body, hashlib.sha256).digest())


def response_mac(secret: bytes, nonce: str, body: bytes) -> str:
    message = b"resp\0" + nonce.encode("ascii") + b"\0" + body
    return b64url_encode(hmac.new(secret, message, hashlib.sha256).digest())


def mac_matches(expected: str, received: str | None) -> bool:
    """Constant-time comparison (no timing oracle on the MAC)."""
    if received is None:
        return False
    try:
        return hmac.compare_digest(expected.encode("ascii"), received.encode("ascii"))
    except UnicodeEncodeError:
        return False
