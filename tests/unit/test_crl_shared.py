"""A revocation in one worker makes every worker's cached CRL stale."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from certmint.ca.mgmt import CrlPublisher
from certmint.ca.shared import RevocationCounter
from certmint.testing.clock import FakeClock


class CountingCA:
    issuer_ids = ("e1",)

    def __init__(self) -> None:
        self.builds = 0

    def build_crl(self, issuer_id: str, revoked: Any) -> bytes:
        self.builds += 1
        return f"crl-{self.builds}".encode()


class NoRevocations:
    def get_certificate(self, serial: str) -> None:
        return None

    def list_revoked(self, issuer_id: str, now: datetime) -> list[Any]:
        return []


def test_other_workers_rebuild_after_a_revocation_elsewhere() -> None:
    counter = RevocationCounter()
    clock = FakeClock()
    ca_a, ca_b = CountingCA(), CountingCA()
    worker_a = CrlPublisher(ca_a, NoRevocations(), clock, revocations=counter)  # type: ignore[arg-type]
    worker_b = CrlPublisher(ca_b, NoRevocations(), clock, revocations=counter)  # type: ignore[arg-type]
    assert worker_b.crl_der("e1") == worker_b.crl_der("e1")  # cached
    assert ca_b.builds == 1
    worker_a.invalidate_crl("e1")  # a revocation handled by worker A
    worker_b.crl_der("e1")
    assert ca_b.builds == 2


def test_the_counter_is_shared_with_forked_processes() -> None:
    counter = RevocationCounter()
    pid = os.fork()
    if pid == 0:
        counter.increment()
        os._exit(0)
    os.waitpid(pid, 0)
    assert counter.value() == 1
