"""Fixtures for the CA issuance tests: a fresh dev hierarchy per test and a CA."""

from __future__ import annotations

from pathlib import Path

import pytest

from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.hierarchy import Hierarchy, load_or_create_dev_hierarchy
from certmint.testing.clock import FakeClock

from .issuance_support import AIA_BASE, CRL_BASE, START, RecordingEntropy


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def entropy() -> RecordingEntropy:
    return RecordingEntropy(1234)


@pytest.fixture
def hierarchy(tmp_path: Path, clock: FakeClock, entropy: RecordingEntropy) -> Hierarchy:
    return load_or_create_dev_hierarchy(tmp_path / "data", clock, entropy)


@pytest.fixture
def ca(hierarchy: Hierarchy, clock: FakeClock, entropy: RecordingEntropy) -> CertificateAuthority:
    return CertificateAuthority(
        hierarchy, IssuanceConfig(crl_base_url=CRL_BASE, aia_base_url=AIA_BASE), clock, entropy
    )
