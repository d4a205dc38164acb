"""Address policy and host-name syntax: table-tested, no network."""

import ipaddress

import pytest

from certmint.ca.va.addresses import (
    address_refusal,
    disallowed_reason,
    format_host_for_url,
    normalize_hostname,
    parse_ip,
)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata endpoints
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("240.0.0.1", "a private address"),  # reserved 240/4 counts as private in ipaddress
        ("100.64.0.1", "a non-public address"),  # RFC 6598 shared space
        ("192.0.2.1", "a private address"),  # TEST-NET-1 documentation range
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped smuggling
        ("::ffff:10.0.0.1", "a private address"),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("93.184.215.14", None),
    ],
)
def test_disallowed_reason(address: str, reason: str | None) -> None:
    assert disallowed_reason(ipaddress.ip_address(address)) == reason


def test_address_refusal_rejects_non_addresses() -> None:
    assert address_refusal("example.com") == "not an IP address"
    assert address_refusal("1.1.1.1") is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("a-b.example", "a-b.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("localhost", "localhost"),
        ("", None),
        (".", None),
        ("-bad.example", None),
        ("bad-.example", None),
        ("a..b", None),
        ("under_score.example", None),
        ("bücher.example", None),  # IDNs arrive as A-labels or not at all
        ("a" * 64 + ".example", None),
        (("a" * 63 + ".") * 4 + "com", None),  # > 253 octets
        ("1.2.3.4", None),
        ("example.com/path", None),
        ("exa mple.com", None),
    ],
)
def test_normalize_hostname(name: str, expected: str | None) -> None:
    assert normalize_hostname(name) == expected


def test_parse_ip_and_url_hosts() -> None:
    assert parse_ip("[::1]") == ipaddress.ip_address("::1")
    assert parse_ip("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_ip("example.com") is None
    assert format_host_for_url("::1") == "[::1]"
    assert format_host_for_url("127.0.0.1") == "127.0.0.1"
