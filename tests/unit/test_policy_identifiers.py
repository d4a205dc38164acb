"""The policy authority's identifier rules, table-tested: dns names (IDNA2008,
lengths, Public Suffix List, blocklists, wildcards) and ip identifiers (RFC
8738: canonical text, special-purpose ranges, challenge types)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from certmint.ca import errors
from certmint.ca.cli import CliError, _parser, _policy_config, read_blocked_names
from certmint.ca.config import SHORTLIVED, PolicyConfig
from certmint.ca.policy import (
    SPECIAL_PURPOSE_RANGES,
    PolicyAuthority,
    icann_public_suffix,
    special_purpose_reason,
)
from certmint.protocol.messages import Identifier
from certmint.protocol.problems import ProblemType

ALL_CHALLENGES = ("http-01", "dns-01", "tls-alpn-01")


def make_pa(**changes: object) -> PolicyAuthority:
    return PolicyAuthority(replace(PolicyConfig(), **changes), ALL_CHALLENGES)  # type: ignore[arg-type]


def check(pa: PolicyAuthority, *idents: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    # shortlived: the profile that allows both dns and ip identifiers; the
    # per-profile rules are tested in test_policy_profiles.py.
    return pa.check_order_identifiers(tuple(Identifier(t, v) for t, v in idents), SHORTLIVED)


def refusal(pa: PolicyAuthority, id_type: str, value: str) -> errors.AcmeError:
    with pytest.raises(errors.AcmeError) as caught:
        check(pa, (id_type, value))
    exc = caught.value
    # Every refusal of one identifier carries a subproblem naming it
    # (RFC 8555 §6.7.1).
    assert len(exc.subproblems) == 1
    assert exc.subproblems[0].identifier == (id_type, value)
    assert exc.subproblems[0].type == exc.problem_type
    return exc


# -- dns identifiers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("www.example.com", "www.example.com"),
        ("WWW.Example.COM", "www.example.com"),
        ("*.example.com", "*.example.com"),
        ("bücher.example.com", "xn--bcher-kva.example.com"),  # U-label -> A-label
        ("xn--bcher-kva.example.com", "xn--bcher-kva.example.com"),
        ("example.co.uk", "example.co.uk"),
        ("*.example.co.uk", "*.example.co.uk"),
        ("github.io", "github.io"),  # PRIVATE section suffix: ignored (BR 3.2.2.6)
        ("me.github.io", "me.github.io"),
        ("a." * 60 + "example.com", "a." * 60 + "example.com"),  # 132 octets
        ("x" * 63 + ".example.com", "x" * 63 + ".example.com"),
    ],
)
def test_dns_names_accepted(value: str, expected: str) -> None:
    assert check(make_pa(), ("dns", value)) == (("dns", expected),)


@pytest.mark.parametrize(
    ("value", "detail_part"),
    [
        ("com", "single label"),
        ("co.uk", "public suffix"),
        ("*.co.uk", "wildcard over a public suffix"),
        ("*.com", "single label"),
        ("xn--p1ai", "single label"),
        ("k12.ak.us", "public suffix"),
        ("www.example.test", 'top-level domain "test" is not on the Public Suffix List'),
        ("host.example", "not on the Public Suffix List"),
        ("printer.local", "not on the Public Suffix List"),
        ("db.internal", "not on the Public Suffix List"),
        ("app.localhost", "not on the Public Suffix List"),
        ("bad.invalid", "not on the Public Suffix List"),
        ("x" * 64 + ".example.com", "longer than 63"),
        (("a" * 60 + ".") * 4 + "example.com", "longer than 253"),
        ("a..example.com", "empty label"),
        ("example.com.", "trailing dot"),
        ("under_score.example.com", "letters, digits and hyphens"),
        ("-lead.example.com", "hyphen"),
        ("ab--cd.example.com", "third and fourth"),
        ("xn--zz.example.com", "A-label"),
        ("www.*.example.com", "wildcard"),
        ("*.*.example.com", "wildcard"),
        ("1.2.3.4", "use an identifier of type ip"),
        ("4.3.2.1.in-addr.arpa", "reverse-mapping"),
        ("1.0.0.ip6.arpa", "reverse-mapping"),
    ],
)
def test_dns_names_refused(value: str, detail_part: str) -> None:
    exc = refusal(make_pa(), "dns", value)
    assert exc.problem_type == ProblemType.REJECTED_IDENTIFIER
    assert detail_part in exc.subproblems[0].detail, exc.subproblems[0].detail


def test_unlisted_tlds_allowed_by_operator() -> None:
    pa = make_pa(allow_unlisted_tlds=True)
    assert check(pa, ("dns", "www.example.test")) == (("dns", "www.example.test"),)
    assert check(pa, ("dns", "*.corp.internal")) == (("dns", "*.corp.internal"),)
    # Listed suffixes stay refused even so.
    assert "public suffix" in refusal(pa, "dns", "co.uk").detail


def test_icann_public_suffix_lookup() -> None:
    assert icann_public_suffix("www.example.co.uk") == "co.uk"
    assert icann_public_suffix("me.github.io") == "io"
    assert icann_public_suffix("host.example") is None


@pytest.mark.parametrize(
    ("value", "blocked"),
    [
        ("bank.example.com", True),  # exact
        ("*.bank.example.com", True),  # a wildcard covers the exact name
        ("www.bank.example.com", False),  # exact only
        ("evil.example.net", True),  # suffix itself
        ("a.b.evil.example.net", True),  # under the suffix
        ("*.evil.example.net", True),
        ("notevil.example.net", False),  # label-wise, not string-wise
    ],
)
def test_blocklists(value: str, blocked: bool) -> None:
    pa = make_pa(
        blocked_names=frozenset({"bank.example.com"}),
        blocked_suffixes=frozenset({"evil.example.net"}),
    )
    if blocked:
        assert "forbids" in refusal(pa, "dns", value).detail
    else:
        assert check(pa, ("dns", value)) == (("dns", value),)


def test_wildcard_needs_dns01() -> None:
    pa = PolicyAuthority(PolicyConfig(), ("http-01", "tls-alpn-01"))
    assert "dns-01" in refusal(pa, "dns", "*.example.com").detail


def test_several_bad_identifiers_give_one_subproblem_each() -> None:
    with pytest.raises(errors.RejectedIdentifier) as caught:
        check(make_pa(), ("dns", "co.uk"), ("ip", "10.0.0.1"), ("dns", "ok.example.com"))
    subs = caught.value.subproblems
    assert [s.identifier for s in subs] == [("dns", "co.uk"), ("ip", "10.0.0.1")]
    assert "2 identifiers were refused" in caught.value.detail


def test_unsupported_type_is_unsupported_identifier() -> None:
    exc = refusal(make_pa(), "email", "a@example.com")
    assert exc.problem_type == ProblemType.UNSUPPORTED_IDENTIFIER


def test_max_names_per_order() -> None:
    pa = make_pa(max_names_per_order=2)
    assert len(check(pa, ("dns", "a.example.com"), ("ip", "8.8.8.8"))) == 2
    with pytest.raises(errors.RejectedIdentifier, match="at most 2"):
        check(pa, ("dns", "a.example.com"), ("dns", "b.example.com"), ("ip", "8.8.8.8"))
    # Duplicates after normalisation count once.
    assert len(check(pa, ("dns", "A.example.com"), ("dns", "a.example.com"))) == 1


# -- ip identifiers (RFC 8738) -----------------------------------------------------


@pytest.mark.parametrize("value", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"])
def test_public_ips_accepted(value: str) -> None:
    assert check(make_pa(), ("ip", value)) == (("ip", value),)


@pytest.mark.parametrize(
    ("value", "detail_part"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private range (RFC 1918)"),
        ("172.16.0.1", "RFC 1918"),
        ("192.168.1.1", "RFC 1918"),
        ("100.64.0.1", "CGNAT"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "unique-local"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("240.0.0.1", "class E"),
        ("0.1.2.3", "'this network'"),
        ("192.0.0.8", "IETF protocol assignments"),
        ("2001::1", "IETF protocol assignments"),
        ("64:ff9b::808:808", "translation"),
        ("2002:808:808::1", "6to4"),
        ("100::1", "discard-only"),
        ("fec0::1", "site-local"),
        ("4000::1", "special-purpose or unallocated"),  # outside 2000::/3
        # Never certifiable, whatever the operator allows:
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("::ffff:808:808", "IPv4-mapped"),
    ],
)
def test_special_purpose_ips_refused(value: str, detail_part: str) -> None:
    exc = refusal(make_pa(), "ip", value)
    assert exc.problem_type == ProblemType.REJECTED_IDENTIFIER
    assert detail_part in exc.subproblems[0].detail, exc.subproblems[0].detail


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.0.0.1", True),
        ("fd00::1", True),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::ffff:7f00:1", False),
    ],
)
def test_private_ips_allowed_by_operator(value: str, allowed: bool) -> None:
    pa = make_pa(allow_private_ip_identifiers=True)
    if allowed:
        assert check(pa, ("ip", value)) == (("ip", value),)
    else:
        refusal(pa, "ip", value)


@pytest.mark.parametrize(
    ("value", "detail_part"),
    [
        ("2001:DB8::1", 'write it as "2001:db8::1"'),
        ("2606:4700:4700:0:0:0:0:1111", 'write it as "2606:4700:4700::1111"'),
        ("01.2.3.4", "not a valid IP address"),
        ("1.2.3", "not a valid IP address"),
        ("8.8.8.8%eth0", "not a valid IP address"),
        ("fe80::1%1", "not a valid IP address"),
        ("[2606:4700::1]", "not a valid IP address"),
        ("*.8.8.8.8", "not a valid IP address"),  # no wildcard IPs
        ("example.com", "not a valid IP address"),
        (" 8.8.8.8", "not a valid IP address"),
    ],
)
def test_non_canonical_or_invalid_ips_refused(value: str, detail_part: str) -> None:
    exc = refusal(make_pa(), "ip", value)
    assert detail_part in exc.subproblems[0].detail, exc.subproblems[0].detail


def test_ip_challenge_types_are_http01_and_tlsalpn01_only() -> None:
    pa = make_pa()
    assert pa.challenge_types_for("8.8.8.8", False, "ip") == ("http-01", "tls-alpn-01")
    assert pa.challenge_types_for("example.com", True, "dns") == ("dns-01",)
    assert pa.challenge_types_for("example.com", False) == ALL_CHALLENGES


def test_ip_refused_when_only_dns01_is_enabled() -> None:
    pa = PolicyAuthority(PolicyConfig(enabled_challenges=("dns-01",)), ALL_CHALLENGES)
    assert "http-01 or tls-alpn-01" in refusal(pa, "ip", "8.8.8.8").detail


def test_special_purpose_table_is_consistent() -> None:
    for network, what in SPECIAL_PURPOSE_RANGES:
        assert special_purpose_reason(network.network_address) == what
        assert "RFC" in what
    assert special_purpose_reason(ipaddress.ip_address("8.8.4.4")) is None
    assert special_purpose_reason(ipaddress.ip_address("2a00:1450:4001::1")) is None


# -- operator input: certmint-ca serve flags -----------------------------------------


def test_blocked_names_file(tmp_path: Path) -> None:
    path = tmp_path / "blocked.txt"
    path.write_text(
        "# operator blocklist\n"
        "Exact.Example.com\n"
        "\n"
        "*.evil.example.net   # and everything under it\n"
        "*.test\n"
        "bücher.example.com\n",
        encoding="utf-8",
    )
    exact, suffixes = read_blocked_names(path)
    assert exact == {"exact.example.com", "xn--bcher-kva.example.com"}
    assert suffixes == {"evil.example.net", "test"}


@pytest.mark.parametrize("line", ["bad..name", "*.*.x.example", "under_score.example.com"])
def test_blocked_names_file_refuses_bad_lines(tmp_path: Path, line: str) -> None:
    path = tmp_path / "blocked.txt"
    path.write_text(f"ok.example.com\n{line}\n", encoding="utf-8")
    with pytest.raises(CliError, match=r"blocked.txt:2:"):
        read_blocked_names(path)


def test_serve_flags_build_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "blocked.txt"
    path.write_text("a.example.com\n*.b.example.com\n", encoding="utf-8")
    args = _parser().parse_args(
        ["serve", "--blocked-names-file", str(path), "--max-names", "7", "--allow-unlisted-tlds"]
    )
    policy = _policy_config(args)
    assert policy.blocked_names == {"a.example.com"}
    assert policy.blocked_suffixes == {"b.example.com"}
    assert policy.max_names_per_order == 7
    assert policy.allow_unlisted_tlds and not policy.allow_private_ip_identifiers
    default = _policy_config(_parser().parse_args(["serve"]))
    assert default == PolicyConfig()
    dev = _policy_config(_parser().parse_args(["serve", "--dev"]))
    assert dev.allow_unlisted_tlds and dev.allow_private_ip_identifiers
    with pytest.raises(CliError, match="--max-names"):
        _policy_config(_parser().parse_args(["serve", "--max-names", "0"]))
