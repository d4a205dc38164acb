"""Fixtures for the key ceremony tests: a fake clock, a SoftHSM2 per test."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certmint.ca.issuance.pkcs11 import release_modules
from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy
from certmint.testing.softhsm import SoftHsm, create_softhsm

START = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def entropy() -> SeededEntropy:
    return SeededEntropy(5)


@pytest.fixture
def hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsm]:
    release_modules()  # another test's SOFTHSM2_CONF must not linger
    hsm = create_softhsm(tmp_path / "hsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm.conf_path))
    yield hsm
    release_modules()
