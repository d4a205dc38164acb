"""Multi-perspective corroboration (BR 3.2.2.9) over real sockets on 127.0.0.1.

Three real ``certmint-ca va-perspective`` processes, each resolving through
its own challenge test server (its own DNS view), corroborate an in-process
primary ``MultiPerspectiveVA`` whose own view is a fourth server. A name one
view sees differently still validates; two differing views refuse it. Then a
real ``certmint-ca serve --remote-va ...`` issues an order whose perspectives
appear on the management API.

The network-namespace version (perspectives on separate networks) is
tests/integration/test_perspectives_netns.py.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.corroboration import MultiPerspectiveVA
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.ca.va.remote import RemotePerspective
from certmint.protocol.challenges import dns01_txt_value
from certmint.testing.acme_client import RawAcmeClient
from certmint.testing.challtestsrv import ChallengeTestServer
from certmint.testing.clock import FakeClock
from certmint.testing.harness import (
    LOOPBACK,
    LoopbackCA,
    free_port,
    program_path,
    running_ca,
    start_process,
    stop_process,
    wait_for_output,
)

SECRET = b"perspective-test-secret-0123456789abcdef"
REGIONS = ("r1", "r2", "r3")
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
WRONG_KEYAUTHZ = f"{TOKEN}.AAAAWB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
STARTUP_SECONDS = 30.0
MAX_POLLS = 150  # of 0.1 s each: bounds the wait for validation


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Perspective:
    region: str
    url: str
    dns: ChallengeTestServer
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Views:
    """The primary's DNS view and the three perspectives (each with its own)."""

    primary_dns: ChallengeTestServer
    perspectives: dict[str, Perspective]

    def all_dns(self) -> list[ChallengeTestServer]:
        return [self.primary_dns, *(p.dns for p in self.perspectives.values())]


def dns_only_server() -> ChallengeTestServer:
    return ChallengeTestServer(http01_address=None, tlsalpn01_address=None, management_address=None)


def perspective_argv(region: str, port: int, secret_file: Path, dns_port: int) -> list[str]:
    return [
        program_path("certmint-ca"),
        "va-perspective",
        "--listen", f"{LOOPBACK}:{port}",
        "--region", region,
        "--secret-file", str(secret_file),
        "--dns-resolver", f"{LOOPBACK}:{dns_port}",
        "--allow-private-addresses",
    ]  # fmt: skip


def start_perspective(
    region: str, work: Path, secret_file: Path, dns_port: int
) -> tuple[subprocess.Popen[bytes], Path, str]:
    port = free_port()
    log_path = work / f"perspective-{region}.log"
    process = start_process(perspective_argv(region, port, secret_file, dns_port), log_path)
    try:
        wait_for_output(
            process,
            log_path,
            f"va-perspective {region} listening on http://{LOOPBACK}:{port}",
            STARTUP_SECONDS,
        )
    except BaseException:
        stop_process(process)
        raise
    return process, log_path, f"http://{LOOPBACK}:{port}"


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "perspective.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory, secret_file: Path) -> Iterator[Views]:
    work = tmp_path_factory.mktemp("perspectives")
    primary_dns = dns_only_server()
    servers = {region: dns_only_server() for region in REGIONS}
    with primary_dns.run_in_thread():
        with (
            servers["r1"].run_in_thread(),
            servers["r2"].run_in_thread(),
            servers["r3"].run_in_thread(),
        ):
            started: dict[str, Perspective] = {}
            try:
                for region in REGIONS:
                    dns = servers[region]
                    process, log_path, url = start_perspective(
                        region, work, secret_file, dns.dns_port
                    )
                    started[region] = Perspective(region, url, dns, process, log_path)
                yield Views(primary_dns, started)
            finally:
                for perspective in started.values():
                    stop_process(perspective.process)
    for perspective in started.values():
        # SIGTERM is a clean stop, not a crash.
        assert perspective.process.returncode == 0, perspective.log_path.read_text()


def primary_config(views: Views) -> VAConfig:
    return VAConfig(
        resolvers=(f"{LOOPBACK}:{views.primary_dns.dns_port}",),
        allow_private_addresses=True,
        dns_timeout=2.0,
        total_timeout=5.0,
    )


def corroborating_va(views: Views, secret: bytes = SECRET) -> MultiPerspectiveVA:
    remotes = [
        RemotePerspective(p.region, p.url, secret, 10.0) for p in views.perspectives.values()
    ]
    return MultiPerspectiveVA(
        ValidationAuthority(primary_config(views), FakeClock()), remotes, FakeClock()
    )


async def validate_dns01(views: Views, name: str, secret: bytes = SECRET) -> ValidationResult:
    va = corroborating_va(views, secret)
    try:
        with anyio.fail_after(30):
            return await va.validate(
                ValidationRequest("dns-01", "dns", name, TOKEN, KEYAUTHZ, account_uri="acct")
            )
    finally:
        await va.aclose()


def publish(views: Views, name: str, *, wrong_in: tuple[str, ...] = ()) -> None:
    """The dns-01 TXT for ``name`` in every view; the regions in ``wrong_in``
    see another account's value instead."""
    record = f"_acme-challenge.{name}"
    views.primary_dns.set_txt(record, dns01_txt_value(KEYAUTHZ))
    for region, perspective in views.perspectives.items():
        value = WRONG_KEYAUTHZ if region in wrong_in else KEYAUTHZ
        perspective.dns.set_txt(record, dns01_txt_value(value))


@pytest.mark.anyio
async def test_all_views_agree(views: Views) -> None:
    publish(views, "agree.example")
    result = await validate_dns01(views, "agree.example")
    assert result.valid, result.problem
    assert [(p.region, p.valid) for p in result.perspectives] == [
        ("primary", True),
        ("r1", True),
        ("r2", True),
        ("r3", True),
    ]


@pytest.mark.anyio
async def test_one_view_disagreeing_still_validates(views: Views) -> None:
    publish(views, "one-off.example", wrong_in=("r2",))
    result = await validate_dns01(views, "one-off.example")
    assert result.valid, result.problem
    outcomes = {p.region: p for p in result.perspectives}
    assert [p.region for p in result.perspectives] == ["primary", "r1", "r2", "r3"]
    assert outcomes["r2"].valid is False
    assert outcomes["r2"].problem_type == "unauthorized"
    assert "_acme-challenge.one-off.example" in (outcomes["r2"].detail or "")
    assert all(outcomes[r].valid for r in ("primary", "r1", "r3"))


@pytest.mark.anyio
async def test_two_views_disagreeing_refuses(views: Views) -> None:
    publish(views, "two-off.example", wrong_in=("r1", "r3"))
    result = await validate_dns01(views, "two-off.example")
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == "unauthorized"
    assert result.problem.detail.startswith(
        "During multi-perspective corroboration, 2 of 3 remote perspectives did not agree: r1: "
    )
    assert "; r3: " in result.problem.detail
    assert [(p.region, p.valid) for p in result.perspectives] == [
        ("primary", True),
        ("r1", False),
        ("r2", True),
        ("r3", False),
    ]


@pytest.mark.anyio
async def test_primary_view_disagreeing_refuses(views: Views) -> None:
    publish(views, "primary-off.example")
    views.primary_dns.clear_txt("_acme-challenge.primary-off.example")
    views.primary_dns.set_txt(
        "_acme-challenge.primary-off.example", dns01_txt_value(WRONG_KEYAUTHZ)
    )
    result = await validate_dns01(views, "primary-off.example")
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == "unauthorized"
    assert "multi-perspective" not in result.problem.detail  # the primary's own problem


@pytest.mark.anyio
async def test_caa_seen_by_two_perspectives_refuses(views: Views) -> None:
    """A CAA record naming another CA, visible from two remote views only:
    validation (which checks CAA at every perspective) and the finalize-time
    CAA re-check both refuse with a ``caa`` problem."""
    name = "caa-split.example"
    publish(views, name)
    for region in ("r1", "r2"):
        views.perspectives[region].dns.add_caa(name, [("issue", "other-ca.example")])
    result = await validate_dns01(views, name)
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == "caa"
    va = corroborating_va(views)
    try:
        with anyio.fail_after(30):
            problem = await va.check_caa(
                "dns", name, challenge_type="dns-01", account_uri="acct", wildcard=False
            )
    finally:
        await va.aclose()
    assert problem is not None
    assert problem.type == "caa"
    assert "2 of 3 remote perspectives did not agree" in problem.detail


@pytest.mark.anyio
async def test_a_primary_with_the_wrong_secret_gets_no_agreement(views: Views) -> None:
    publish(views, "wrong-secret.example")
    result = await validate_dns01(views, "wrong-secret.example", secret=b"x" * 40)
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == "serverInternal"
    assert "answered HTTP 401" in result.problem.detail


def test_perspective_refuses_a_short_secret(tmp_path: Path) -> None:
    short = tmp_path / "short.secret"
    short.write_bytes(b"too short\n")
    completed = subprocess.run(
        perspective_argv("r9", free_port(), short, free_port()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip() == (
        "certmint-ca: the shared secret must be at least 32 bytes, not 9"
    )


# --------------------------------------------------------------------------- end to end


@pytest.mark.anyio
async def test_serve_with_remote_perspectives_records_them(
    tmp_path: Path, secret_file: Path
) -> None:
    """``certmint-ca serve --remote-va``: r1 and r2 share the CA's DNS view,
    r3 has its own in which the TXT record is missing. The order is valid
    (one of three may disagree) and the management API shows all four."""
    ports = {region: free_port() for region in REGIONS}
    serve_args = ["--workers", "1", "--remote-va-secret-file", str(secret_file)]
    for region in REGIONS:
        serve_args += ["--remote-va", f"{region}=http://{LOOPBACK}:{ports[region]}"]
    lonely_dns = dns_only_server()
    processes: list[subprocess.Popen[bytes]] = []
    with running_ca(tmp_path, serve_args=serve_args) as ca, lonely_dns.run_in_thread():
        try:
            for region in REGIONS:
                dns_port = lonely_dns.dns_port if region == "r3" else ca.dns_port
                log_path = tmp_path / f"perspective-{region}.log"
                argv = perspective_argv(region, ports[region], secret_file, dns_port)
                processes.append(start_process(argv, log_path))
                wait_for_output(processes[-1], log_path, "listening on", STARTUP_SECONDS)
            authz_id, status = await _order_validated_by_dns01(ca)
            async with httpx.AsyncClient(timeout=10) as mgmt:
                shown = await mgmt.get(f"{ca.management_url}/authz/{authz_id}/perspectives")
                unknown = await mgmt.get(f"{ca.management_url}/authz/nosuchauthz/perspectives")
        finally:
            for process in processes:
                stop_process(process)
    assert status == "valid"
    assert shown.status_code == 200, shown.text
    doc = shown.json()
    assert doc["authorization"] == authz_id
    dns01 = next(c for c in doc["challenges"] if c["type"] == "dns-01")
    assert dns01["status"] == "valid"
    assert [(p["region"], p["valid"]) for p in dns01["perspectives"]] == [
        ("primary", True),
        ("r1", True),
        ("r2", True),
        ("r3", False),
    ]
    assert dns01["perspectives"][3]["problemType"] == "unauthorized"
    others = [c for c in doc["challenges"] if c["type"] != "dns-01"]
    assert others and all(c["perspectives"] == [] for c in others)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def _order_validated_by_dns01(ca: LoopbackCA) -> tuple[str, str]:
    """(authorization id, its status once validation finished)."""
    tls = ssl.create_default_context(cafile=str(ca.root_pem_path))
    async with httpx.AsyncClient(verify=tls, timeout=20) as http:
        client = RawAcmeClient(http, ca.directory_url)
        await client.load_directory()
        assert (await client.new_account()).status_code == 201
        response = await client.new_order(["corroborated.example"])
        assert response.status_code == 201, response.text
        authz_url = response.json()["authorizations"][0]
        authz = (await client.get(authz_url)).json()
        challenge = next(c for c in authz["challenges"] if c["type"] == "dns-01")
        added = await http.post(
            f"{ca.challtestsrv_management_url}/set-txt",
            json={
                "host": "_acme-challenge.corroborated.example",
                "value": dns01_txt_value(client.key_authorization(challenge["token"])),
            },
        )
        assert added.status_code == 200, added.text
        assert (await client.post(challenge["url"], {})).status_code == 200
        status = "pending"
        for _ in range(MAX_POLLS):
            status = (await client.get(authz_url)).json()["status"]
            if status != "pending":
                break
            await anyio.sleep(0.1)
        return authz_url.rstrip("/").rsplit("/", 1)[-1], status
