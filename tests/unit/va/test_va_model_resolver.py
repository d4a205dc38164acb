"""Value shapes and resolver configuration: no network."""

import dataclasses

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest

from certmint.ca.va.model import (
    VAConfig,
    ValidationRecord,
    ValidationRequest,
    ValidationResult,
)
from certmint.ca.va.resolver import (
    EDNS_PAYLOAD,
    VAResolver,
    _name_wire,
    _Query,
    _servfail,
    configured_nameservers,
    extended_error,
    parse_nameserver,
)


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


@pytest.mark.parametrize(
    "name", ["example.com", "_acme-challenge.example.com", "a-b.c_d.e", "Example.COM", "x"]
)
@pytest.mark.parametrize("rdtype", ["A", "AAAA", "TXT"])
def test_hand_built_query_matches_dnspython(name: str, rdtype: str) -> None:
    query = _Query.build(name, _name_wire(name), rdtype)
    # EDNS version 0, 1232-octet payload, no DO bit (RFC 6891; resolver.py).
    reference = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
    reference.id = query.id
    assert query.wire == reference.to_wire()
    assert query.as_message().to_wire() == reference.to_wire()


@pytest.mark.parametrize("name", ["a..b", "x" * 64 + ".example", ".".join(["a" * 63] * 5)])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises((dns.exception.DNSException, ValueError)):
        _name_wire(name)


def _reply_to(query: _Query, **changes: object) -> bytes:
    message = query.as_message()
    reply = dns.message.make_response(message)
    for key, value in changes.items():
        setattr(reply, key, value)
    return reply.to_wire()


def test_reply_matching_on_raw_bytes() -> None:
    query = _Query.build("example.com", _name_wire("example.com"), "A")
    reply = _reply_to(query)
    assert query.is_answered_by(reply)
    # RFC 4343: a resolver may echo the name in another case (0x20 encoding).
    upper = _Query.build("EXAMPLE.com", _name_wire("EXAMPLE.com"), "A")
    assert query.is_answered_by(reply.replace(b"example", b"EXAMPLE"))
    assert upper.is_answered_by(_reply_to(query, id=upper.id))
    assert not query.is_answered_by(reply[:11])
    assert not query.is_answered_by(_reply_to(query, id=(query.id + 1) & 0xFFFF))
    other_type = _Query.build("example.com", _name_wire("example.com"), "AAAA")
    assert not query.is_answered_by(_reply_to(other_type, id=query.id))
    other_name = _Query.build("example.org", _name_wire("example.org"), "A")
    assert not query.is_answered_by(_reply_to(other_name, id=query.id))
    assert not query.is_answered_by(query.wire)  # a query, not a response
    # A question-less reply counts only for rcodes that may omit it.
    servfail = dns.message.Message(id=query.id)
    servfail.flags = dns.flags.QR
    servfail.set_rcode(dns.rcode.SERVFAIL)
    assert query.is_answered_by(servfail.to_wire())
    servfail.set_rcode(dns.rcode.NOERROR)
    assert not query.is_answered_by(servfail.to_wire())


# -- RFC 8914 Extended DNS Errors in SERVFAIL details --


def _servfail_with(*options: dns.edns.EDEOption) -> dns.message.Message:
    query = dns.message.make_query("example.com", "TXT", use_edns=0, payload=EDNS_PAYLOAD)
    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.SERVFAIL)
    reply.use_edns(0, payload=EDNS_PAYLOAD, options=list(options))
    # Through the wire, as the resolver sees it.
    return dns.message.from_wire(reply.to_wire())


def test_query_asks_for_edns_without_do() -> None:
    message = dns.message.from_wire(
        _Query.build("example.com", _name_wire("example.com"), "A").wire
    )
    assert message.edns == 0
    assert message.payload == EDNS_PAYLOAD
    assert not message.ednsflags & dns.flags.DO  # RRSIGs are the resolver's business


def test_servfail_without_extended_error_keeps_boulder_wording() -> None:
    assert extended_error(_servfail_with()) is None
    problem = _servfail("TXT", "_acme-challenge.example.com").problem
    assert problem.type == "dns"
    assert problem.detail == (
        "DNS problem: SERVFAIL looking up TXT for _acme-challenge.example.com - "
        "the domain's nameservers may be malfunctioning"
    )


def test_dnssec_extended_error_names_dnssec() -> None:
    reply = _servfail_with(
        dns.edns.EDEOption(dns.edns.EDECode.NO_REACHABLE_AUTHORITY),
        dns.edns.EDEOption(dns.edns.EDECode.DNSSEC_BOGUS, "signature crypto failed"),
    )
    found = extended_error(reply)
    assert found is not None and found.is_dnssec and found.code == 6
    problem = _servfail("TXT", "_acme-challenge.example.com", found).problem
    assert problem.type == "dns"
    assert problem.detail == (
        "DNS problem: SERVFAIL looking up TXT for _acme-challenge.example.com - "
        "DNSSEC validation failed: check the domain's DS and DNSKEY records and "
        "signatures (resolver: EDE 6 (DNSSEC Bogus): signature crypto failed)"
    )


def test_other_extended_error_is_shown_as_is() -> None:
    found = extended_error(
        _servfail_with(dns.edns.EDEOption(dns.edns.EDECode.NO_REACHABLE_AUTHORITY))
    )
    assert found is not None and not found.is_dnssec
    detail = _servfail("A", "example.com", found).problem.detail
    assert detail == (
        "DNS problem: SERVFAIL looking up A for example.com - the domain's nameservers "
        "may be malfunctioning (resolver: EDE 22 (No Reachable Authority))"
    )


def test_extended_error_text_is_printable_and_bounded() -> None:
    text = "bad\x1b[31m" + "x" * 500
    found = extended_error(_servfail_with(dns.edns.EDEOption(dns.edns.EDECode.OTHER, text)))
    assert found is not None
    assert found.text.isprintable()
    assert found.text.endswith("...") and len(found.text) <= 203
