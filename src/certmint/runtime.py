"""Time and randomness, injected.

Nothing below the CLI calls ``datetime.now()``, ``time.time()``, ``time.sleep()``
or ``random`` directly (DESIGN.md §2): it receives a ``Clock`` and an ``Entropy``.
Tests pass a fake clock that jumps instead of sleeping, and chaos replays from a
seed. Security-relevant randomness (serials, nonces, tokens, ids) always comes
from ``SystemEntropy``, which draws from the operating system's CSPRNG.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards, for deadlines."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class Entropy(Protocol):
    def token_bytes(self, n: int) -> bytes: ...

    def randbelow(self, n: int) -> int:
        """A uniformly chosen integer in [0, n)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SystemEntropy:
    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)


class SeededEntropy:
    """Reproducible randomness for chaos and tests: the same seed replays the
    same run. Never used for keys, serials, nonces, tokens or ids."""

    def __init__(self, seed: int) -> None:
        import random

        self.seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - deliberately reproducible

    def token_bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)
