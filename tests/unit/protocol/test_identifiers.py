from __future__ import annotations

import pytest

from certmint.protocol.identifiers import (
    IdentifierError,
    normalize_dns_identifier,
    normalize_ip_identifier,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.com", "example.com"),
        ("WWW.Example.COM", "www.example.com"),
        ("a-b.example.com", "a-b.example.com"),
        ("123.example.com", "123.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.Example", "xn--bcher-kva.example"),
        ("straße.de", "xn--strae-oqa.de"),  # IDNA2008 keeps ß (non-transitional)
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("example\uff0ecom", "example.com"),  # full-width dot, UTS #46 mapping
        ("a." + "b" * 63 + ".com", "a." + "b" * 63 + ".com"),
    ],
)
def test_normalize_dns_accepts(value: str, expected: str) -> None:
    assert normalize_dns_identifier(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("*.example.com", "*.example.com"),
        ("*.EXAMPLE.com", "*.example.com"),
        ("*.bücher.example", "*.xn--bcher-kva.example"),
    ],
)
def test_normalize_dns_wildcards(value: str, expected: str) -> None:
    assert normalize_dns_identifier(value, allow_wildcard=True) == expected
    with pytest.raises(IdentifierError, match="wildcard"):
        normalize_dns_identifier(value)


def _long_name() -> str:
    label = "a" * 63
    return ".".join([label, label, label, "b" * 61, "com"])  # 63*3+61+3+4 = 257


@pytest.mark.parametrize(
    ("value", "wildcard"),
    [
        ("", False),
        ("example.com.", False),  # trailing dot
        ("bücher.example\u3002", False),
        ("example", False),  # single label
        ("localhost", False),
        ("a..example.com", False),
        (".example.com", False),
        ("a" * 64 + ".com", False),
        (_long_name(), False),
        ("exa mple.com", False),
        ("exa_mple.com", False),
        ("example.com/", False),
        ("-example.com", False),
        ("example-.com", False),
        ("ab--cd.example.com", False),  # reserved "??--"
        ("xn--.example.com", False),
        ("xn--zz.example.com", False),  # does not decode
        ("xn--abc.example.com", False),  # decodes to ASCII: not a real A-label
        ("xn--ls8h.la", False),  # emoji: not IDNA2008
        ("💩.la", False),
        ("1.2.3.4", False),
        ("10.0.0.1", True),
        ("::1", False),
        ("[2001:db8::1]", False),
        ("example.123", False),  # all-numeric TLD
        ("*.example.com", False),
        ("*example.com", True),
        ("foo.*.example.com", True),
        ("*.*.example.com", True),
        ("f*o.example.com", True),
        ("*.com", True),  # base is a single label
        ("*", True),
        ("*.", True),
    ],
)
def test_normalize_dns_rejects(value: str, wildcard: bool) -> None:
    with pytest.raises(IdentifierError) as info:
        normalize_dns_identifier(value, allow_wildcard=wildcard)
    message = str(info.value)
    # The message names the identifier so a user can act on it.
    assert value in message or "empty" in message


def test_identifier_error_is_value_error() -> None:
    assert issubclass(IdentifierError, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:db8::0:1", "2001:db8::1"),
        ("::ffff:192.0.2.1", "::ffff:c000:201"),
    ],
)
def test_normalize_ip(value: str, expected: str) -> None:
    assert normalize_ip_identifier(value) == expected


@pytest.mark.parametrize(
    "value", ["", "192.0.2", "192.0.2.256", "01.2.3.4", "fe80::1%eth0", " 192.0.2.1", "example.com"]
)
def test_normalize_ip_rejects(value: str) -> None:
    with pytest.raises(IdentifierError):
        normalize_ip_identifier(value)
