"""Nonce services: single use, unknown refused, shared across processes."""

from __future__ import annotations

import os

import pytest

from certmint.ca.nonces import ChaoticNonceService, MemoryNonceService, SharedNonceService
from certmint.protocol.b64 import b64url_decode
from certmint.runtime import SeededEntropy, SystemEntropy


@pytest.mark.parametrize("factory", [MemoryNonceService, SharedNonceService])
def test_nonce_is_good_exactly_once(factory: type) -> None:
    service = factory(SystemEntropy())
    nonce = service.issue()
    assert service.redeem(nonce)
    assert not service.redeem(nonce)


@pytest.mark.parametrize("factory", [MemoryNonceService, SharedNonceService])
@pytest.mark.parametrize("bad", ["", "AAAA", "not base64!", "A" * 22, "AAAAAAAAAAAAAAAAAAAAAA=="])
def test_unknown_and_malformed_nonces_are_refused(factory: type, bad: str) -> None:
    service = factory(SystemEntropy())
    service.issue()
    assert not service.redeem(bad)


def test_shared_nonce_with_a_wrong_tag_is_refused() -> None:
    service = SharedNonceService(SystemEntropy())
    nonce = service.issue()
    forged = nonce[:12] + ("A" if nonce[12] != "A" else "B") + nonce[13:]
    assert not service.redeem(forged)
    assert service.redeem(nonce)


def test_shared_nonces_do_not_reveal_a_counter() -> None:
    """Consecutive nonces share no prefix and are not ordered: the counter
    inside is encrypted, so a client cannot count the server's nonces."""
    service = SharedNonceService(SeededEntropy(7))
    raw = [b64url_decode(service.issue()) for _ in range(64)]
    assert len({r[:8] for r in raw}) == 64
    assert [r[:8] for r in raw] != sorted(r[:8] for r in raw)
    # Another server (another key) cannot redeem this one's nonces.
    other = SharedNonceService(SeededEntropy(8))
    assert not other.redeem(service.issue())


def test_shared_table_forgets_the_oldest_when_full() -> None:
    service = SharedNonceService(SystemEntropy(), slots=4)
    first = service.issue()
    later = [service.issue() for _ in range(4)]
    assert not service.redeem(first)  # its slot now holds a newer nonce
    assert all(service.redeem(n) for n in later)


def test_memory_table_is_bounded() -> None:
    service = MemoryNonceService(SystemEntropy(), capacity=3)
    first = service.issue()
    for _ in range(3):
        service.issue()
    assert not service.redeem(first)


def test_shared_nonce_issued_in_one_process_is_redeemed_in_another() -> None:
    service = SharedNonceService(SystemEntropy())
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: issue one nonce and hand it over
        os.close(read_end)
        os.write(write_end, service.issue().encode())
        os._exit(0)
    os.close(write_end)
    nonce = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert service.redeem(nonce)
    assert not service.redeem(nonce)


def test_chaos_rejects_the_configured_share_reproducibly() -> None:
    def rejected(seed: int) -> list[bool]:
        service = ChaoticNonceService(MemoryNonceService(SystemEntropy()), 50, SeededEntropy(seed))
        return [not service.redeem(service.issue()) for _ in range(200)]

    first = rejected(7)
    assert first == rejected(7)
    assert 60 < sum(first) < 140
