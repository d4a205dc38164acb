"""The VA's dns-account-01 and dns-persist-01 over real sockets on 127.0.0.1
against the challenge test server's DNS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.protocol.challenges import (
    dns01_txt_value,
    dns_account01_record_name,
    dns_persist01_txt_value,
)
from certmint.protocol.problems import ProblemType
from certmint.testing.challtestsrv import ChallengeTestServer
from certmint.testing.clock import FakeClock

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
OTHER_KEYAUTHZ = f"{TOKEN}.AAAAWB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
ACCOUNT = "https://ca.example/acme/acct/1234"
OTHER_ACCOUNT = "https://ca.example/acme/acct/5678"
US = "authority.example"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PERSIST_NAME = "_validation-persist.example.com"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    server = ChallengeTestServer(http01_address=None, management_address=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def validate(
    srv: ChallengeTestServer,
    kind: str,
    name: str,
    *,
    wildcard: bool = False,
    keyauthz: str = KEYAUTHZ,
    account: str = ACCOUNT,
) -> ValidationResult:
    config = VAConfig(
        resolvers=(f"127.0.0.1:{srv.dns_port}",),
        allow_private_addresses=True,
        dns_timeout=1.0,
        total_timeout=3.0,
        caa_identities=(US,),
    )
    va = ValidationAuthority(config, FakeClock(NOW))
    request = ValidationRequest(
        kind, "dns", name, TOKEN, keyauthz, account_uri=account, wildcard=wildcard
    )
    try:
        with anyio.fail_after(5):
            return await va.validate(request)
    finally:
        await va.aclose()


def problem_of(result: ValidationResult) -> tuple[str, str]:
    assert not result.valid and result.problem is not None
    return result.problem.type, result.problem.detail


# -- dns-account-01 --

ACCOUNT_NAME = dns_account01_record_name("example.com", ACCOUNT)


@pytest.mark.anyio
async def test_dns_account01_success_among_several_values(srv: ChallengeTestServer) -> None:
    srv.set_txt(ACCOUNT_NAME, "unrelated")
    srv.set_txt(ACCOUNT_NAME, dns01_txt_value(KEYAUTHZ))
    result = await validate(srv, "dns-account-01", "example.com")
    assert result.valid, result.problem
    assert result.records[0].hostname == "example.com"
    assert result.caa_checked_at == NOW


@pytest.mark.anyio
async def test_dns_account01_wildcard_uses_base_name(srv: ChallengeTestServer) -> None:
    srv.set_txt(ACCOUNT_NAME, dns01_txt_value(KEYAUTHZ))
    # As the RA sends it (base name, wildcard flag) and as written.
    assert (await validate(srv, "dns-account-01", "example.com", wildcard=True)).valid
    assert (await validate(srv, "dns-account-01", "*.example.com")).valid


@pytest.mark.anyio
async def test_dns_account01_via_cname(srv: ChallengeTestServer) -> None:
    # The draft's point (§1): one account's label delegated elsewhere.
    srv.set_cname(ACCOUNT_NAME, "account-1234.validation.example")
    srv.set_txt("account-1234.validation.example", dns01_txt_value(KEYAUTHZ))
    result = await validate(srv, "dns-account-01", "example.com")
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_dns_account01_is_bound_to_the_account(srv: ChallengeTestServer) -> None:
    # The right value under another account's label, or under dns-01's name,
    # proves nothing for this account.
    srv.set_txt(dns_account01_record_name("example.com", OTHER_ACCOUNT), dns01_txt_value(KEYAUTHZ))
    srv.set_txt("_acme-challenge.example.com", dns01_txt_value(KEYAUTHZ))
    kind, detail = problem_of(await validate(srv, "dns-account-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail == f"No TXT record found at {ACCOUNT_NAME}"


@pytest.mark.anyio
async def test_dns_account01_wrong_value(srv: ChallengeTestServer) -> None:
    srv.set_txt(ACCOUNT_NAME, dns01_txt_value(OTHER_KEYAUTHZ))
    kind, detail = problem_of(await validate(srv, "dns-account-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail == (
        f'Incorrect TXT record "{dns01_txt_value(OTHER_KEYAUTHZ)}" found at {ACCOUNT_NAME}'
    )


@pytest.mark.anyio
async def test_dns_account01_servfail_is_dns(srv: ChallengeTestServer) -> None:
    srv.set_servfail(ACCOUNT_NAME)
    kind, detail = problem_of(await validate(srv, "dns-account-01", "example.com"))
    assert kind == ProblemType.DNS
    assert ACCOUNT_NAME in detail


# -- dns-persist-01 --


def persist(**changes: object) -> str:
    fields: dict[str, object] = {"issuer_domain_name": US, "account_uri": ACCOUNT}
    fields.update(changes)
    return dns_persist01_txt_value(**fields)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_dns_persist01_success(srv: ChallengeTestServer) -> None:
    srv.set_txt(PERSIST_NAME, persist())
    result = await validate(srv, "dns-persist-01", "example.com")
    assert result.valid, result.problem
    assert result.records[0].hostname == "example.com"
    assert result.caa_checked_at == NOW


@pytest.mark.anyio
async def test_dns_persist01_one_of_several_records(srv: ChallengeTestServer) -> None:
    # §4.1: one record per CA may coexist; only ours counts.
    srv.set_txt(PERSIST_NAME, f"other.example; accounturi={OTHER_ACCOUNT}; policy=wildcard")
    srv.set_txt(PERSIST_NAME, "v=spf1 -all")
    srv.set_txt(PERSIST_NAME, f"Authority.Example.;accounturi={ACCOUNT};  future=1")
    result = await validate(srv, "dns-persist-01", "example.com")
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_dns_persist01_via_cname(srv: ChallengeTestServer) -> None:
    srv.set_cname(PERSIST_NAME, "_validation-persist.records.example")
    srv.set_txt("_validation-persist.records.example", persist())
    result = await validate(srv, "dns-persist-01", "example.com")
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_dns_persist01_long_record_in_several_strings(srv: ChallengeTestServer) -> None:
    # §9.1: RDATA over 255 octets comes as several character-strings, joined.
    account = "https://ca.example/acme/acct/" + "a" * 300
    srv.set_txt(PERSIST_NAME, persist(account_uri=account))
    result = await validate(srv, "dns-persist-01", "example.com", account=account)
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_dns_persist01_wildcard_with_policy(srv: ChallengeTestServer) -> None:
    srv.set_txt(PERSIST_NAME, f"{US}; accounturi={ACCOUNT}; policy=WILDCARD")
    result = await validate(srv, "dns-persist-01", "example.com", wildcard=True)
    assert result.valid, result.problem
    # The same record serves the base name itself (§5.1).
    assert (await validate(srv, "dns-persist-01", "example.com")).valid


@pytest.mark.anyio
async def test_dns_persist01_wildcard_without_policy(srv: ChallengeTestServer) -> None:
    srv.set_txt(PERSIST_NAME, persist())
    kind, detail = problem_of(await validate(srv, "dns-persist-01", "*.example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail == (
        f"TXT record at {PERSIST_NAME} does not authorize: the record for {US} has no "
        "policy, but a wildcard name needs policy=wildcard"
    )


@pytest.mark.anyio
async def test_dns_persist01_accounturi_mismatch(srv: ChallengeTestServer) -> None:
    srv.set_txt(PERSIST_NAME, persist(account_uri=OTHER_ACCOUNT))
    kind, detail = problem_of(await validate(srv, "dns-persist-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail == (
        f"TXT record at {PERSIST_NAME} does not authorize: the record for {US} has "
        f'accounturi "{OTHER_ACCOUNT}", not this account\'s {ACCOUNT}'
    )


@pytest.mark.anyio
async def test_dns_persist01_other_issuer(srv: ChallengeTestServer) -> None:
    srv.set_txt(PERSIST_NAME, persist(issuer_domain_name="letsencrypt.org"))
    kind, detail = problem_of(await validate(srv, "dns-persist-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail == (
        f"No TXT record at {PERSIST_NAME} names this CA's issuer domain name ({US}); "
        "found records for letsencrypt.org"
    )


@pytest.mark.anyio
async def test_dns_persist01_persist_until(srv: ChallengeTestServer) -> None:
    # The VA's injected clock says NOW; the record expires one second before.
    passed = int((NOW - timedelta(seconds=1)).timestamp())
    srv.set_txt(PERSIST_NAME, persist(persist_until=passed))
    kind, detail = problem_of(await validate(srv, "dns-persist-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail == (
        f"TXT record at {PERSIST_NAME} does not authorize: the record for {US} has "
        f"persistUntil={passed} (2026-11-01T11:59:59Z), which has passed"
    )
    srv.clear_txt(PERSIST_NAME)
    srv.set_txt(PERSIST_NAME, persist(persist_until=int(NOW.timestamp())))
    result = await validate(srv, "dns-persist-01", "example.com")
    assert result.valid, result.problem


@pytest.mark.anyio
async def test_dns_persist01_malformed_record_for_us(srv: ChallengeTestServer) -> None:
    srv.set_txt(PERSIST_NAME, f"{US}; accounturi={ACCOUNT}; accounturi={ACCOUNT}")
    kind, detail = problem_of(await validate(srv, "dns-persist-01", "example.com"))
    assert kind == ProblemType.MALFORMED
    assert detail == (
        f'Malformed TXT record at {PERSIST_NAME} for {US}: parameter "accounturi" appears twice'
    )


@pytest.mark.anyio
async def test_dns_persist01_missing_record(srv: ChallengeTestServer) -> None:
    # A dns-01 record at the same name proves nothing here.
    srv.set_txt("_acme-challenge.example.com", dns01_txt_value(KEYAUTHZ))
    kind, detail = problem_of(await validate(srv, "dns-persist-01", "example.com"))
    assert kind == ProblemType.UNAUTHORIZED
    assert detail == f"No TXT record found at {PERSIST_NAME}"


@pytest.mark.anyio
async def test_dns_persist01_servfail_is_dns(srv: ChallengeTestServer) -> None:
    srv.set_servfail(PERSIST_NAME)
    kind, detail = problem_of(await validate(srv, "dns-persist-01", "example.com"))
    assert kind == ProblemType.DNS
    assert PERSIST_NAME in detail


@pytest.mark.anyio
async def test_dns_persist01_caa_still_applies(srv: ChallengeTestServer) -> None:
    # A good record does not override CAA (draft §7.7; BR 3.2.2.8), and RFC
    # 8657 validationmethods names the method like any other.
    srv.set_txt(PERSIST_NAME, persist())
    srv.add_caa("example.com", [("issue", f"{US}; validationmethods=dns-01")])
    kind, _ = problem_of(await validate(srv, "dns-persist-01", "example.com"))
    assert kind == ProblemType.CAA
    srv.clear_caa("example.com")
    srv.add_caa("example.com", [("issue", f"{US}; validationmethods=dns-persist-01")])
    result = await validate(srv, "dns-persist-01", "example.com")
    assert result.valid, result.problem
