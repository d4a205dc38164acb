"""Value shapes and resolver configuration: no network."""

import dataclasses

import pytest

from certmint.ca.va.model import (
    VAConfig,
    ValidationRecord,
    ValidationRequest,
    ValidationResult,
)
from certmint.ca.va.resolver import VAResolver, configured_nameservers, parse_nameserver


def test_config_defaults_are_production_values() -> None:
    config = VAConfig()
    assert (config.http01_port, config.https_port, config.tlsalpn01_port) == (80, 443, 443)
    assert config.allow_private_addresses is False
    assert config.max_body_bytes == 8192
    assert config.max_redirects == 10


def test_values_are_frozen() -> None:
    request = ValidationRequest("http-01", "dns", "example.com", "t", "t.k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.token = "other"  # type: ignore[misc]
    result = ValidationResult(valid=True, problem=None, records=())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.valid = False  # type: ignore[misc]


def test_record_json_uses_boulder_field_names() -> None:
    record = ValidationRecord(
        url="http://example.com/.well-known/acme-challenge/x",
        hostname="example.com",
        port=80,
        addresses_resolved=("2001:db8::1", "192.0.2.1"),
        address_used="192.0.2.1",
    )
    assert record.to_json() == {
        "url": "http://example.com/.well-known/acme-challenge/x",
        "hostname": "example.com",
        "port": "80",
        "addressesResolved": ["2001:db8::1", "192.0.2.1"],
        "addressUsed": "192.0.2.1",
    }
    dns_record = ValidationRecord(None, "example.com", 0, (), None)
    assert dns_record.to_json() == {"hostname": "example.com", "addressesResolved": []}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:8053", ("127.0.0.1", 8053)),
        ("[::1]:8053", ("::1", 8053)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),
        (" 10.0.0.1:5353 ", ("10.0.0.1", 5353)),
    ],
)
def test_parse_nameserver(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize("spec", ["dns.example:53", "127.0.0.1:0", "127.0.0.1:70000", "", "x"])
def test_parse_nameserver_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(spec)


def test_configured_nameservers_in_order() -> None:
    config = VAConfig(resolvers=("127.0.0.1:8053", "[::1]:9053", "192.0.2.53"), dns_timeout=1.5)
    assert configured_nameservers(config) == (
        ("127.0.0.1", 8053),
        ("::1", 9053),
        ("192.0.2.53", 53),
    )
    assert VAResolver(config).nameservers == configured_nameservers(config)
