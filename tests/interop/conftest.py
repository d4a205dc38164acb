"""Fixtures for interop tests: other people's ACME software against our CA."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from certmint.testing.harness import LoopbackCA, print_logs, running_ca


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report on the test item, so a fixture's teardown can
    # tell whether the test failed and print the servers' logs only then.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def call_failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed


@pytest.fixture
def loopback_ca(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LoopbackCA]:
    """A certmint CA and challenge test server on free loopback ports."""
    with running_ca(tmp_path / "ca") as ca:
        yield ca
        if call_failed(request):
            print_logs(ca)
