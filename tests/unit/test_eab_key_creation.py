"""EAB keys as ``certmint-ca eab create`` makes them: 256-bit HMAC keys whose
base64url form can be pasted after ``--eab-hmac-key`` (no leading "-")."""

from __future__ import annotations

from datetime import UTC, datetime

from certmint.ca.ra_accounts import EAB_HMAC_KEY_BYTES, new_eab_key
from certmint.protocol.b64 import b64url_encode
from certmint.runtime import SeededEntropy

NOW = datetime(2026, 11, 23, tzinfo=UTC)


class _Clock:
    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        return None


class _Scripted(SeededEntropy):
    """Hands out the scripted byte strings first, then seeded ones."""

    def __init__(self, *first: bytes) -> None:
        super().__init__(1)
        self._first = list(first)

    def token_bytes(self, n: int) -> bytes:
        return self._first.pop(0) if self._first else super().token_bytes(n)


def test_a_key_that_would_start_with_a_dash_is_drawn_again() -> None:
    dash = b"\xf8" + bytes(EAB_HMAC_KEY_BYTES - 1)  # 111110.. -> "-" in base64url
    fine = b"\x01" * EAB_HMAC_KEY_BYTES
    assert b64url_encode(dash).startswith("-")
    record = new_eab_key(_Clock(), _Scripted(dash, fine))
    assert record.hmac_key == fine
    assert record.kid.startswith("kid-") and record.account_id is None
    assert record.created_at == NOW


def test_keys_are_256_bits_and_never_start_with_a_dash() -> None:
    entropy = SeededEntropy(7)
    keys = [new_eab_key(_Clock(), entropy) for _ in range(2000)]
    assert {len(k.hmac_key) for k in keys} == {EAB_HMAC_KEY_BYTES}
    assert not any(b64url_encode(k.hmac_key).startswith("-") for k in keys)
    assert len({k.kid for k in keys}) == len(keys)
