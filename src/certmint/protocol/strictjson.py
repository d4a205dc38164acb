"""JSON parsing that refuses ambiguity.

RFC 7515 §5.2 and RFC 8259 §4 leave duplicate member names undefined; two
parsers disagreeing on which duplicate wins is a classic signature-confusion
bug, so we reject duplicates at every depth. NaN/Infinity are not JSON
(RFC 8259 §6) and invalid UTF-8 is not JSON text (RFC 8259 §8.1); an
unpaired surrogate escape is refused too (RFC 8259 §8.2 leaves it undefined).
"""

from __future__ import annotations

import json
from typing import Any, NoReturn


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"JSON contains the non-standard constant {name}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"JSON object has the member {key!r} more than once")
        obj[key] = value
    return obj


def _reject_lone_surrogates(value: Any) -> None:
    # "\ud800" is valid JSON syntax but not a Unicode scalar value; such a
    # string cannot be re-encoded as UTF-8 and would fail later, far from here.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts = [item]
        elif isinstance(item, dict):
            texts = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("JSON string contains an unpaired surrogate escape") from None


def strict_json_loads(data: bytes | str) -> Any:
    """Parse one JSON text; raise ``ValueError`` on anything ambiguous or invalid."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise ValueError(f"JSON text is not valid UTF-8: {exc}") from None
    elif isinstance(data, str):
        text = data
    else:
        raise ValueError("JSON input must be bytes or str")
    try:
        # json.loads already rejects trailing garbage ("Extra data").
        value = json.loads(
            text,
            object_pairs_hook=_unique_object,
            parse_constant=_reject_constant,
        )
    except RecursionError:
        raise ValueError("JSON text is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    _reject_lone_surrogates(value)
    return value
