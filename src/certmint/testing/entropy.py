"""Seeded randomness for tests and chaos: the same seed replays the same run."""

from certmint.runtime import SeededEntropy

__all__ = ["SeededEntropy"]
