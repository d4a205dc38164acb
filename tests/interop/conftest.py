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


# Where the CA says, inside each certificate, its CRLs and issuer certificate
# are published (CRL distribution points and AIA caIssuers, TLS BR §7.1.2.7.7
# and §7.1.2.7.8). A publicly trusted CA names a public host there, and the
# BR linter rejects internal names such as 127.0.0.1 (TLS BR §7.1.2.11.1 via
# pkilint's cabf.internal_domain_name), so these tests configure the CA the
# way an operator would. Nothing in these tests fetches those URLs.
PUBLIC_MANAGEMENT_BASE_URL = "http://ca.interop.example.com"


@pytest.fixture
def loopback_ca(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LoopbackCA]:
    """A certmint CA and challenge test server on free loopback ports."""
    serve_args = ("--management-base-url", PUBLIC_MANAGEMENT_BASE_URL)
    with running_ca(tmp_path / "ca", serve_args=serve_args) as ca:
        yield ca
        if call_failed(request):
            print_logs(ca)
