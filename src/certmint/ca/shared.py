"""State the worker processes of one server share through memory mapped
before they are forked (the nonce table lives in ``nonces.py``)."""

from __future__ import annotations

import mmap
import multiprocessing
import struct

_COUNTER = struct.Struct("<Q")


class RevocationCounter:
    """Counts revocations across workers, so each worker's CRL cache knows
    when another worker revoked something (the CRL must show it promptly)."""

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, _COUNTER.size)
        self._lock = multiprocessing.Lock()

    def increment(self) -> None:
        with self._lock:
            _COUNTER.pack_into(self._mem, 0, _COUNTER.unpack_from(self._mem, 0)[0] + 1)

    def value(self) -> int:
        return int(_COUNTER.unpack_from(self._mem, 0)[0])
