"""Replay protection (RFC 8555 §6.5): every nonce is good for one request.

``MemoryNonceService`` keeps outstanding nonces in this process, bounded so a
client that fetches nonces and never uses them cannot grow memory without
limit (the oldest are forgotten first; a forgotten nonce earns ``badNonce``,
which every client must handle anyway). Several worker processes need a shared
service (Redis, in a later issue) or sticky routing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from certmint.protocol.b64 import b64url_encode
from certmint.runtime import Entropy

NONCE_BYTES = 16


class NonceService(Protocol):
    def issue(self) -> str: ...

    def redeem(self, nonce: str) -> bool:
        """True exactly once for a nonce this service issued."""
        ...


class MemoryNonceService:
    def __init__(self, entropy: Entropy, capacity: int = 200_000) -> None:
        self._entropy = entropy
        self._capacity = capacity
        self._outstanding: OrderedDict[str, None] = OrderedDict()

    def issue(self) -> str:
        nonce = b64url_encode(self._entropy.token_bytes(NONCE_BYTES))
        self._outstanding[nonce] = None
        if len(self._outstanding) > self._capacity:
            self._outstanding.popitem(last=False)
        return nonce

    def redeem(self, nonce: str) -> bool:
        try:
            del self._outstanding[nonce]
        except KeyError:
            return False
        return True


class ChaoticNonceService:
    """Rejects a seeded share of otherwise-good nonces, forcing clients to
    implement the badNonce retry RFC 8555 §6.5 requires of them."""

    def __init__(self, inner: NonceService, reject_percent: float, chaos: Entropy) -> None:
        self._inner = inner
        self._threshold = int(reject_percent * 100)  # in 1/10000ths
        self._chaos = chaos

    def issue(self) -> str:
        return self._inner.issue()

    def redeem(self, nonce: str) -> bool:
        good = self._inner.redeem(nonce)
        if good and self._chaos.randbelow(10_000) < self._threshold:
            return False
        return good
