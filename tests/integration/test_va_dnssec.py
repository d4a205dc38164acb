"""DNSSEC: the VA behind a validating resolver fails closed on Bogus data.

Real programs on 127.0.0.1 high ports: zones signed offline with ldns
(certmint.testing.dnssec), served by Knot, resolved by a validating Unbound
whose only trust anchor is the parent zone ``example.``. In ``bogus.example``
three RRsets were rewritten after signing to what an attacker would want the
CA to see (the right TXT value, a CAA record naming us, an A record pointing
at the test web server); served straight from Knot they validate (the
controls below), through Unbound each must be a ``dns`` problem: RFC 4035
§5.5 (Bogus → SERVFAIL), RFC 8659 §3 (a failed CAA lookup is not permission).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.protocol.challenges import dns01_txt_value
from certmint.protocol.problems import ProblemType
from certmint.testing.challtestsrv import ChallengeTestServer
from certmint.testing.clock import FakeClock
from certmint.testing.dnssec import DnssecZones, build_test_zones
from certmint.testing.knot import RunningKnot, running_knot
from certmint.testing.unbound import running_unbound

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
DNSSEC_FAILED = "DNSSEC validation failed: check the domain's DS and DNSKEY records and signatures"


@dataclass(frozen=True)
class Dnssec:
    zones: DnssecZones
    knot: RunningKnot
    unbound: str  # "127.0.0.1:port"


@pytest.fixture(scope="module")
def dnssec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnssec]:
    base = tmp_path_factory.mktemp("dnssec")
    zones = build_test_zones(base / "zones", txt_value=dns01_txt_value(KEYAUTHZ))
    with running_knot(base / "knot", {zone.origin: zone.path for zone in zones.all}) as knot:
        stubs = {zone.origin: knot.stub_address for zone in zones.all}
        with running_unbound(
            base / "unbound", stubs=stubs, trust_anchors=zones.trust_anchors
        ) as unbound:
            yield Dnssec(zones=zones, knot=knot, unbound=unbound)


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    # certmint-ca serve runs on uvloop when it is installed: test both loops.
    return "asyncio", {"use_uvloop": request.param == "uvloop"}


@pytest.fixture
async def web() -> AsyncIterator[ChallengeTestServer]:
    """The http-01 responder the (tampered) A records point at."""
    server = ChallengeTestServer(dns_address=None, tlsalpn01_address=None, management_address=None)
    await server.start()
    server.add_http01(TOKEN, KEYAUTHZ)
    try:
        yield server
    finally:
        await server.stop()


async def validate(
    resolver: str, kind: str, name: str, *, http01_port: int = 0
) -> ValidationResult:
    config = VAConfig(
        resolvers=(resolver,),
        http01_port=http01_port or 80,
        allow_private_addresses=True,
        dns_timeout=2.0,
        connect_timeout=1.0,
        total_timeout=4.0,
    )
    va = ValidationAuthority(config, FakeClock())
    try:
        with anyio.fail_after(10):
            return await va.validate(ValidationRequest(kind, "dns", name, TOKEN, KEYAUTHZ))
    finally:
        await va.aclose()


def problem_of(result: ValidationResult) -> tuple[str, str]:
    assert not result.valid and result.problem is not None
    return result.problem.type, result.problem.detail


# -- the fixture really validates (checked with Knot's kdig, not our resolver) --


def kdig(server: str, rdtype: str, name: str) -> tuple[str, set[str]]:
    """(rcode, header flags) of a +dnssec query, as kdig prints them."""
    host, port = server.rsplit(":", 1)
    done = subprocess.run(
        ["kdig", f"@{host}", "-p", port, "+dnssec", "+timeout=2", "+retry=0", rdtype, name],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    status = re.search(r"status: (\w+)", done.stdout)
    flags = re.search(r";; Flags: ([a-z ]+);", done.stdout)
    assert status and flags, done.stdout + done.stderr
    return status.group(1), set(flags.group(1).split())


def test_unbound_validates_the_signed_zone(dnssec: Dnssec) -> None:
    status, flags = kdig(dnssec.unbound, "TXT", "_acme-challenge.signed.example")
    assert status == "NOERROR"
    assert "ad" in flags  # RFC 4035 §3.2.3: Authentic Data, validated from the anchor


@pytest.mark.parametrize(
    ("rdtype", "name"),
    [
        ("TXT", "_acme-challenge.bogus.example"),
        ("CAA", "caa.bogus.example"),
        ("A", "www.bogus.example"),
    ],
)
def test_unbound_refuses_each_tampered_rrset(dnssec: Dnssec, rdtype: str, name: str) -> None:
    assert kdig(dnssec.unbound, rdtype, name)[0] == "SERVFAIL"
    # Knot serves the tampered data as it would any other.
    status, flags = kdig(dnssec.knot.resolver_address, rdtype, name)
    assert status == "NOERROR" and "aa" in flags


def test_untampered_names_in_the_bogus_zone_still_validate(dnssec: Dnssec) -> None:
    # Only the rewritten RRsets are Bogus: the challenge at caa.bogus.example
    # is good, so that test below fails on CAA alone.
    status, flags = kdig(dnssec.unbound, "TXT", "_acme-challenge.caa.bogus.example")
    assert status == "NOERROR" and "ad" in flags


def test_unbound_never_leaves_the_test_zones(dnssec: Dnssec) -> None:
    # Any other name is refused from local data: no root priming, no
    # Internet. A resolver that tried would time out, not answer REFUSED.
    host, port = dnssec.unbound.rsplit(":", 1)
    for name in ("example.com.", "certmint.org.", "."):
        query = dns.message.make_query(name, "A")
        reply = dns.query.udp(query, host, port=int(port), timeout=2.0)
        assert reply.rcode() == dns.rcode.REFUSED, name


# -- controls: straight from Knot (no validation) the tampered data passes --


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("dns-01", "bogus.example"),
        ("dns-01", "caa.bogus.example"),
        ("http-01", "www.bogus.example"),
    ],
)
async def test_without_validation_the_tampering_would_succeed(
    dnssec: Dnssec, web: ChallengeTestServer, kind: str, name: str
) -> None:
    result = await validate(dnssec.knot.resolver_address, kind, name, http01_port=web.http01_port)
    assert result.valid, result.problem


# -- the VA through the validating resolver --


@pytest.mark.anyio
async def test_dns01_on_the_signed_zone_is_valid(dnssec: Dnssec) -> None:
    result = await validate(dnssec.unbound, "dns-01", "signed.example")
    assert result.valid, result.problem
    assert result.caa_checked_at is not None  # CAA "issue certmint.invalid", validated


@pytest.mark.anyio
async def test_http01_on_the_signed_zone_is_valid(dnssec: Dnssec, web: ChallengeTestServer) -> None:
    result = await validate(
        dnssec.unbound, "http-01", "www.signed.example", http01_port=web.http01_port
    )
    assert result.valid, result.problem
    assert result.records[0].addresses_resolved == ("127.0.0.1",)


@pytest.mark.anyio
async def test_dns01_bogus_txt_is_a_dns_problem(dnssec: Dnssec) -> None:
    kind, detail = problem_of(await validate(dnssec.unbound, "dns-01", "bogus.example"))
    assert kind == ProblemType.DNS
    # The lookup failed (SERVFAIL), and why; not "No TXT record found".
    assert detail.startswith(
        "DNS problem: SERVFAIL looking up TXT for _acme-challenge.bogus.example - "
        f"{DNSSEC_FAILED} (resolver: EDE 6 (DNSSEC Bogus)"
    ), detail


@pytest.mark.anyio
async def test_bogus_caa_is_a_dns_problem_never_permission(dnssec: Dnssec) -> None:
    # The challenge passes (good TXT); the CAA RRset that would permit us is Bogus.
    kind, detail = problem_of(await validate(dnssec.unbound, "dns-01", "caa.bogus.example"))
    assert kind == ProblemType.DNS
    assert detail.startswith(
        "While processing CAA for caa.bogus.example: DNS problem: SERVFAIL looking up "
        f"CAA for caa.bogus.example - {DNSSEC_FAILED} (resolver: EDE 6 (DNSSEC Bogus)"
    ), detail


@pytest.mark.anyio
async def test_http01_bogus_address_is_a_dns_problem(
    dnssec: Dnssec, web: ChallengeTestServer
) -> None:
    result = await validate(
        dnssec.unbound, "http-01", "www.bogus.example", http01_port=web.http01_port
    )
    kind, detail = problem_of(result)
    assert kind == ProblemType.DNS
    assert detail.startswith(
        f"DNS problem: SERVFAIL looking up A for www.bogus.example - {DNSSEC_FAILED}"
    ), detail
    assert not web.http_history  # never connected to the tampered address


@pytest.mark.anyio
async def test_a_name_outside_the_zones_fails_as_servfail_not_timeout(dnssec: Dnssec) -> None:
    kind, detail = problem_of(await validate(dnssec.unbound, "dns-01", "example.com"))
    assert kind == ProblemType.DNS
    assert detail == (
        "DNS problem: SERVFAIL looking up TXT for _acme-challenge.example.com - "
        "the domain's nameservers may be malfunctioning"
    )
