"""CAA evaluation (RFC 8659 §4, RFC 8657) table-tested, and the tree climb
against a scripted resolver."""

from __future__ import annotations

import pytest

from certmint.ca.va.caa import (
    CAAChecker,
    CAAQuestion,
    IssuerValue,
    evaluate_caa,
    parse_issuer_value,
    tree_climb,
)
from certmint.ca.va.model import VAConfig
from certmint.ca.va.resolver import CAARecord, DnsLookupError, VAResolver, dns_problem

US = "certmint.invalid"
ACCOUNT = "https://ca.example/acme/acct/abc"


def rec(tag: str, value: str, flags: int = 0) -> CAARecord:
    return CAARecord(flags=flags, tag=tag, value=value)


def ask(
    *, challenge: str = "http-01", account: str | None = ACCOUNT, wildcard: bool = False
) -> CAAQuestion:
    return CAAQuestion((US,), challenge, account, wildcard)


@pytest.mark.parametrize(
    ("rrset", "question", "permitted"),
    [
        # No records, or none that concern issuance.
        ((), ask(), True),
        ((rec("iodef", "mailto:sec@example.com"),), ask(), True),
        ((rec("iodef", "mailto:sec@example.com", flags=128),), ask(), True),
        ((rec("unknown", "x"),), ask(), True),  # non-critical unknown: ignored
        ((rec("issuewild", "other.example"),), ask(), True),  # issuewild ignored: not wildcard
        # issue naming us, another CA, or nobody.
        ((rec("issue", US),), ask(), True),
        ((rec("issue", "other.example"),), ask(), False),
        ((rec("issue", ";"),), ask(), False),
        ((rec("issue", ""),), ask(), False),
        ((rec("issue", "other.example"), rec("issue", US)), ask(), True),
        # Case-insensitive domain and tag; whitespace around the domain.
        ((rec("issue", "CertMint.Invalid"),), ask(), True),
        ((rec("ISSUE", US),), ask(), True),
        ((rec("ISSUE", "other.example"),), ask(), False),
        ((rec("issue", f" \t{US}\t "),), ask(), True),
        ((rec("issue", f"{US};"),), ask(), True),
        ((rec("issue", f"{US} ; "),), ask(), True),
        # Malformed values match nothing.
        ((rec("issue", f"{US}."),), ask(), False),
        ((rec("issue", f"-{US}"),), ask(), False),
        ((rec("issue", f"{US}; accounturi"),), ask(), False),
        ((rec("issue", f"{US}; a=b;"),), ask(), False),
        ((rec("issue", f"{US}; a=b c"),), ask(), False),
        ((rec("issue", f"{US}; -a=b"),), ask(), False),
        ((rec("issue", f"{US}; accounturi={ACCOUNT}; accounturi={ACCOUNT}"),), ask(), False),
        ((rec("issue", "cert\ufffdmint.invalid"),), ask(), False),
        # Critical unknown tag refuses, even alongside a permitting issue.
        ((rec("issue", US), rec("tbs", "x", flags=128)), ask(), False),
        ((rec("issue", US), rec("tbs", "x", flags=1)), ask(), False),  # Boulder's alias
        ((rec("tbs", "x", flags=128),), ask(), False),
        ((rec("issue", US, flags=128),), ask(), True),  # critical but known
        # RFC 8657 accounturi.
        ((rec("issue", f"{US}; accounturi={ACCOUNT}"),), ask(), True),
        ((rec("issue", f"{US};accounturi = {ACCOUNT}"),), ask(), True),
        ((rec("issue", f"{US}; AccountURI={ACCOUNT}"),), ask(), True),
        ((rec("issue", f"{US}; accounturi={ACCOUNT}x"),), ask(), False),
        ((rec("issue", f"{US}; accounturi={ACCOUNT}"),), ask(account=None), False),
        (
            (rec("issue", f"{US}; accounturi={ACCOUNT}x"), rec("issue", US)),
            ask(),
            True,  # any one matching property suffices
        ),
        # RFC 8657 validationmethods.
        ((rec("issue", f"{US}; validationmethods=http-01"),), ask(), True),
        ((rec("issue", f"{US}; validationmethods=dns-01,http-01"),), ask(), True),
        ((rec("issue", f"{US}; validationmethods=dns-01"),), ask(), False),
        ((rec("issue", f"{US}; validationmethods=http-01,"),), ask(), False),
        ((rec("issue", f"{US}; validationmethods=http_01,http-01"),), ask(), False),
        ((rec("issue", f"{US}; validationmethods=HTTP-01"),), ask(), False),
        (
            (rec("issue", f"{US}; accounturi={ACCOUNT}; validationmethods=dns-01"),),
            ask(challenge="dns-01"),
            True,
        ),
        (
            (rec("issue", f"{US}; accounturi={ACCOUNT}; validationmethods=dns-01"),),
            ask(),
            False,
        ),
        # Unknown parameters are ignored.
        ((rec("issue", f"{US}; policy=ev"),), ask(), True),
        # Wildcards: issuewild governs when present, else issue.
        ((rec("issue", US),), ask(wildcard=True), True),
        ((rec("issue", "other.example"),), ask(wildcard=True), False),
        ((rec("issue", US), rec("issuewild", ";")), ask(wildcard=True), False),
        ((rec("issue", US), rec("issuewild", "other.example")), ask(wildcard=True), False),
        ((rec("issue", ";"), rec("issuewild", US)), ask(wildcard=True), True),
        ((rec("issue", ";"), rec("issuewild", US)), ask(), False),
        ((rec("issuewild", US),), ask(), True),
        ((rec("iodef", "mailto:a@b.example"),), ask(wildcard=True), True),
    ],
)
def test_evaluate_caa(rrset: tuple[CAARecord, ...], question: CAAQuestion, permitted: bool) -> None:
    assert evaluate_caa(rrset, question).permitted is permitted


def test_refusal_reason_names_the_property_kind() -> None:
    verdict = evaluate_caa((rec("issuewild", ";"),), ask(wildcard=True))
    assert not verdict.permitted
    assert "issuewild" in verdict.reason and US in verdict.reason
    critical = evaluate_caa((rec("tbs", "x", flags=128),), ask())
    assert "critical" in critical.reason and "tbs" in critical.reason


@pytest.mark.parametrize(
    ("rrset", "question", "reason"),
    [
        ((rec("issue", ";"),), ask(), '"issue ;" forbids issuance by any CA'),
        ((rec("issue", "other.example"),), ask(), '"issue other.example" names another CA'),
        ((rec("issue", f"{US}."),), ask(), "does not follow the RFC 8659 §4.2 grammar"),
        (
            (rec("issue", f"{US}; accounturi={ACCOUNT}x"),),
            ask(),
            f"allows only that accounturi, not {ACCOUNT}",
        ),
        ((rec("issue", f"{US}; accounturi={ACCOUNT}"),), ask(account=None), "not no account"),
        (
            (rec("issue", f"{US}; validationmethods=dns-01"),),
            ask(),
            "does not allow validation method http-01",
        ),
        (
            (rec("issue", f"{US}; validationmethods=dns_01"),),
            ask(),
            "has a malformed validationmethods list",
        ),
        # The property meant for us is the one reported, whatever its place.
        (
            (rec("issue", "other.example"), rec("issue", f"{US}; validationmethods=dns-01")),
            ask(),
            'validationmethods=dns-01" does not allow validation method http-01 (and 1 more)',
        ),
        ((rec("issue", "a\x00b"),), ask(), '"issue a?b"'),  # never echoed raw
    ],
)
def test_refusal_reason_says_what_to_change(
    rrset: tuple[CAARecord, ...], question: CAAQuestion, reason: str
) -> None:
    verdict = evaluate_caa(rrset, question)
    assert not verdict.permitted
    assert verdict.reason.startswith(f"no issue property permits {US} to issue: ")
    assert reason in verdict.reason


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("ca.example", IssuerValue("ca.example", {})),
        (";", IssuerValue("", {})),
        ("  ", IssuerValue("", {})),
        ("ca.example; a=1; b = 2 ", IssuerValue("ca.example", {"a": "1", "b": "2"})),
        ("ca.example; a=x=y", IssuerValue("ca.example", {"a": "x=y"})),
        ("ca.example;a=", IssuerValue("ca.example", {"a": ""})),
        ("; a=1", IssuerValue("", {"a": "1"})),
        ("ca..example", None),
        ("ca.example-", None),
        ("ca_example", None),
        ("ca.example; =1", None),
        ("ca.example;;a=1", None),
    ],
)
def test_parse_issuer_value(value: str, parsed: IssuerValue | None) -> None:
    assert parse_issuer_value(value) == parsed


def test_tree_climb() -> None:
    climb = ["a.b.example.com", "b.example.com", "example.com", "com"]
    assert tree_climb("a.b.example.com") == climb
    assert tree_climb("example.com.") == ["example.com", "com"]


class ScriptedResolver(VAResolver):
    """Answers CAA lookups from a table; a DnsLookupError value is raised."""

    def __init__(self, answers: dict[str, tuple[CAARecord, ...] | DnsLookupError]) -> None:
        super().__init__(VAConfig(resolvers=("127.0.0.1:9",)))
        self.answers = answers
        self.asked: list[str] = []

    async def lookup_caa(self, name: str) -> tuple[CAARecord, ...]:
        self.asked.append(name)
        answer = self.answers.get(name, ())
        if isinstance(answer, DnsLookupError):
            raise answer
        return answer


async def check(
    answers: dict[str, tuple[CAARecord, ...] | DnsLookupError], host: str = "www.example.com"
) -> tuple[str | None, str]:
    checker = CAAChecker(ScriptedResolver(answers), (US,))
    problem = await checker.check(
        host, challenge_type="http-01", account_uri=ACCOUNT, wildcard=False
    )
    return (problem.type, problem.detail) if problem is not None else (None, "")


@pytest.mark.anyio
async def test_climb_uses_the_closest_non_empty_rrset() -> None:
    forbid = (rec("issue", ";"),)
    allow = (rec("issue", US),)
    assert (await check({"example.com": forbid}))[0] == "caa"
    assert (await check({"www.example.com": allow, "example.com": forbid}))[0] is None
    assert (await check({"com": forbid}))[0] == "caa"
    _, detail = await check({"example.com": forbid})
    assert "CAA record for example.com prevents issuance" in detail
    assert detail.startswith("While processing CAA for www.example.com")


@pytest.mark.anyio
async def test_empty_everywhere_permits() -> None:
    resolver = ScriptedResolver({})
    checker = CAAChecker(resolver, (US,))
    problem = await checker.check(
        "a.b.example.com", challenge_type="dns-01", account_uri=None, wildcard=True
    )
    assert problem is None
    assert sorted(resolver.asked) == sorted(tree_climb("a.b.example.com"))


@pytest.mark.anyio
async def test_lookup_failure_is_not_permission() -> None:
    failure = DnsLookupError(dns_problem("DNS problem: SERVFAIL looking up CAA for example.com"))
    kind, detail = await check({"example.com": failure})
    assert kind == "dns"
    assert "looking up CAA for example.com" in detail
    # A failure above a non-empty RRset does not matter: the closer set rules.
    assert (await check({"www.example.com": (rec("issue", US),), "com": failure}))[0] is None
    # A failure below one does: records there might have forbidden issuance.
    failure_low = DnsLookupError(dns_problem("DNS problem: SERVFAIL looking up CAA"))
    answers: dict[str, tuple[CAARecord, ...] | DnsLookupError] = {
        "www.example.com": failure_low,
        "example.com": (rec("issue", US),),
    }
    assert (await check(answers))[0] == "dns"
