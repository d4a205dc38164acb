"""Every way a validation can fail on a hostile or broken network, in ONE
table (issue 4, acceptance 2), over real sockets on 127.0.0.0/8.

Each row provisions the challenge test server (DNS, HTTP-01, TLS-ALPN-01) or a
purpose-made misbehaving server, runs the real ``ValidationAuthority`` and
asserts the exact ACME problem type and the fragments of the detail that tell
the applicant what to fix. docs/validation-failures.md is the same table for
people.

The VA runs as production would, with ``allow_private_addresses=False``; only
loopback is allowed (``allowed_private_networks``), because that is where the
test servers live, so every other non-public range is still refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.protocol.challenges import dns01_txt_value, tls_alpn01_extension_value
from certmint.protocol.problems import ProblemType
from certmint.testing.challtest_dns import CAAPolicy
from certmint.testing.challtestsrv import ChallengeTestServer
from certmint.testing.clock import FakeClock

from .va_failure_setups import (
    ACCOUNT,
    KEYAUTHZ,
    OTHER_THUMBPRINT,
    OTHER_TOKEN,
    PATH,
    QUICK,
    THUMBPRINT,
    TOKEN,
    US,
    Row,
    World,
    a_record,
    alpn_alert,
    asks_for_credentials,
    caa,
    closed_port,
    cname_loop,
    connected_to_first_answer_only,
    cookie_then_credentials,
    crafted_cert,
    declared_oversize,
    followed_ten,
    http01,
    no_secrets_sent,
    not_http,
    nothing,
    plain_http_on_tls_port,
    rebinding,
    redirect,
    redirect_chain,
    scripted_http,
    silent_resolver,
    slow_body,
    slow_head,
    steps,
    without_alpn,
)


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    # certmint-ca serve runs on uvloop when it is installed: test both loops.
    return "asyncio", {"use_uvloop": request.param == "uvloop"}


GOOD_VALUE = tls_alpn01_extension_value(KEYAUTHZ)
WRONG_FILE = "The key authorization file from the server did not match this challenge"
PRIVATE = "the CA only connects to public addresses"
SLOW = "Timeout after connect (your server may be slow or overloaded)"
URL = "http://example.com:{http}" + PATH
PREVENTS = "While processing CAA for www.example.com: CAA record for example.com prevents issuance"

ROWS: list[Row] = [
    # -- http-01: the answer --
    Row("http01 nothing served (404)", "http-01", "example.com", nothing(), "unauthorized",
        (f"127.0.0.1: Invalid response from {URL}: 404",)),
    Row("http01 another token's file", "http-01", "example.com",
        steps(http01(f"{OTHER_TOKEN}.{THUMBPRINT}")), "unauthorized",
        (WRONG_FILE, f'Expected "{KEYAUTHZ}"', f'got "{OTHER_TOKEN}.{THUMBPRINT}"')),
    Row("http01 wrong thumbprint", "http-01", "example.com",
        steps(http01(f"{TOKEN}.{OTHER_THUMBPRINT}")), "unauthorized",
        (WRONG_FILE, f'Expected "{KEYAUTHZ}"', f'got "{TOKEN}.{OTHER_THUMBPRINT}"')),
    Row("http01 oversize body", "http-01", "example.com",
        steps(http01(KEYAUTHZ + " " * 9000 + "junk")), "unauthorized",
        (WRONG_FILE, "body longer than 8192 bytes")),
    Row("http01 declared oversize body", "http-01", "example.com",
        scripted_http(declared_oversize), "unauthorized",
        (WRONG_FILE, 'got "", body longer than 8192 bytes')),
    # -- http-01: redirects --
    Row("http01 redirect to port 8080", "http-01", "example.com",
        steps(redirect(f"http://example.com:8080{PATH}")), "connection",
        (f"Fetching {URL}: Invalid port in redirect target", "not 8080")),
    Row("http01 redirect to a private address", "http-01", "example.com",
        steps(redirect(f"http://10.0.0.1{PATH}")), "connection",
        ("Fetching http://10.0.0.1:{http}", f"10.0.0.1 is a private address; {PRIVATE}")),
    Row("http01 redirect to a name on a private address", "http-01", "example.com",
        steps(a_record("intranet.example", "192.168.1.10"),
              redirect(f"http://intranet.example{PATH}")), "connection",
        ("intranet.example resolves to 192.168.1.10, which is a private address",
         "check the A and AAAA records of intranet.example")),
    Row("http01 redirect loop", "http-01", "example.com",
        steps(redirect("/loop"), lambda s: s.add_redirect("/loop", PATH)), "connection",
        (f"Fetching {URL}: Redirect loop detected",)),
    Row("http01 more than 10 redirects", "http-01", "example.com",
        redirect_chain(12), "connection",
        ("Fetching http://example.com:{http}/hop/10: Too many redirects (more than 10)",),
        check=followed_ten),
    Row("http01 redirect to another scheme", "http-01", "example.com",
        steps(redirect("ftp://example.com/token")), "connection",
        ("Invalid protocol scheme in redirect target", 'not "ftp"')),
    Row("http01 redirect with credentials in the URL", "http-01", "127.0.0.1",
        scripted_http(cookie_then_credentials), "connection",
        ("Redirect target carries credentials", "redirect to a URL without them"),
        identifier_type="ip", check=no_secrets_sent),
    Row("http01 server asks for credentials", "http-01", "127.0.0.1",
        scripted_http(asks_for_credentials), "unauthorized",
        ("Invalid response from http://127.0.0.1:{http}" + PATH + ": 401",),
        identifier_type="ip", check=no_secrets_sent),
    # -- http-01: slow servers (total_timeout is 0.5 s in these rows) --
    Row("http01 response head never completes", "http-01", "127.0.0.1",
        scripted_http(slow_head), "connection",
        ("127.0.0.1: Fetching http://127.0.0.1:{http}" + PATH, SLOW), identifier_type="ip",
        config=QUICK),
    Row("http01 body trickles (slowloris)", "http-01", "127.0.0.1",
        scripted_http(slow_body), "connection", (SLOW,), identifier_type="ip", config=QUICK),
    # -- addresses and DNS for the connection --
    *(
        Row(f"http01 name on {address} ({reason})", "http-01", "internal.example",
            steps(a_record("internal.example", address)), "connection",
            (f"internal.example resolves to {address}, which is {reason}", PRIVATE,
             "check the A and AAAA records of internal.example"))
        for address, reason in [
            ("10.1.2.3", "a private address"),
            ("172.16.5.4", "a private address"),
            ("192.168.1.10", "a private address"),
            ("169.254.169.254", "a link-local address"),  # cloud metadata
            ("100.64.0.1", "a non-public address"),  # RFC 6598 shared space
            ("0.0.0.0", "an unspecified address"),
            ("240.0.0.1", "a private address"),  # 240/4: private to ipaddress
        ]
    ),
    Row("http01 name on a ULA IPv6 address", "http-01", "internal.example",
        steps(lambda s: s.set_default_ipv4(None),
              lambda s: s.add_aaaa("internal.example", ["fd00::1"])), "connection",
        ("internal.example resolves to fd00::1, which is a private address",)),
    Row("http01 name on an IPv4-mapped private address", "http-01", "internal.example",
        steps(lambda s: s.set_default_ipv4(None),
              lambda s: s.add_aaaa("internal.example", ["::ffff:10.0.0.1"])), "connection",
        ("internal.example resolves to ::ffff:10.0.0.1, which is a private address",)),
    Row("http01 DNS rebinding", "http-01", "rebind.example", rebinding(), "unauthorized",
        ("127.0.0.1: Invalid response from http://rebind.example:{http}" + PATH + ": 404",),
        check=connected_to_first_answer_only),
    Row("http01 connection refused", "http-01", "example.com",
        closed_port("http01_port", "http"), "connection",
        (f"127.0.0.1: Fetching {URL}: Connection refused",)),
    Row("http01 not HTTP on the port", "http-01", "127.0.0.1", scripted_http(not_http),
        "connection",
        ("127.0.0.1: Fetching http://127.0.0.1:{http}" + PATH + ": Error getting validation data",),
        identifier_type="ip"),
    Row("http01 name does not exist", "http-01", "nowhere.example",
        steps(lambda s: s.set_default_ipv4(None)), "dns",
        ("DNS problem: NXDOMAIN looking up A for nowhere.example",
         "check that a DNS record exists for this domain")),
    Row("http01 CNAME loop", "http-01", "www.loop.example",
        cname_loop("www.loop.example", "b.loop.example"), "dns",
        ("DNS problem: CNAME chain too long or looping looking up A for www.loop.example",
         "check the domain's CNAME records")),
    Row("http01 SERVFAIL on the A lookup", "http-01", "broken.example",
        steps(lambda s: s.set_servfail("broken.example")), "dns",
        ("DNS problem: SERVFAIL looking up A for broken.example",
         "the domain's nameservers may be malfunctioning")),
    Row("http01 timeout on the A lookup", "http-01", "example.com", silent_resolver(), "dns",
        ("DNS problem: query timed out looking up A for example.com",
         "check that the domain's nameservers answer")),
    # -- tls-alpn-01 --
    Row("tlsalpn01 server does not negotiate acme-tls/1", "tls-alpn-01", "example.com",
        steps(without_alpn()), "tls",
        ('127.0.0.1:{tls}: Cannot negotiate ALPN protocol "acme-tls/1"',
         "must select it and present the challenge certificate")),
    Row("tlsalpn01 server refuses acme-tls/1 with an alert", "tls-alpn-01", "example.com",
        alpn_alert(), "tls",
        ('127.0.0.1:{tls}: Cannot negotiate ALPN protocol "acme-tls/1"',
         "must select it and present the challenge certificate")),
    Row("tlsalpn01 not TLS on the port", "tls-alpn-01", "example.com",
        plain_http_on_tls_port(), "tls",
        ("127.0.0.1:{tls}: Error getting validation data: TLS handshake failed (",)),
    Row("tlsalpn01 connection refused", "tls-alpn-01", "example.com",
        closed_port("tlsalpn01_port", "tls"), "connection",
        ("127.0.0.1:{tls}: Connection refused",)),
    Row("tlsalpn01 extra SAN", "tls-alpn-01", "example.com",
        steps(crafted_cert(["example.com", "extra.example"], value=GOOD_VALUE)), "unauthorized",
        ("Requested example.com from 127.0.0.1:{tls}", '"example.com, extra.example"',
         "exactly one, example.com, is required")),
    Row("tlsalpn01 wrong acmeIdentifier value", "tls-alpn-01", "example.com",
        steps(lambda s: s.add_tlsalpn01("example.com", f"{TOKEN}.{OTHER_THUMBPRINT}")),
        "unauthorized",
        ("Invalid acmeIdentifier extension value in the certificate from 127.0.0.1:{tls}",
         f"Expected {GOOD_VALUE[2:].hex()}, the SHA-256 of this challenge's key authorization")),
    Row("tlsalpn01 missing acmeIdentifier", "tls-alpn-01", "example.com",
        steps(crafted_cert(["example.com"], value=None)), "unauthorized",
        ("Missing acmeIdentifier extension", "127.0.0.1:{tls}", "1.3.6.1.5.5.7.1.31")),
    Row("tlsalpn01 non-critical acmeIdentifier", "tls-alpn-01", "example.com",
        steps(crafted_cert(["example.com"], value=GOOD_VALUE, critical=False)), "unauthorized",
        ("acmeIdentifier extension of the certificate from 127.0.0.1:{tls} is not critical",)),
    Row("tlsalpn01 name on a private address", "tls-alpn-01", "internal.example",
        steps(a_record("internal.example", "10.9.8.7")), "connection",
        ("internal.example resolves to 10.9.8.7, which is a private address", PRIVATE)),
    # -- dns-01 --
    Row("dns01 missing TXT", "dns-01", "example.com", nothing(), "unauthorized",
        ("No TXT record found at _acme-challenge.example.com",)),
    Row("dns01 wrong TXT", "dns-01", "example.com",
        steps(lambda s: s.set_txt("_acme-challenge.example.com",
                                  dns01_txt_value(f"{TOKEN}.{OTHER_THUMBPRINT}"))),
        "unauthorized",
        (f'Incorrect TXT record "{dns01_txt_value(f"{TOKEN}.{OTHER_THUMBPRINT}")}" found at '
         "_acme-challenge.example.com",)),
    Row("dns01 CNAME loop", "dns-01", "loop.example",
        cname_loop("_acme-challenge.loop.example", "delegated.loop.example"), "dns",
        ("DNS problem: CNAME chain too long or looping looking up TXT for "
         "_acme-challenge.loop.example", "check the domain's CNAME records")),
    Row("dns01 SERVFAIL", "dns-01", "example.com",
        steps(lambda s: s.set_servfail("_acme-challenge.example.com")), "dns",
        ("SERVFAIL looking up TXT for _acme-challenge.example.com",)),
    # -- CAA (RFC 8659, RFC 8657), the challenge itself answered correctly --
    Row("caa forbidding record", "http-01", "www.example.com",
        caa(CAAPolicy("issue", ";")), "caa",
        (PREVENTS, f'no issue property permits {US} to issue: "issue ;" forbids issuance')),
    Row("caa other CA", "http-01", "www.example.com",
        caa(CAAPolicy("issue", "letsencrypt.org")), "caa",
        (PREVENTS, '"issue letsencrypt.org" names another CA')),
    Row("caa accounturi mismatch", "http-01", "www.example.com",
        caa(CAAPolicy("issue", f"{US}; accounturi={ACCOUNT}-other")), "caa",
        (PREVENTS, f'"issue {US}; accounturi={ACCOUNT}-other" allows only that accounturi, '
                   f"not {ACCOUNT}")),
    Row("caa validationmethods mismatch", "http-01", "www.example.com",
        caa(CAAPolicy("issue", f"{US}; validationmethods=dns-01")), "caa",
        (PREVENTS, "validationmethods=dns-01\" does not allow validation method http-01")),
    Row("caa issuewild for a wildcard", "dns-01", "www.example.com",
        caa(CAAPolicy("issue", US), CAAPolicy("issuewild", ";"), dns01=True), "caa",
        (PREVENTS, f'no issuewild property permits {US} to issue: "issuewild ;" forbids'),
        wildcard=True),
    Row("caa critical unknown tag", "http-01", "www.example.com",
        caa(CAAPolicy("issue", US), CAAPolicy("futuretag", "x", flags=128)), "caa",
        (PREVENTS, "a critical property with unknown tag 'futuretag'")),
    Row("caa DNS failure (SERVFAIL)", "dns-01", "www.example.com",
        steps(lambda s: s.set_servfail("example.com"),
              lambda s: s.set_txt("_acme-challenge.www.example.com", dns01_txt_value(KEYAUTHZ))),
        "dns", ("While processing CAA for www.example.com: DNS problem: SERVFAIL looking up "
                "CAA for example.com",)),
]  # fmt: skip


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    server = ChallengeTestServer(management_address=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def base_config(srv: ChallengeTestServer) -> dict[str, Any]:
    return {
        "resolvers": (f"127.0.0.1:{srv.dns_port}",),
        "http01_port": srv.http01_port,
        "tlsalpn01_port": srv.tlsalpn01_port,
        "allow_private_addresses": False,
        "allowed_private_networks": ("127.0.0.0/8", "::1/128"),
        "dns_timeout": 1.0,
        "connect_timeout": 1.0,
        "total_timeout": 3.0,
        "caa_identities": (US,),
    }


async def run(w: World, row: Row) -> ValidationResult:
    config = VAConfig(**{**base_config(w.srv), **row.config, **w.config})
    va = ValidationAuthority(config, FakeClock())
    request = ValidationRequest(
        row.challenge,
        row.identifier_type,
        row.name,
        TOKEN,
        KEYAUTHZ,
        account_uri=ACCOUNT,
        wildcard=row.wildcard,
    )
    try:
        with anyio.fail_after(8):
            return await va.validate(request)
    finally:
        await va.aclose()


def test_table_covers_issue_4_acceptance_2() -> None:
    """The failure modes the issue names, each present at least once."""
    ids = " | ".join(row.id for row in ROWS)
    for needed in (
        "another token's file", "wrong thumbprint", "does not negotiate acme-tls/1",
        "extra SAN", "missing TXT", "CNAME loop", "port 8080", "private address",
        "oversize body", "slowloris", "DNS rebinding", "forbidding record", "other CA",
        "accounturi mismatch", "validationmethods mismatch", "issuewild for a wildcard",
        "critical unknown tag", "caa DNS failure",
    ):  # fmt: skip
        assert needed in ids, needed
    assert len({row.id for row in ROWS}) == len(ROWS)
    # RFC 8555 §6.7 types only, and only those the VA reports (docs/validation-failures.md).
    kinds = {ProblemType.DNS, ProblemType.CONNECTION, ProblemType.TLS}
    assert {row.expected for row in ROWS} <= kinds | {ProblemType.UNAUTHORIZED, ProblemType.CAA}


@pytest.mark.anyio
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_failure(srv: ChallengeTestServer, row: Row) -> None:
    async with AsyncExitStack() as stack:
        w = World(srv, stack, values={"http": srv.http01_port, "tls": srv.tlsalpn01_port})
        await row.setup(w)
        result = await run(w, row)
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == row.expected, result.problem
    for fragment in row.detail:
        assert fragment.format(**w.values) in result.problem.detail, result.problem.detail
    assert "s3cret" not in result.problem.detail  # leaked secrets are never echoed
    assert result.caa_checked_at is None
    if row.check is not None:
        row.check(w, result)


# -- the counterparts that show the rows above test what they claim --


@pytest.mark.anyio
async def test_rebinding_server_is_reachable_when_answered_first(
    srv: ChallengeTestServer,
) -> None:
    """The 127.0.0.2 server of the rebinding row does serve the right key
    authorization: had the VA dialled it, that row would have validated."""
    async with AsyncExitStack() as stack:
        w = World(srv, stack)
        await rebinding()(w)
        srv.clear_a("rebind.example")
        srv.add_a("rebind.example", ["127.0.0.2"])
        result = await run(w, Row("", "http-01", "rebind.example", nothing(), "", ()))
    assert result.valid, result.problem
    assert len(w.heads) == 1 and result.records[0].address_used == "127.0.0.2"
    assert not srv.http_history  # and the first server was not asked


@pytest.mark.anyio
async def test_ten_redirects_are_followed(srv: ChallengeTestServer) -> None:
    """The limit is "at most 10 redirects": ten pass, the 11th row above fails."""
    srv.add_redirect(PATH, "/hop/1")
    for i in range(1, 9):
        srv.add_redirect(f"/hop/{i}", f"/hop/{i + 1}")
    srv.add_redirect("/hop/9", f"/.well-known/acme-challenge/{OTHER_TOKEN}")  # the 10th
    srv.add_http01(OTHER_TOKEN, KEYAUTHZ)
    async with AsyncExitStack() as stack:
        result = await run(World(srv, stack), Row("", "http-01", "example.com", nothing(), "", ()))
    assert result.valid, result.problem
    assert len(result.records) == 11


@pytest.mark.anyio
async def test_loopback_allowed_private_still_refused_for_tls_alpn(
    srv: ChallengeTestServer,
) -> None:
    """The same configuration validates on loopback: what the rows refuse is
    refused for the address, not because the setup cannot validate at all."""
    srv.add_tlsalpn01("example.com", KEYAUTHZ)
    srv.add_http01(TOKEN, KEYAUTHZ)
    async with AsyncExitStack() as stack:
        for kind in ("tls-alpn-01", "http-01"):
            result = await run(World(srv, stack), Row("", kind, "example.com", nothing(), "", ()))
            assert result.valid, result.problem
