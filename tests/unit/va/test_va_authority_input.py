"""Nonsense input is a ``malformed`` result, decided before any network use."""

import pytest

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest
from certmint.protocol.problems import ProblemType
from certmint.testing.clock import FakeClock

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"

# A resolver nobody listens on: if input checks let a request through, the
# test would see a dns problem instead of malformed.
CONFIG = VAConfig(resolvers=("127.0.0.1:9",), dns_timeout=0.2, total_timeout=0.5)


def request(**changes: str) -> ValidationRequest:
    fields = {
        "challenge_type": "http-01",
        "identifier_type": "dns",
        "identifier_value": "example.com",
        "token": TOKEN,
        "key_authorization": KEYAUTHZ,
    }
    fields.update(changes)
    return ValidationRequest(**fields)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "changes",
    [
        {"challenge_type": "http-02"},
        {"challenge_type": "tls-sni-01"},  # retired, never supported
        {"token": ""},
        {"token": "short"},
        {"token": "../../etc/passwd-aaaaaaaaaaaaaaaaaaaaaa"},
        {"token": TOKEN + "/x"},
        {"key_authorization": TOKEN},
        {"key_authorization": "other-token-aaaaaaaaaaaaaaaa.9jg46WB3rR_AHD-EBXdN7cBkH1WOu"},
        {"key_authorization": TOKEN + ".has spaces in the thumbprint!!"},
        {"key_authorization": TOKEN + "."},
        {"identifier_type": "email", "identifier_value": "a@example.com"},
        {"identifier_value": "*.example.com"},  # wildcards only via dns-01
        {"identifier_value": "exa mple.com"},
        {"identifier_value": "127.0.0.1"},  # an IP is not a dns identifier
        {"identifier_value": ""},
        {"identifier_type": "ip", "identifier_value": "example.com"},
        {"identifier_type": "ip", "identifier_value": "[::1]"},
        {"challenge_type": "dns-01", "identifier_type": "ip", "identifier_value": "192.0.2.1"},
        {"challenge_type": "tls-alpn-01", "identifier_value": "*.example.com"},
    ],
)
async def test_malformed_requests(changes: dict[str, str]) -> None:
    va = ValidationAuthority(CONFIG, FakeClock())
    try:
        result = await va.validate(request(**changes))
    finally:
        await va.aclose()
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == ProblemType.MALFORMED
    assert result.records == ()


@pytest.mark.anyio
async def test_supported_types_and_detail_is_bounded() -> None:
    va = ValidationAuthority(CONFIG, FakeClock())
    try:
        assert va.supported_challenge_types == (
            "http-01",
            "dns-01",
            "tls-alpn-01",
            "dns-account-01",
            "dns-persist-01",
        )
        result = await va.validate(request(challenge_type="x" * 5000 + "\x00"))
    finally:
        await va.aclose()
    assert result.problem is not None
    assert len(result.problem.detail) < 200
    assert "\x00" not in result.problem.detail
