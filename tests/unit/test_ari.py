"""RFC 9773 certificate identifiers and renewal windows: pure rules, table-tested."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from certmint.ca.ari import (
    CertId,
    default_window,
    encode_cert_id,
    immediate_window,
    parse_cert_id,
    suggested_window,
)
from certmint.ca.storage.records import CERT_REVOKED, CertificateRecord

# RFC 9773 §4.1's example: keyIdentifier 69:88:5B:…:D4, serial 0x87654321.
RFC_AKI = bytes.fromhex("69885b6b87464041e1b37b847ba0ae2cde01c8d4")
RFC_CERT_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_rfc_example_round_trips() -> None:
    assert encode_cert_id(RFC_AKI, 0x87654321) == RFC_CERT_ID
    assert parse_cert_id(RFC_CERT_ID) == CertId(RFC_AKI, 0x87654321)
    assert parse_cert_id(RFC_CERT_ID).serial == 0x87654321


@pytest.mark.parametrize(
    ("serial", "octets"),
    [(1, "01"), (0x7F, "7f"), (0x80, "0080"), (0xFF, "00ff"), (0x0100, "0100"), (2**159, None)],
)
def test_serial_octets_are_minimal_der(serial: int, octets: str | None) -> None:
    cert_id = encode_cert_id(b"k", serial)
    assert parse_cert_id(cert_id).serial == serial
    if octets is not None:
        from certmint.protocol.b64 import b64url_decode

        assert b64url_decode(cert_id.split(".")[1]).hex() == octets


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "aYhb",
        "aYhb.",
        ".AIdlQyE",
        "aYhb.AIdl.QyE",
        "aYhb=.AIdlQyE",  # padding
        "aYhb.AIdlQyE=",
        "aY hb.AIdlQyE",
        "aYhb.h2VDIQ",  # 0x87654321 without its leading zero: negative
        "aYhb.AAE",  # 00 01: not minimal
        "aYhb.AA",  # zero
        "aYhb.AIdlQyF",  # non-zero trailing bits
        "a" * 200 + ".AQ",
        "aYhb." + "AQ" * 20,  # more than 21 octets
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cert_id(text)


def test_encode_refuses_non_positive_serials() -> None:
    with pytest.raises(ValueError):
        encode_cert_id(b"k", 0)


def test_default_window_for_90_days() -> None:
    not_after = T0 + timedelta(days=90) - timedelta(seconds=1)
    window = default_window(T0, not_after)
    # Ideal: a third of the lifetime (90 days, notAfter inclusive) before
    # notAfter, i.e. day 60 less that second; ±1 % of the lifetime (21.6 hours).
    ideal = not_after - timedelta(days=30)
    assert window.start == ideal - timedelta(hours=21, minutes=36)
    assert window.end == ideal + timedelta(hours=21, minutes=36)
    assert window.source == "default"


def test_default_window_of_a_tiny_certificate_is_never_empty() -> None:
    window = default_window(T0, T0 + timedelta(seconds=2))
    assert window.start < window.end


def test_immediate_window_is_in_the_past() -> None:
    now = T0 + timedelta(microseconds=5)
    window = immediate_window(now)
    assert window.start < window.end < now and window.source == "revoked"


def _record(**kw: object) -> CertificateRecord:
    record = CertificateRecord(
        serial="0a",
        account_id="a",
        order_id="o",
        issuer_id="e1",
        der=b"",
        names=("a.example",),
        not_before=T0,
        not_after=T0 + timedelta(days=90) - timedelta(seconds=1),
        key_spki_sha256="",
        issued_at=T0,
    )
    return replace(record, **kw)  # type: ignore[arg-type]


def test_suggested_window_precedence() -> None:
    now = T0 + timedelta(days=3)
    start, end = T0 + timedelta(days=5), T0 + timedelta(days=6)
    assert suggested_window(_record(), now).source == "default"
    operator = suggested_window(_record(ari_window_start=start, ari_window_end=end), now)
    assert (operator.start, operator.end, operator.source) == (start, end, "operator")
    revoked = _record(status=CERT_REVOKED, ari_window_start=start, ari_window_end=end)
    assert suggested_window(revoked, now).source == "revoked"
