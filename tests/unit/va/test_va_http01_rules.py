"""http-01 redirect rules, body echo and the TLS settings: no network."""

import ssl

import pytest

from certmint.ca.va.http01 import (
    Http01Validator,
    HttpTarget,
    build_tls_context,
    echo_text,
)
from certmint.ca.va.model import VAConfig
from certmint.ca.va.resolver import VAResolver
from certmint.protocol.problems import Problem, ProblemType

CONFIG = VAConfig(resolvers=("127.0.0.1:9",), http01_port=5002, https_port=5443)
CURRENT = HttpTarget("http", "example.com", 5002, "/.well-known/acme-challenge/tok")


@pytest.fixture
def validator() -> Http01Validator:
    return Http01Validator(CONFIG, VAResolver(CONFIG))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/other", HttpTarget("http", "example.com", 5002, "/other")),
        (
            "other?x=1",
            HttpTarget("http", "example.com", 5002, "/.well-known/acme-challenge/other?x=1"),
        ),
        ("http://WWW.Example.com/a", HttpTarget("http", "www.example.com", 5002, "/a")),
        ("http://example.org:5002/a", HttpTarget("http", "example.org", 5002, "/a")),
        ("https://example.org/a", HttpTarget("https", "example.org", 5443, "/a")),
        ("https://example.org:5443/a", HttpTarget("https", "example.org", 5443, "/a")),
        ("http://[::1]/a", HttpTarget("http", "::1", 5002, "/a")),
        ("http://192.0.2.7/", HttpTarget("http", "192.0.2.7", 5002, "/")),
        ("//example.net/b", HttpTarget("http", "example.net", 5002, "/b")),
    ],
)
async def test_redirects_followed(
    validator: Http01Validator, location: str, expected: HttpTarget
) -> None:
    assert validator.redirect_target(CURRENT, location) == expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        ("ftp://example.com/x", "Invalid protocol scheme"),
        ("file:///etc/passwd", "Invalid protocol scheme"),
        ("http://example.com:22/", "Invalid port"),
        ("https://example.com:5002/", "Invalid port"),  # http port with https scheme
        ("http://example.com:5443/", "Invalid port"),
        ("http://user:secret@example.com/", "credentials"),
        ("http://bad_host.example/", "Invalid host"),
        ("http://[zz/", "Invalid"),
    ],
)
async def test_redirects_refused(validator: Http01Validator, location: str, fragment: str) -> None:
    outcome = validator.redirect_target(CURRENT, location)
    assert isinstance(outcome, Problem)
    assert outcome.type == ProblemType.CONNECTION
    assert fragment in outcome.detail
    assert "secret" not in outcome.detail


def test_target_urls() -> None:
    target = HttpTarget("http", "example.com", 80, "/p")
    assert target.url == "http://example.com/p"
    assert target.authority == "example.com"
    assert target.url_for_address("2001:db8::1") == "http://[2001:db8::1]:80/p"
    odd = HttpTarget("https", "example.com", 5443, "/p")
    assert odd.url == "https://example.com:5443/p"
    assert odd.authority == "example.com:5443"


def test_echo_text_is_bounded_and_printable() -> None:
    assert echo_text(b"hello") == "hello"
    assert echo_text(b"a\x00b\nc") == "a\ufffdb\ufffdc"
    long = echo_text(b"x" * 10_000)
    assert long == "x" * 128 + "..."
    assert echo_text(b"\xff\xfe") == "\ufffd\ufffd"


def test_https_hops_skip_certificate_checks() -> None:
    # Boulder's rule: control is proven by the body, not by a trusted chain.
    context = build_tls_context()
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
