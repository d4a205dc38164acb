"""Multi-perspective corroboration (BR 3.2.2.9) with perspectives that really
see different networks (issue 4, acceptance 3).

Three ``certmint-ca va-perspective`` processes each run inside a network
namespace of their own (``certmint.testing.netns``) and resolve through their
own DNS view: a ``certmint-challtestsrv`` on the host end of that namespace's
veth, which also serves http-01 there. The primary, ``certmint-ca serve``, keeps
its own view on the host's loopback (the harness's challenge test server) and
fans out to the three over the veths::

    host                                       namespace r<i> (i = 1..3)
    ----                                       -------------------------
    certmint-ca serve  --remote-va r<i>=... -> va-perspective on ns_address:4000
      DNS + http-01: 127.0.0.1 (harness)         resolves via host_address:8053
    view r<i>: challtestsrv on host_address  <-  DNS answers host_address for
      (DNS :8053, http-01 :P, mgmt :8055)          every name; http-01 from :P
    primary attacker: 127.0.0.2:P              attacker: 127.0.0.1:P (its own lo)

A view "disagrees" the way a BGP or DNS hijack looks from one vantage point:
its DNS answers the attacker's address for the name (http-01), where a server
answers with content that is not the key authorization, or it serves another
TXT value (dns-01). The BR quorum with three remotes tolerates one
disagreement and not two; the primary's own view must always pass.

Needs root for the namespaces: without it the tests fail with the reason when
CI is set, and skip with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from certmint.protocol.challenges import dns01_record_name, dns01_txt_value
from certmint.testing.acme_client import RawAcmeClient
from certmint.testing.harness import (
    LoopbackCA,
    format_logs,
    program_path,
    running_ca,
    start_process,
    stop_process,
    wait_for_output,
)
from certmint.testing.netns import NetworkNamespace, netns_unavailable_reason, network_namespace

pytestmark = pytest.mark.anyio

REGIONS = ("r1", "r2", "r3")
# Fixed ports are safe where only this module binds: inside its own fresh
# namespaces, and on the host ends of their veths (addresses nobody else has).
PERSPECTIVE_PORT = 4000
VIEW_DNS_PORT = 8053
VIEW_MANAGEMENT_PORT = 8055
# Where the primary's hijacked view points: a loopback address the harness's
# challenge test server (bound to 127.0.0.1 only) leaves free.
PRIMARY_ATTACKER = "127.0.0.2"
STARTUP_SECONDS = 30.0
MAX_POLLS = 200  # of 0.1 s each: bounds the wait for a validation
ATTACKER_BODY = "attacker-controlled content"
# Namespace indices of this module; test_netns_helper uses low ones.
FIRST_INDEX = 11
ACME_ERROR = "urn:ietf:params:acme:error:"

# An HTTP server that answers every GET with the same wrong body: the attacker
# a hijacked route leads to. Prints "ready" once it listens.
_ATTACKER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self):
            body = sys.argv[3].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Attacker)
    print("ready", flush=True)
    server.serve_forever()
    """
)


@dataclass(frozen=True)
class View:
    """One remote perspective and the network it sees."""

    region: str
    namespace: NetworkNamespace
    management_url: str  # its challenge test server's
    log_paths: tuple[Path, ...]


@dataclass(frozen=True)
class World:
    ca: LoopbackCA
    views: dict[str, View]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def netns_available() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"network namespaces are required in CI: {reason}")
        pytest.skip(f"network namespaces unavailable: {reason}")


def _all_logs(world: World | None, work: Path) -> str:
    text = format_logs(world.ca) if world is not None else ""
    for path in sorted(work.glob("*.log")):
        if world is not None and path in (world.ca.ca_log_path, world.ca.challtestsrv_log_path):
            continue
        text += f"===== {path.name} =====\n{path.read_text(errors='replace')[-8000:]}\n"
    return text


def _start_view(
    ns: NetworkNamespace, region: str, ca: LoopbackCA, secret: Path, work: Path
) -> View:
    """Start region's DNS/http-01 view on the host end of its veth, the attacker
    on the namespace's own loopback, and the perspective inside the namespace."""
    view_log = work / f"view-{region}.log"
    view = start_process(
        [
            program_path("certmint-challtestsrv"),
            "--dns", f"{ns.host_address}:{VIEW_DNS_PORT}",
            "--http01", f"{ns.host_address}:{ca.http01_port}",
            "--tlsalpn01", "",
            "--management", f"{ns.host_address}:{VIEW_MANAGEMENT_PORT}",
            "--default-ipv4", ns.host_address,
        ],
        view_log,
    )  # fmt: skip
    ns.processes.append(view)  # stopped with the namespace

    attacker_log = work / f"attacker-{region}.log"
    with attacker_log.open("ab") as log:
        attacker = ns.popen(
            [sys.executable, "-c", _ATTACKER, "127.0.0.1", str(ca.http01_port), ATTACKER_BODY],
            stdout=log,
            stderr=log,
        )

    perspective_log = work / f"perspective-{region}.log"
    with perspective_log.open("ab") as log:
        perspective = ns.popen(
            [
                program_path("certmint-ca"), "va-perspective",
                "--listen", f"{ns.ns_address}:{PERSPECTIVE_PORT}",
                "--region", region,
                "--secret-file", str(secret),
                "--dns-resolver", f"{ns.host_address}:{VIEW_DNS_PORT}",
                "--http01-port", str(ca.http01_port),
                "--tlsalpn01-port", str(ca.tlsalpn01_port),
                "--allow-private-addresses",
            ],
            stdout=log,
            stderr=log,
        )  # fmt: skip

    wait_for_output(view, view_log, "management listening on", STARTUP_SECONDS)
    wait_for_output(attacker, attacker_log, "ready", STARTUP_SECONDS)
    wait_for_output(
        perspective,
        perspective_log,
        f"va-perspective {region} listening on http://{ns.ns_address}:{PERSPECTIVE_PORT}",
        STARTUP_SECONDS,
    )
    return View(
        region=region,
        namespace=ns,
        management_url=f"http://{ns.host_address}:{VIEW_MANAGEMENT_PORT}",
        log_paths=(view_log, attacker_log, perspective_log),
    )


@pytest.fixture(scope="module")
def world(netns_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("perspectives")
    secret = work / "perspective.secret"
    secret.write_text(os.urandom(32).hex() + "\n")
    secret.chmod(0o600)
    built: World | None = None
    with contextlib.ExitStack() as stack:
        try:
            namespaces = [
                stack.enter_context(network_namespace("cm", FIRST_INDEX + i))
                for i in range(len(REGIONS))
            ]
            serve_args = ["--workers", "1", "--remote-va-secret-file", str(secret)]
            for region, ns in zip(REGIONS, namespaces, strict=True):
                serve_args += ["--remote-va", f"{region}=http://{ns.ns_address}:{PERSPECTIVE_PORT}"]
            ca = stack.enter_context(
                running_ca(work, serve_args=serve_args, challtestsrv_answers_challenges=True)
            )
            attacker_log = work / "attacker-primary.log"
            attacker = start_process(
                [sys.executable, "-c", _ATTACKER, PRIMARY_ATTACKER, str(ca.http01_port),
                 ATTACKER_BODY],
                attacker_log,
            )  # fmt: skip
            stack.callback(stop_process, attacker)
            wait_for_output(attacker, attacker_log, "ready", STARTUP_SECONDS)
            views = {
                region: _start_view(ns, region, ca, secret, work)
                for region, ns in zip(REGIONS, namespaces, strict=True)
            }
            built = World(ca=ca, views=views)
            yield built
        except BaseException:
            print(_all_logs(built, work), file=sys.stderr, flush=True)
            raise


# --------------------------------------------------------------------------- ACME


@dataclass(frozen=True)
class Attempt:
    """One authorization under test and its challenge of the chosen type."""

    client: RawAcmeClient
    name: str
    authz_url: str
    challenge: dict[str, Any]

    @property
    def token(self) -> str:
        return str(self.challenge["token"])

    @property
    def key_authorization(self) -> str:
        return self.client.key_authorization(self.token)

    @property
    def authz_id(self) -> str:
        return self.authz_url.rstrip("/").rsplit("/", 1)[1]


def _http(ca: LoopbackCA) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=str(ca.root_pem_path)), timeout=20
    )


async def _attempt(world: World, http: httpx.AsyncClient, challenge_type: str) -> Attempt:
    client = RawAcmeClient(http, world.ca.directory_url)
    await client.load_directory()
    account = await client.new_account()
    assert account.status_code == 201, account.text
    # A fresh name per test: no view carries records from another test.
    name = f"{uuid.uuid4().hex[:16]}.netns.test"
    order = await client.new_order([name])
    assert order.status_code == 201, order.text
    authz_url = order.json()["authorizations"][0]
    authz = (await client.get(authz_url)).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == challenge_type)
    return Attempt(client, name, authz_url, challenge)


async def _manage(http: httpx.AsyncClient, base_url: str, path: str, body: dict[str, Any]) -> None:
    response = await http.post(f"{base_url}{path}", json=body)
    assert response.status_code == 200, f"{base_url}{path}: {response.text}"


async def _provision_view(
    http: httpx.AsyncClient, management_url: str, attempt: Attempt, *, hijack_to: str | None
) -> None:
    """Publish the right answer in one view; with ``hijack_to``, make that view
    see the attacker instead: its DNS answers the attacker's address for the
    name (http-01), or another TXT value (dns-01)."""
    if attempt.challenge["type"] == "http-01":
        await _manage(
            http,
            management_url,
            "/add-http01",
            {"token": attempt.token, "content": attempt.key_authorization},
        )
        if hijack_to is not None:
            await _manage(
                http, management_url, "/add-a", {"host": attempt.name, "addresses": [hijack_to]}
            )
        return
    key_authorization = attempt.key_authorization
    if hijack_to is not None:  # the attacker's own account's key authorization
        key_authorization = f"{attempt.token}.{'A' * 43}"
    await _manage(
        http,
        management_url,
        "/set-txt",
        {
            "host": dns01_record_name(attempt.name) + ".",
            "value": dns01_txt_value(key_authorization),
        },
    )


async def _provision(
    world: World, http: httpx.AsyncClient, attempt: Attempt, *, disagreeing: set[str]
) -> None:
    """Every view answers rightly except those in ``disagreeing`` (regions, or
    "primary" for the primary's own view)."""
    primary_hijack = PRIMARY_ATTACKER if "primary" in disagreeing else None
    await _provision_view(
        http, world.ca.challtestsrv_management_url, attempt, hijack_to=primary_hijack
    )
    for region, view in world.views.items():
        # Inside the namespace, 127.0.0.1 is its own loopback: the attacker.
        hijack = "127.0.0.1" if region in disagreeing else None
        await _provision_view(http, view.management_url, attempt, hijack_to=hijack)


async def _validate(world: World, http: httpx.AsyncClient, attempt: Attempt) -> dict[str, Any]:
    """Respond to the challenge and wait (bounded) for the authorization to
    leave pending; returns the authorization."""
    response = await attempt.client.post(attempt.challenge["url"], {})
    assert response.status_code == 200, response.text
    authz: dict[str, Any] = {}
    for _ in range(MAX_POLLS):
        authz = (await attempt.client.get(attempt.authz_url)).json()
        if authz["status"] != "pending":
            return authz
        await anyio.sleep(0.1)
    raise AssertionError(f"authorization still pending: {authz}\n{_all_logs(world, _work(world))}")


def _work(world: World) -> Path:
    return world.ca.ca_log_path.parent


async def _perspectives(
    world: World, http: httpx.AsyncClient, attempt: Attempt
) -> dict[str, dict[str, Any]]:
    """The recorded outcome of each perspective for the attempted challenge, by region."""
    response = await http.get(f"{world.ca.management_url}/authz/{attempt.authz_id}/perspectives")
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["authorization"] == attempt.authz_id
    (challenge,) = [c for c in document["challenges"] if c["type"] == attempt.challenge["type"]]
    return {p["region"]: p for p in challenge["perspectives"]}


def _challenge(authz: dict[str, Any], challenge_type: str) -> dict[str, Any]:
    return next(c for c in authz["challenges"] if c["type"] == challenge_type)


# --------------------------------------------------------------------------- tests

CHALLENGE_TYPES = pytest.mark.parametrize("challenge_type", ["http-01", "dns-01"])


@CHALLENGE_TYPES
async def test_one_disagreeing_perspective_is_tolerated_and_recorded(
    world: World, challenge_type: str
) -> None:
    async with _http(world.ca) as http:
        attempt = await _attempt(world, http, challenge_type)
        await _provision(world, http, attempt, disagreeing={"r2"})
        authz = await _validate(world, http, attempt)
        perspectives = await _perspectives(world, http, attempt)

    assert authz["status"] == "valid", f"{authz}\n{perspectives}"
    assert _challenge(authz, challenge_type)["status"] == "valid"
    # BR 3.2.2.9: with 3 remotes one may fail to corroborate; it is recorded.
    assert perspectives["primary"]["valid"] is True, perspectives
    assert perspectives["r1"]["valid"] is True, perspectives
    assert perspectives["r3"]["valid"] is True, perspectives
    r2 = perspectives["r2"]
    assert r2["valid"] is False, perspectives
    assert r2["problemType"] == "unauthorized", perspectives
    if challenge_type == "http-01":
        # What the attacker served (the recorded detail is clipped at 200 characters).
        assert '(got "attacker-controlled' in r2["detail"], perspectives
    else:
        assert "Incorrect TXT record" in r2["detail"], perspectives


@CHALLENGE_TYPES
async def test_two_disagreeing_perspectives_refuse_the_authorization(
    world: World, challenge_type: str
) -> None:
    async with _http(world.ca) as http:
        attempt = await _attempt(world, http, challenge_type)
        await _provision(world, http, attempt, disagreeing={"r1", "r3"})
        authz = await _validate(world, http, attempt)
        perspectives = await _perspectives(world, http, attempt)

    assert authz["status"] == "invalid", f"{authz}\n{perspectives}"
    error = _challenge(authz, challenge_type)["error"]
    # Both disagree with the same problem type, so the refusal carries it
    # (corroboration.MultiPerspectiveVA._refusal); the detail names the quorum.
    assert error["type"] == ACME_ERROR + "unauthorized", error
    assert error["detail"].startswith(
        "During multi-perspective corroboration, 2 of 3 remote perspectives did not agree: "
    ), error
    assert "r1: " in error["detail"] and "r3: " in error["detail"], error
    assert perspectives["primary"]["valid"] is True, perspectives
    assert perspectives["r2"]["valid"] is True, perspectives
    for region in ("r1", "r3"):
        assert perspectives[region]["valid"] is False, perspectives
        assert perspectives[region]["problemType"] == "unauthorized", perspectives


@CHALLENGE_TYPES
async def test_the_primary_view_disagreeing_refuses_the_authorization(
    world: World, challenge_type: str
) -> None:
    async with _http(world.ca) as http:
        attempt = await _attempt(world, http, challenge_type)
        await _provision(world, http, attempt, disagreeing={"primary"})
        authz = await _validate(world, http, attempt)
        perspectives = await _perspectives(world, http, attempt)

    assert authz["status"] == "invalid", f"{authz}\n{perspectives}"
    error = _challenge(authz, challenge_type)["error"]
    # BR 3.2.2.9: the primary must succeed whatever the remotes say; its own
    # problem is the answer, not a corroboration refusal.
    assert error["type"] == ACME_ERROR + "unauthorized", error
    assert "multi-perspective" not in error["detail"], error
    primary = perspectives["primary"]
    assert primary["valid"] is False, perspectives
    assert primary["problemType"] == "unauthorized", perspectives
    # Remotes still running when the primary failed are cancelled; any that
    # answered first agreed (their views were right).
    assert all(perspectives[r]["valid"] for r in REGIONS if r in perspectives), perspectives


async def test_each_perspective_validates_from_inside_its_namespace(world: World) -> None:
    """The views are really distinct: each honest view's http-01 server saw
    the fetch come from its own namespace's address, and the hijacked view's
    server saw none (its perspective was sent to the attacker)."""
    async with _http(world.ca) as http:
        attempt = await _attempt(world, http, "http-01")
        await _provision(world, http, attempt, disagreeing={"r3"})
        authz = await _validate(world, http, attempt)
        assert authz["status"] == "valid", authz
        peers: dict[str, set[str]] = {}
        for region, view in world.views.items():
            response = await http.post(
                f"{view.management_url}/http-request-history", json={"host": attempt.name}
            )
            assert response.status_code == 200, response.text
            peers[region] = {entry["peer"] for entry in response.json()}
    assert peers["r1"] == {world.views["r1"].namespace.ns_address}, peers
    assert peers["r2"] == {world.views["r2"].namespace.ns_address}, peers
    assert peers["r3"] == set(), peers
