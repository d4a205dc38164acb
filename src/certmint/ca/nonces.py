"""Replay protection (RFC 8555 §6.5): every nonce is good for one request.

``MemoryNonceService`` keeps outstanding nonces in this process, bounded so a
client that fetches nonces and never uses them cannot grow memory without
limit (the oldest are forgotten first; a forgotten nonce earns ``badNonce``,
which every client must handle anyway). Several worker processes need a shared
service: ``SharedNonceService`` for the worker processes of one server (a
shared-memory table), and Redis when servers span machines (later issue).
"""

from __future__ import annotations

import mmap
import multiprocessing
import struct
from collections import OrderedDict
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from certmint.protocol.b64 import b64url_decode, b64url_encode
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


class SharedNonceService:
    """Nonces good in every worker process of one server (``serve --workers``).

    A fixed table of slots lives in an anonymous shared mapping created
    before the workers are forked. A nonce is a 64-bit counter and a 64-bit
    random tag; issuing writes (counter, tag) into slot ``counter % slots``,
    redeeming compares and clears it under one cross-process lock. The table
    is its own bound: a nonce whose slot was reused by a later one is
    forgotten (``badNonce``, which RFC 8555 §6.5 clients retry).

    On the wire the 16 bytes are one AES block encrypted under a key made at
    start-up (as Boulder encrypts its nonce counter): a client learns nothing
    of the counter, so not how many nonces the server has handed out.
    """

    _SLOT = struct.Struct("<QQ")
    _COUNTER = struct.Struct("<Q")

    def __init__(self, entropy: Entropy, slots: int = 1 << 18) -> None:
        self._entropy = entropy
        self._slots = slots
        self._mem = mmap.mmap(-1, self._COUNTER.size + slots * self._SLOT.size)
        self._lock = multiprocessing.Lock()
        # One 16-byte block per nonce: AES on a single block is a keyed
        # permutation, so ECB's weakness (equal blocks look equal) cannot
        # arise; every plaintext block is distinct (the counter).
        self._cipher = Cipher(algorithms.AES(entropy.token_bytes(16)), modes.ECB())  # noqa: S305

    def _offset(self, counter: int) -> int:
        return self._COUNTER.size + (counter % self._slots) * self._SLOT.size

    def issue(self) -> str:
        tag = self._entropy.token_bytes(8)
        tag_value = int.from_bytes(tag, "big")
        with self._lock:
            counter = self._COUNTER.unpack_from(self._mem, 0)[0] + 1
            self._COUNTER.pack_into(self._mem, 0, counter)
            self._SLOT.pack_into(self._mem, self._offset(counter), counter, tag_value)
        encryptor = self._cipher.encryptor()
        block = encryptor.update(counter.to_bytes(8, "big") + tag) + encryptor.finalize()
        return b64url_encode(block)

    def redeem(self, nonce: str) -> bool:
        try:
            raw = b64url_decode(nonce)
        except ValueError:
            return False
        if len(raw) != 16:
            return False
        decryptor = self._cipher.decryptor()
        raw = decryptor.update(raw) + decryptor.finalize()
        counter = int.from_bytes(raw[:8], "big")
        tag_value = int.from_bytes(raw[8:], "big")
        if counter == 0:
            return False
        offset = self._offset(counter)
        with self._lock:
            if self._SLOT.unpack_from(self._mem, offset) != (counter, tag_value):
                return False
            self._SLOT.pack_into(self._mem, offset, 0, 0)
        return True
