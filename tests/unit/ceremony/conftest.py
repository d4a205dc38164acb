"""Fixtures for the key ceremony tests: a fake clock, a SoftHSM2 per test."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy
from certmint.testing.softhsm import SoftHsm, softhsm_session

START = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def entropy() -> SeededEntropy:
    return SeededEntropy(5)


@pytest.fixture
def hsm(tmp_path: Path) -> Iterator[SoftHsm]:
    # SOFTHSM2_CONF set for this test only, the module released around it.
    with softhsm_session(tmp_path / "hsm") as hsm:
        yield hsm
