from __future__ import annotations

import pytest

from certmint.protocol.b64 import b64url_decode, b64url_encode
from certmint.protocol.strictjson import strict_json_loads


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"\xff\xfe\xfd\xfc", bytes(range(256))])
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text
    assert b64url_decode(text) == data


@pytest.mark.parametrize(
    "text",
    [
        "Zm8=",  # padding
        "Zg==",
        "Zm9v\n",  # whitespace
        " Zm9v",
        "Zm+v",  # standard alphabet
        "Zm/v",
        "Z",  # impossible length
        "Zm9vY",
        "Zh",  # non-zero trailing bits ("Zg" is canonical)
        "Zm9",  # "Zm8" is canonical
        "Zm9é",
    ],
)
def test_b64url_decode_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_b64url_decode_rejects_non_string() -> None:
    with pytest.raises(ValueError):
        b64url_decode(b"Zm9v")  # type: ignore[arg-type]


def test_strict_json_accepts_plain_json() -> None:
    assert strict_json_loads(b'{"a": [1, {"b": null}], "c": "\xc3\xa9"}') == {
        "a": [1, {"b": None}],
        "c": "é",
    }
    assert strict_json_loads("  [] ") == []
    assert strict_json_loads(b'"\\ud83d\\udca9"') == "\U0001f4a9"  # a proper pair


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1, "a": 2}',
        b'{"x": {"a": 1, "a": 1}}',
        b'[{"k": 1}, {"k": 1, "k": 2}]',
        b"NaN",
        b'{"a": Infinity}',
        b"[-Infinity]",
        b"{} {}",
        b"{}x",
        b'"\xff"',
        b"",
        b"[" * 100_000,
        b'"\\ud800"',
        b'{"\\udfff": 1}',
        b'[["\\ud83d x"]]',
    ],
)
def test_strict_json_rejects(data: bytes) -> None:
    with pytest.raises(ValueError):
        strict_json_loads(data)
