"""AddressPolicy: which addresses the VA may dial, and the plan it cuts down.
Pure rules, no network; the real-socket rows are in
tests/integration/test_va_failure_table.py."""

import pytest

from certmint.ca.va.addresses import AddressPolicy, parse_networks
from certmint.ca.va.model import VAConfig
from certmint.ca.va.resolver import DialPlan

LOOPBACK_ONLY = AddressPolicy.for_config(
    VAConfig(allowed_private_networks=("127.0.0.0/8", "::1/128"))
)


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("127.0.0.1", None),
        ("127.3.2.1", None),
        ("::1", None),
        ("::ffff:127.0.0.1", None),  # judged as the IPv4 address it carries
        ("8.8.8.8", None),  # public addresses are always fine
        ("2001:4860:4860::8888", None),
        ("10.0.0.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("100.64.0.1", "a non-public address"),
        ("fd00::1", "a private address"),
        ("0.0.0.0", "an unspecified address"),
        ("example.com", "not an IP address"),
    ],
)
def test_loopback_allowed_everything_else_non_public_refused(
    address: str, refusal: str | None
) -> None:
    assert LOOPBACK_ONLY.refusal(address) == refusal


def test_defaults_refuse_loopback_and_the_switch_allows_all() -> None:
    assert AddressPolicy.for_config(VAConfig()).refusal("127.0.0.1") == "a loopback address"
    everything = AddressPolicy.for_config(VAConfig(allow_private_addresses=True))
    assert everything.refusal("10.0.0.1") is None
    assert everything.refusal("not-an-ip") == "not an IP address"


@pytest.mark.parametrize("spec", ["127.0.0.1/8", "10.0.0.0/33", "loopback", ""])
def test_bad_networks_are_refused_at_start(spec: str) -> None:
    with pytest.raises(ValueError, match="allowed private network"):
        parse_networks([spec])


def test_restrict_drops_refused_addresses_and_keeps_boulders_order() -> None:
    plan = DialPlan(
        resolved=("fd00::1", "::1", "10.0.0.1", "127.0.0.9", "127.0.0.1"),
        candidates=("fd00::1", "10.0.0.1"),
    )
    cut = LOOPBACK_ONLY.restrict(plan, "mixed.example")
    assert cut.resolved == plan.resolved  # the record shows everything resolved
    assert cut.candidates == ("::1", "127.0.0.9")
    assert cut.refusal is None


def test_restrict_says_which_address_was_refused_and_what_to_fix() -> None:
    plan = DialPlan(resolved=("192.168.0.7", "10.0.0.1"), candidates=("192.168.0.7",))
    cut = LOOPBACK_ONLY.restrict(plan, "intranet.example")
    assert cut.candidates == ()
    assert cut.refusal == (
        "intranet.example resolves to 192.168.0.7, which is a private address; the CA only "
        "connects to public addresses (check the A and AAAA records of intranet.example)"
    )
    literal = DialPlan(resolved=("10.0.0.1",), candidates=("10.0.0.1",))
    assert LOOPBACK_ONLY.restrict(literal, "10.0.0.1").refusal == (
        "10.0.0.1 is a private address; the CA only connects to public addresses"
    )
