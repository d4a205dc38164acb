"""Seeded randomness for tests and chaos: the same seed replays the same run."""

from __future__ import annotations

import random


class SeededEntropy:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - deliberately reproducible, never for keys

    def token_bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)
