"""CAA (RFC 8659, RFC 8657) over real sockets on 127.0.0.1: the VA against the
challenge test server's DNS, and one whole ACME flow against ``certmint-ca
serve`` where a CAA record forbids issuance (issue 4, acceptance 2)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.protocol.challenges import dns01_txt_value
from certmint.testing.acme_client import RawAcmeClient
from certmint.testing.challtest_dns import CAAPolicy
from certmint.testing.challtestsrv import ChallengeTestServer
from certmint.testing.clock import FakeClock
from certmint.testing.harness import running_ca

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
US = "certmint.invalid"
ACCOUNT = "https://127.0.0.1:14000/acme/acct/abc"
PATH = f"/.well-known/acme-challenge/{TOKEN}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    server = ChallengeTestServer(management_address=None, tlsalpn01_address=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def config_for(srv: ChallengeTestServer) -> VAConfig:
    return VAConfig(
        resolvers=(f"127.0.0.1:{srv.dns_port}",),
        http01_port=srv.http01_port,
        allow_private_addresses=True,
        dns_timeout=1.0,
        connect_timeout=1.0,
        total_timeout=3.0,
        caa_identities=(US,),
    )


async def validate(
    srv: ChallengeTestServer,
    kind: str,
    name: str,
    *,
    wildcard: bool = False,
    account_uri: str | None = ACCOUNT,
) -> ValidationResult:
    """Provision the challenge response, then validate ``name`` with ``kind``."""
    if kind == "http-01":
        srv.add_http01(TOKEN, KEYAUTHZ)
    else:
        srv.set_txt(f"_acme-challenge.{name}", dns01_txt_value(KEYAUTHZ))
    va = ValidationAuthority(config_for(srv), FakeClock())
    request = ValidationRequest(
        kind, "dns", name, TOKEN, KEYAUTHZ, account_uri=account_uri, wildcard=wildcard
    )
    try:
        with anyio.fail_after(5):
            return await va.validate(request)
    finally:
        await va.aclose()


def problem_type(result: ValidationResult) -> str:
    assert not result.valid and result.problem is not None
    return result.problem.type


# (name of the case, CAA at example.com, challenge, wildcard, expected problem or None)
CASES: list[tuple[str, list[CAAPolicy], str, bool, str | None]] = [
    ("no records", [], "http-01", False, None),
    ("names us", [CAAPolicy("issue", US)], "http-01", False, None),
    ("forbidding record", [CAAPolicy("issue", ";")], "http-01", False, "caa"),
    ("other CA", [CAAPolicy("issue", "letsencrypt.org")], "http-01", False, "caa"),
    (
        "accounturi matches",
        [CAAPolicy("issue", f"{US}; accounturi={ACCOUNT}")],
        "http-01",
        False,
        None,
    ),
    (
        "accounturi mismatch",
        [CAAPolicy("issue", f"{US}; accounturi={ACCOUNT}-other")],
        "http-01",
        False,
        "caa",
    ),
    (
        "validationmethods matches",
        [CAAPolicy("issue", f"{US}; validationmethods=tls-alpn-01,http-01")],
        "http-01",
        False,
        None,
    ),
    (
        "validationmethods mismatch",
        [CAAPolicy("issue", f"{US}; validationmethods=dns-01")],
        "http-01",
        False,
        "caa",
    ),
    (
        "issuewild for a wildcard",
        [CAAPolicy("issue", US), CAAPolicy("issuewild", ";")],
        "dns-01",
        True,
        "caa",
    ),
    (
        "issuewild ignored without a wildcard",
        [CAAPolicy("issue", US), CAAPolicy("issuewild", ";")],
        "dns-01",
        False,
        None,
    ),
    (
        "critical unknown tag",
        [CAAPolicy("issue", US), CAAPolicy("futuretag", "x", flags=128)],
        "http-01",
        False,
        "caa",
    ),
    (
        "critical iodef is recognised",
        [CAAPolicy("issue", US), CAAPolicy("iodef", "mailto:sec@example.com", flags=128)],
        "http-01",
        False,
        None,
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("policies", "kind", "wildcard", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_caa_case(
    srv: ChallengeTestServer,
    policies: list[CAAPolicy],
    kind: str,
    wildcard: bool,
    expected: str | None,
) -> None:
    # Records at the parent: the VA climbs from www.example.com to find them.
    if policies:
        srv.add_caa("example.com", policies)
    result = await validate(srv, kind, "www.example.com", wildcard=wildcard)
    if expected is None:
        assert result.valid, result.problem
        assert result.caa_checked_at is not None
        return
    assert problem_type(result) == expected
    assert result.problem is not None
    assert "CAA record for example.com prevents issuance" in result.problem.detail
    assert result.caa_checked_at is None


@pytest.mark.anyio
async def test_dns_failure_is_not_permission(srv: ChallengeTestServer) -> None:
    # dns-01 reads _acme-challenge.www.example.com, which answers; the CAA
    # lookup at example.com gets SERVFAIL. RFC 8659 §3: no issuance; Boulder
    # reports such a failure as a dns problem.
    srv.set_servfail("example.com")
    result = await validate(srv, "dns-01", "www.example.com")
    assert problem_type(result) == "dns"
    assert result.problem is not None
    assert "looking up CAA for example.com" in result.problem.detail
    assert "While processing CAA for www.example.com" in result.problem.detail


@pytest.mark.anyio
async def test_closest_rrset_wins_and_cname_is_followed(srv: ChallengeTestServer) -> None:
    srv.add_caa("example.com", [CAAPolicy("issue", ";")])
    srv.add_caa("www.example.com", [CAAPolicy("issue", US)])
    assert (await validate(srv, "http-01", "www.example.com")).valid
    # A CNAME at the name is followed for CAA as for any type (RFC 8659 §3).
    srv.set_cname("alias.example.net", "target.example.org")
    srv.add_caa("target.example.org", [CAAPolicy("issue", ";")])
    assert problem_type(await validate(srv, "http-01", "alias.example.net")) == "caa"


@pytest.mark.anyio
async def test_failed_challenge_reports_the_challenge_problem(srv: ChallengeTestServer) -> None:
    srv.add_caa("example.com", [CAAPolicy("issue", ";")])
    va = ValidationAuthority(config_for(srv), FakeClock())
    request = ValidationRequest("http-01", "dns", "example.com", TOKEN, KEYAUTHZ)
    with anyio.fail_after(5):
        result = await va.validate(request)  # nothing provisioned: 404
    # The challenge's own problem is reported, not the CAA refusal.
    assert problem_type(result) != "caa"
    assert result.problem is not None and "404" in result.problem.detail


@pytest.mark.anyio
async def test_check_caa_alone_for_the_finalize_recheck(srv: ChallengeTestServer) -> None:
    va = ValidationAuthority(config_for(srv), FakeClock())
    srv.add_caa("example.com", [CAAPolicy("issue", f"{US}; validationmethods=dns-01")])
    with anyio.fail_after(5):
        ok = await va.check_caa(
            "dns", "example.com", challenge_type="dns-01", account_uri=ACCOUNT, wildcard=False
        )
        refused = await va.check_caa(
            "dns", "example.com", challenge_type="http-01", account_uri=ACCOUNT, wildcard=False
        )
        ip = await va.check_caa(
            "ip", "127.0.0.1", challenge_type="http-01", account_uri=ACCOUNT, wildcard=False
        )
    assert ok is None and ip is None
    assert refused is not None and refused.type == "caa"


@pytest.mark.anyio
async def test_whole_flow_with_forbidding_caa_fails_with_caa(tmp_path: Path) -> None:
    """certmint-ca serve: a challenge that is answered correctly still leaves
    the authorization invalid, with a caa error, when CAA forbids us."""
    name = "caa-forbidden.example.com"
    with running_ca(tmp_path, challtestsrv_answers_challenges=True) as ca:
        context = ssl.create_default_context(cafile=str(ca.root_pem_path))
        async with httpx.AsyncClient(verify=context, timeout=20) as http:
            await http.post(
                f"{ca.challtestsrv_management_url}/add-caa",
                json={"host": "example.com", "policies": [{"tag": "issue", "value": ";"}]},
            )
            client = RawAcmeClient(http, ca.directory_url)
            await client.load_directory()
            account = await client.post(
                client.dir["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=True
            )
            assert account.status_code == 201, account.text
            client.kid = account.headers["Location"]
            order = await client.post(
                client.dir["newOrder"], {"identifiers": [{"type": "dns", "value": name}]}
            )
            assert order.status_code == 201, order.text
            authz_url = order.json()["authorizations"][0]
            authz = (await client.post(authz_url)).json()
            challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
            await http.post(
                f"{ca.challtestsrv_management_url}/add-http01",
                json={
                    "token": challenge["token"],
                    "content": client.key_authorization(challenge["token"]),
                },
            )
            await client.post(challenge["url"], {})
            for _ in range(100):  # bounded poll: at most 100 polls of 0.1 s
                authz = (await client.post(authz_url)).json()
                if authz["status"] != "pending":
                    break
                await anyio.sleep(0.1)
    assert authz["status"] == "invalid", authz
    error = next(c for c in authz["challenges"] if c["type"] == "http-01")["error"]
    assert error["type"] == "urn:ietf:params:acme:error:caa"
    assert "CAA record for example.com prevents issuance" in error["detail"]
