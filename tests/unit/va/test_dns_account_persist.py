"""dns-account-01 and dns-persist-01 without a network: the label and record
names, the persist record grammar, the record evaluation, the VA's input
checks, the PA's challenge offer and the challenge JSON."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from certmint.ca import errors
from certmint.ca.config import CAConfig, PolicyConfig
from certmint.ca.policy import PolicyAuthority
from certmint.ca.storage.records import ChallengeRecord
from certmint.ca.urls import AcmeUrls
from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.dns_persist01 import PersistQuestion, evaluate_persist_records
from certmint.ca.va.model import VAConfig, ValidationRequest
from certmint.ca.wfe.render import Renderer
from certmint.protocol.challenges import (
    PersistRecord,
    PersistRecordError,
    dns_account01_record_name,
    dns_account_label,
    dns_persist01_issuer_domain_names,
    dns_persist01_record_name,
    dns_persist01_txt_value,
    normalize_issuer_domain_name,
    parse_persist_record,
)
from certmint.protocol.messages import Identifier
from certmint.protocol.problems import ProblemType
from certmint.testing.clock import FakeClock

ALL_FIVE = ("http-01", "dns-01", "tls-alpn-01", "dns-account-01", "dns-persist-01")
ACCOUNT = "https://ca.example/acct/123"
US = "authority.example"

# -- dns-account-01: the label (draft-ietf-acme-dns-account-label-02 §3) -------


def test_label_matches_the_drafts_example() -> None:
    # The draft's own example account URL and label (also used as a test
    # vector by Boulder, Pebble and open-mpic).
    assert dns_account_label("https://example.com/acme/acct/ExampleAccount") == "ujmmovf2vn55tgye"


@pytest.mark.parametrize(
    "url", ["https://ca.example/acct/1", "https://127.0.0.1:14000/acme/acct/x", "é"]
)
def test_label_is_sixteen_lowercase_base32_characters(url: str) -> None:
    label = dns_account_label(url)
    assert len(label) == 16
    assert set(label) <= set("abcdefghijklmnopqrstuvwxyz234567")
    # Independent recomputation: the first ten octets of SHA-256, no padding.
    import hashlib

    first_ten = hashlib.sha256(url.encode()).digest()[:10]
    assert base64.b32decode(label.upper()) == first_ten


def test_label_depends_on_the_exact_url() -> None:
    # The URL is hashed as given: no normalisation, so a trailing slash or a
    # different case is another account's label.
    base = dns_account_label(ACCOUNT)
    assert dns_account_label(ACCOUNT + "/") != base
    assert dns_account_label(ACCOUNT.upper()) != base


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("example.org", "_ujmmovf2vn55tgye._acme-challenge.example.org"),
        ("*.example.org", "_ujmmovf2vn55tgye._acme-challenge.example.org"),
        ("www.example.org.", "_ujmmovf2vn55tgye._acme-challenge.www.example.org"),
    ],
)
def test_dns_account01_record_name(domain: str, expected: str) -> None:
    assert dns_account01_record_name(domain, "https://example.com/acme/acct/ExampleAccount") == (
        expected
    )


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("example.com", "_validation-persist.example.com"),
        ("*.example.com", "_validation-persist.example.com"),
        ("dept.example.com.", "_validation-persist.dept.example.com"),
    ],
)
def test_dns_persist01_record_name(domain: str, expected: str) -> None:
    assert dns_persist01_record_name(domain) == expected


# -- dns-persist-01: the record grammar (draft-ietf-acme-dns-persist-00 §4) ----

WELL_FORMED: list[tuple[str, str, PersistRecord]] = [
    (
        "the draft's basic example (§4, figure 2, strings joined)",
        "authority.example; accounturi=https://ca.example/acct/123",
        PersistRecord(US, ACCOUNT),
    ),
    (
        "wildcard policy (§10.2)",
        "authority.example; accounturi=https://ca.example/acct/123; policy=wildcard",
        PersistRecord(US, ACCOUNT, "wildcard"),
    ),
    (
        "persistUntil (§10.3)",
        "authority.example; accounturi=https://ca.example/acct/123; persistUntil=1721952000",
        PersistRecord(US, ACCOUNT, None, 1721952000),
    ),
    (
        "no whitespace at all",
        "authority.example;accounturi=https://ca.example/acct/123;policy=wildcard",
        PersistRecord(US, ACCOUNT, "wildcard"),
    ),
    (
        "tabs and spaces around separators and '=' (RFC 8659 §4.2 *WSP)",
        " \tauthority.example \t;\t accounturi \t=\t https://ca.example/acct/123 \t; "
        "policy = wildcard \t",
        PersistRecord(US, ACCOUNT, "wildcard"),
    ),
    (
        "issuer case-folded and its trailing dot dropped (§9.1.1)",
        "Authority.EXAMPLE.; accounturi=https://ca.example/acct/123",
        PersistRecord(US, ACCOUNT),
    ),
    (
        "tags match case-insensitively; values are kept as written",
        "authority.example; AccountURI=https://ca.example/acct/123; POLICY=WildCard; "
        "PERSISTUNTIL=5",
        PersistRecord(US, ACCOUNT, "WildCard", 5),
    ),
    (
        "unknown parameters are ignored (§4 item 1), even repeated or empty",
        "authority.example; future-tag=x; accounturi=https://ca.example/acct/123; "
        "future-tag=y; other=",
        PersistRecord(US, ACCOUNT),
    ),
    (
        "'=' inside a value belongs to the value",
        "authority.example; accounturi=https://ca.example/acct?id=123",
        PersistRecord(US, "https://ca.example/acct?id=123"),
    ),
    (
        # §9.1.1's own example does not add up ("üÑICODE" folds to "üñicode",
        # and the A-label it shows decodes to "énicode"): a well-known one.
        "a U-label issuer becomes its A-label (§9.1.1)",
        "BÜCHER.example.; accounturi=https://ca.example/acct/123",
        PersistRecord("xn--bcher-kva.example", ACCOUNT),
    ),
    (
        "an empty policy is no policy (§4 item 4)",
        "authority.example; accounturi=https://ca.example/acct/123; policy=",
        PersistRecord(US, ACCOUNT, ""),
    ),
]


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in WELL_FORMED], ids=[c[0] for c in WELL_FORMED]
)
def test_well_formed_records(value: str, expected: PersistRecord) -> None:
    assert parse_persist_record(value) == expected


# (case, value, issuer the error still names or None, words in the reason)
MALFORMED: list[tuple[str, str, str | None, str]] = [
    ("empty value", "", None, "no issuer-domain-name"),
    ("only whitespace", " \t ", None, "no issuer-domain-name"),
    ("no issuer before ';'", "; accounturi=https://ca.example/acct/123", None, "no issuer"),
    ("issuer with an underscore", "authority_x.example; accounturi=a", None, "not a domain"),
    ("issuer with a space inside", "authority .example; accounturi=a", None, "not a domain"),
    ("issuer label starting with '-'", "-authority.example; accounturi=a", None, "not a domain"),
    ("issuer with two trailing dots", "authority.example..; accounturi=a", None, "not a domain"),
    ("no accounturi (§4 item 3)", "authority.example", US, "no accounturi"),
    ("';' but no parameters", "authority.example;", US, "no accounturi"),
    ("empty accounturi", "authority.example; accounturi=", US, "no accounturi"),
    ("only other parameters", "authority.example; policy=wildcard", US, "no accounturi"),
    ("a trailing ';'", "authority.example; accounturi=a;", US, "empty parameter"),
    ("two ';' in a row", "authority.example; accounturi=a;; policy=wildcard", US, "empty"),
    ("a parameter without '='", "authority.example; accounturi=a; wildcard", US, "tag=value"),
    ("an empty tag", "authority.example; =x; accounturi=a", US, "tag=value"),
    ("a tag with '_'", "authority.example; account_uri=a; accounturi=a", US, "tag=value"),
    ("whitespace inside a value", "authority.example; accounturi=a b", US, "whitespace"),
    ("a control character in a value", "authority.example; accounturi=a\x01", US, "whitespace"),
    ("non-ASCII in a value", "authority.example; accounturi=https://é.example/1", US, "ASCII"),
    ("accounturi twice (§9.2.1)", "authority.example; accounturi=a; accounturi=a", US, "twice"),
    ("accounturi twice, other case", "authority.example; accounturi=a; ACCOUNTURI=b", US, "twice"),
    ("policy twice", "authority.example; accounturi=a; policy=x; policy=wildcard", US, "twice"),
    ("persistUntil not a number", "authority.example; accounturi=a; persistUntil=soon", US, "UNIX"),
    ("persistUntil negative", "authority.example; accounturi=a; persistUntil=-1", US, "UNIX"),
    ("persistUntil with a sign", "authority.example; accounturi=a; persistUntil=+1", US, "UNIX"),
    ("persistUntil fractional", "authority.example; accounturi=a; persistUntil=1.5", US, "UNIX"),
    ("persistUntil empty", "authority.example; accounturi=a; persistUntil=", US, "UNIX"),
    ("persistUntil in hex", "authority.example; accounturi=a; persistUntil=0x10", US, "UNIX"),
    (
        "persistUntil too long",
        "authority.example; accounturi=a; persistUntil=" + "9" * 19,
        US,
        "UNIX",
    ),
]


@pytest.mark.parametrize(
    ("value", "issuer", "reason"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_records(value: str, issuer: str | None, reason: str) -> None:
    with pytest.raises(PersistRecordError) as caught:
        parse_persist_record(value)
    assert caught.value.issuer_domain_name == issuer
    assert reason in caught.value.reason
    assert len(caught.value.reason) < 200


def test_persist_until_edge_is_inclusive() -> None:
    # §4 item 5: not valid "after the specified timestamp"; at it, still valid.
    record = parse_persist_record(f"{US}; accounturi={ACCOUNT}; persistUntil=1721952000")
    at = datetime(2024, 7, 26, tzinfo=UTC)
    assert at.timestamp() == 1721952000
    assert record.persists_at(at - timedelta(seconds=1))
    assert record.persists_at(at)
    assert not record.persists_at(at + timedelta(microseconds=1))
    assert not record.persists_at(at + timedelta(seconds=1))
    assert parse_persist_record(f"{US}; accounturi={ACCOUNT}").persists_at(
        datetime.max.replace(tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("policy", "wildcard"),
    [("wildcard", True), ("WILDCARD", True), ("Wildcard", True), ("subdomains", False),
     ("wildcards", False), ("", False), (None, False)],
)  # fmt: skip
def test_only_policy_wildcard_allows_wildcards(policy: str | None, wildcard: bool) -> None:
    assert PersistRecord(US, ACCOUNT, policy).allows_wildcard is wildcard


def test_txt_value_round_trips() -> None:
    value = dns_persist01_txt_value("Authority.Example.", ACCOUNT, wildcard=True, persist_until=7)
    assert value == f"{US}; accounturi={ACCOUNT}; policy=wildcard; persistUntil=7"
    assert parse_persist_record(value) == PersistRecord(US, ACCOUNT, "wildcard", 7)
    assert dns_persist01_txt_value(US, ACCOUNT) == f"{US}; accounturi={ACCOUNT}"


def test_issuer_domain_names_from_caa_identities() -> None:
    # §3.1: lower-case A-labels without a trailing dot, no empty list entries,
    # at most ten; unusable identities are left out rather than sent.
    identities = ("Authority.Example.", "authority.example", "bad_name", "ca.example.net")
    assert dns_persist01_issuer_domain_names(identities) == (US, "ca.example.net")
    many = tuple(f"ca{i}.example" for i in range(12))
    assert dns_persist01_issuer_domain_names(many) == many[:10]
    assert dns_persist01_issuer_domain_names(()) == ()
    assert normalize_issuer_domain_name("CA.Example.") == "ca.example"


# -- dns-persist-01: which record wins, and the problem when none does ---------

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NAME = "_validation-persist.example.com"


def question(*, wildcard: bool = False, issuers: tuple[str, ...] = (US,)) -> PersistQuestion:
    return PersistQuestion(NAME, issuers, ACCOUNT, wildcard, NOW)


def good(**extra: str) -> str:
    params = "".join(f"; {k}={v}" for k, v in extra.items())
    return f"{US}; accounturi={ACCOUNT}{params}"


def test_one_good_record_among_others_authorizes() -> None:
    values = (
        f"other.example; accounturi={ACCOUNT}",
        "garbage",
        f"{US}; accounturi={ACCOUNT}-other",
        good(),
    )
    assert evaluate_persist_records(values, question()) is None


def test_any_of_several_issuer_names_matches() -> None:
    values = (f"ca.example.net; accounturi={ACCOUNT}",)
    assert evaluate_persist_records(values, question(issuers=(US, "ca.example.net"))) is None


def test_wildcard_with_policy_wildcard() -> None:
    assert evaluate_persist_records((good(policy="WILDCARD"),), question(wildcard=True)) is None


def test_unexpired_persist_until() -> None:
    assert (
        evaluate_persist_records((good(persistUntil=str(int(NOW.timestamp()))),), question())
        is None
    )


# (case, values, wildcard, problem type, words in the detail)
REFUSALS: list[tuple[str, tuple[str, ...], bool, str, list[str]]] = [
    ("no record", (), False, ProblemType.UNAUTHORIZED, [f"No TXT record found at {NAME}"]),
    (
        "another CA's record",
        (f"other.example; accounturi={ACCOUNT}",),
        False,
        ProblemType.UNAUTHORIZED,
        [f"No TXT record at {NAME} names this CA's issuer domain name ({US})", "other.example"],
    ),
    (
        "accounturi of another account",
        (good().replace(ACCOUNT, ACCOUNT + "4"),),
        False,
        ProblemType.UNAUTHORIZED,
        ['accounturi "https://ca.example/acct/1234"', f"not this account's {ACCOUNT}"],
    ),
    (
        "accounturi differs in case only (compared exactly, RFC 8657 §3)",
        (good().replace("ca.example", "CA.example"),),
        False,
        ProblemType.UNAUTHORIZED,
        ["accounturi"],
    ),
    (
        "wildcard without policy",
        (good(),),
        True,
        ProblemType.UNAUTHORIZED,
        ["has no policy, but a wildcard name needs policy=wildcard"],
    ),
    (
        "wildcard with another policy",
        (good(policy="subdomains"),),
        True,
        ProblemType.UNAUTHORIZED,
        ['has policy="subdomains", but a wildcard name needs policy=wildcard'],
    ),
    (
        "persistUntil passed",
        (good(persistUntil=str(int(NOW.timestamp()) - 1)),),
        False,
        ProblemType.UNAUTHORIZED,
        ["persistUntil=1793534399 (2026-11-01T11:59:59Z), which has passed"],
    ),
    (
        "the closest failure is named: policy beats persistUntil beats accounturi",
        (
            good().replace(ACCOUNT, ACCOUNT + "4"),
            good(persistUntil="1"),
            good(),
            "other.example; accounturi=x",
        ),
        True,
        ProblemType.UNAUTHORIZED,
        ["needs policy=wildcard", "(and 2 records for this CA failed too)"],
    ),
    (
        "a record naming us but ill-formed is malformed (§9.2.1)",
        (f"{US}; accounturi={ACCOUNT}; persistUntil=tomorrow", "other.example; accounturi=x"),
        False,
        ProblemType.MALFORMED,
        [f'Malformed TXT record at {NAME} for {US}: persistUntil "tomorrow"'],
    ),
    (
        "well-formed failures outrank malformed records, which are counted",
        (f"{US}; accounturi={ACCOUNT};", "!!!", good().replace(ACCOUNT, "x")),
        False,
        ProblemType.UNAUTHORIZED,
        ['accounturi "x"', "(2 records malformed, skipped)"],
    ),
    (
        "nothing readable",
        ("v=spf1 -all", "!!!"),
        False,
        ProblemType.UNAUTHORIZED,
        [f"No well-formed TXT record found at {NAME} (2 records skipped; the first:"],
    ),
    (
        "hostile text is bounded and made printable",
        (f"{US}; accounturi=" + "\x7e" * 500,),
        False,
        ProblemType.UNAUTHORIZED,
        ["~" * 100 + '"'],
    ),
]


@pytest.mark.parametrize(
    ("values", "wildcard", "kind", "words"),
    [c[1:] for c in REFUSALS],
    ids=[c[0] for c in REFUSALS],
)
def test_refusals(values: tuple[str, ...], wildcard: bool, kind: str, words: list[str]) -> None:
    problem = evaluate_persist_records(values, question(wildcard=wildcard))
    assert problem is not None
    assert problem.type == kind
    assert problem.status == (400 if kind == ProblemType.MALFORMED else 403)
    for word in words:
        assert word in problem.detail
    assert len(problem.detail) < 500
    assert problem.detail.isprintable()


# -- the VA's input checks: refused before any network use ---------------------

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
# Nobody listens there: a request that got past the input checks would end
# in a dns problem, not malformed.
UNREACHABLE = VAConfig(resolvers=("127.0.0.1:9",), dns_timeout=0.2, total_timeout=0.5)


async def validate(*, config: VAConfig = UNREACHABLE, **changes: object) -> tuple[str, str]:
    fields: dict[str, object] = {
        "challenge_type": "dns-account-01",
        "identifier_type": "dns",
        "identifier_value": "example.com",
        "token": TOKEN,
        "key_authorization": KEYAUTHZ,
        "account_uri": ACCOUNT,
    }
    fields.update(changes)
    va = ValidationAuthority(config, FakeClock())
    try:
        result = await va.validate(ValidationRequest(**fields))  # type: ignore[arg-type]
    finally:
        await va.aclose()
    assert not result.valid and result.problem is not None
    return result.problem.type, result.problem.detail


@pytest.mark.anyio
@pytest.mark.parametrize(
    "changes",
    [
        {"identifier_type": "ip", "identifier_value": "192.0.2.1"},
        {"challenge_type": "dns-persist-01", "identifier_type": "ip", "identifier_value": "::1"},
        {"account_uri": None},
        {"challenge_type": "dns-persist-01", "account_uri": None},
        {"token": "short"},  # dns-account-01 keeps the key authorization checks
        {"key_authorization": TOKEN + ".bad thumbprint"},
        {"challenge_type": "http-01", "wildcard": True},
        {"challenge_type": "tls-alpn-01", "identifier_value": "*.example.com"},
    ],
)
async def test_malformed_requests(changes: dict[str, Any]) -> None:
    kind, _ = await validate(**changes)
    assert kind == ProblemType.MALFORMED


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["dns-account-01", "dns-persist-01"])
@pytest.mark.parametrize("wildcard", [False, True])
async def test_dns_methods_reach_dns_for_wildcards_too(kind: str, wildcard: bool) -> None:
    # dns-persist-01 has no token (draft §3.1): a token the VA would refuse
    # for the other methods does not stop it.
    token = "" if kind == "dns-persist-01" else TOKEN
    problem_kind, detail = await validate(
        challenge_type=kind,
        token=token,
        key_authorization="" if kind == "dns-persist-01" else KEYAUTHZ,
        wildcard=wildcard,
    )
    assert problem_kind == ProblemType.DNS, detail
    expected = "_validation-persist" if kind == "dns-persist-01" else "._acme-challenge.example"
    assert expected in detail


@pytest.mark.anyio
async def test_no_issuer_names_no_dns_persist01() -> None:
    config = VAConfig(resolvers=("127.0.0.1:9",), caa_identities=())
    va = ValidationAuthority(config, FakeClock())
    assert va.supported_challenge_types == ALL_FIVE[:4]
    kind, detail = await validate(config=config, challenge_type="dns-persist-01")
    assert kind == ProblemType.MALFORMED
    assert "Unsupported challenge type" in detail


# -- the PA: which challenges an authorization offers --------------------------


def pa(*enabled: str) -> PolicyAuthority:
    return PolicyAuthority(
        PolicyConfig(enabled_challenges=enabled, allow_unlisted_tlds=True), ALL_FIVE
    )


def test_default_offer_is_unchanged() -> None:
    default = PolicyAuthority(PolicyConfig(), ALL_FIVE)
    assert default.challenge_types == ("http-01", "dns-01", "tls-alpn-01")
    assert default.challenge_types_for("example.com", True) == ("dns-01",)


def test_all_five_enabled() -> None:
    authority = pa(*ALL_FIVE)
    assert authority.challenge_types_for("example.com", False) == ALL_FIVE
    assert authority.challenge_types_for("example.com", True) == (
        "dns-01",
        "dns-account-01",
        "dns-persist-01",
    )
    assert authority.challenge_types_for("192.0.2.1", False, "ip") == ("http-01", "tls-alpn-01")


def test_a_wildcard_needs_any_one_dns_method() -> None:
    only_persist = pa("http-01", "dns-persist-01")
    assert only_persist.challenge_types_for("example.com", True) == ("dns-persist-01",)
    only_persist.check_order_identifiers(
        (Identifier("dns", "*.example.test"),), only_persist.profiles[0]
    )
    no_dns = pa("http-01", "tls-alpn-01")
    with pytest.raises(errors.RejectedIdentifier) as refused:
        no_dns.check_order_identifiers((Identifier("dns", "*.example.test"),), no_dns.profiles[0])
    assert "dns-01, dns-account-01, dns-persist-01" in refused.value.subproblems[0].detail


def test_the_pa_never_offers_what_the_va_cannot_check() -> None:
    authority = PolicyAuthority(PolicyConfig(enabled_challenges=ALL_FIVE), ALL_FIVE[:4])
    assert "dns-persist-01" not in authority.challenge_types


# -- the challenge object (draft-ietf-acme-dns-persist-00 §3.1) ----------------


def render(
    kind: str, identities: tuple[str, ...] = ("Authority.Example.", "ca.example.net")
) -> dict[str, object]:
    config = CAConfig(
        base_url="https://acme.test", management_base_url="http://m.test", caa_identities=identities
    )
    renderer = Renderer(AcmeUrls(config.base_url), config, pa(*ALL_FIVE))
    record = ChallengeRecord(id="c1", authz_id="a1", type=kind, token=TOKEN, status="pending")
    body = renderer.challenge(record)
    json.dumps(body)
    return body


def test_dns_persist01_object_has_issuer_names_and_no_token() -> None:
    body = render("dns-persist-01")
    assert body["issuer-domain-names"] == [US, "ca.example.net"]
    assert "token" not in body
    assert body["type"] == "dns-persist-01" and body["status"] == "pending"


def test_dns_account01_object_is_a_token_challenge() -> None:
    body = render("dns-account-01")
    assert body["token"] == TOKEN
    assert "issuer-domain-names" not in body
