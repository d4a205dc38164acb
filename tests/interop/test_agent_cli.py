"""The ``certmint`` agent end to end, as a user runs it, on real sockets
(issue 3, acceptance 1 and 2).

Acceptance 1: against certmint-ca and against Pebble (Debian, its default
chaos kept: 5 % of nonces refused, a shortened validation sleep) the CLI
obtains a certificate with each authenticator — standalone http-01,
standalone tls-alpn-01, webroot served by a real nginx, manual with hooks,
dns-rfc2136 against a real Knot DNS — then renews it (forced here; ARI-driven
below, with ``replaces`` checked at certmint-ca), lists, revokes and deletes
it. Renewals run without any authenticator flag: what was used is read back
from ``renewal/<name>.conf``, as a cron job's ``certmint renew`` would.

Acceptance 2: the files land in certbot's layout with certbot's permissions,
and a run killed (SIGKILL) during validation, after download or while
saving leaves the previous (or the complete new) certificate intact, and the
next run succeeds.

Both CAs give every renewal fresh authorizations (authorization reuse off),
so each renewal exercises the authenticator again.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from certmint.testing.harness import LoopbackCA, certificate_status, format_logs, running_ca
from certmint.testing.pebble import RunningPebble, running_pebble
from certmint.testing.pebble import format_logs as pebble_logs

from ..contract.authenticator_servers import Knot, Nginx, run_knot, run_nginx
from .agent_support import (
    KINDS,
    Agent,
    CaUnderTest,
    assert_certbot_layout,
    blocking_hook,
    challtestsrv_hooks,
    current_version,
    env_recording_hook,
    listed_names,
    serial_of,
    wait_for_file,
)

pytestmark = pytest.mark.interop

CA_KINDS = ("certmint-ca", "pebble")
AUTHENTICATORS = (
    "standalone-http01",
    "standalone-tlsalpn01",
    "webroot-nginx",
    "manual-hooks",
    "dns-rfc2136-knot",
)
CHALLENGE = {
    "standalone-http01": "http-01",
    "standalone-tlsalpn01": "tls-alpn-01",
    "webroot-nginx": "http-01",
    "manual-hooks": "http-01",
    "dns-rfc2136-knot": "dns-01",
}
# Every name resolves to 127.0.0.1 through the challenge test server; for
# dns-01 they live in Knot's example.com zone.
NAMES = ("www.example.com", "api.example.com")


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with run_nginx(tmp_path_factory.mktemp("nginx")) as server:
        yield server


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    with run_knot(tmp_path_factory.mktemp("knot")) as server:
        yield server


def _certmint_ca_status(ca: LoopbackCA) -> CaUnderTest:
    return CaUnderTest(
        kind="certmint-ca",
        directory_url=ca.directory_url,
        tls_root_pem_path=ca.root_pem_path,
        http01_port=ca.http01_port,
        tlsalpn01_port=ca.tlsalpn01_port,
        challtestsrv_management_url=ca.challtestsrv_management_url,
        format_logs=lambda: format_logs(ca),
        management_url=ca.management_url,
    )


@contextlib.contextmanager
def certmint_ca(
    work: Path,
    *,
    answers_challenges: bool,
    http01_port: int | None = None,
    dns_resolver: str | None = None,
) -> Iterator[tuple[CaUnderTest, LoopbackCA]]:
    # No authorization reuse: every renewal validates again.
    serve_args = ["--chaos-authz-reuse", "0"]
    if http01_port is not None:
        # A later --http01-port wins over the harness's own (argparse "store").
        serve_args += ["--http01-port", str(http01_port)]
    with running_ca(
        work,
        serve_args=serve_args,
        challtestsrv_answers_challenges=answers_challenges,
        dns_resolver=dns_resolver,
    ) as ca:
        under_test = _certmint_ca_status(ca)
        if http01_port is not None:
            under_test = CaUnderTest(**{**under_test.__dict__, "http01_port": http01_port})
        yield under_test, ca


@contextlib.contextmanager
def pebble_ca(
    work: Path,
    *,
    answers_challenges: bool,
    http01_port: int | None = None,
    dns_resolver: str | None = None,
) -> Iterator[tuple[CaUnderTest, RunningPebble]]:
    # Pebble's default chaos stays: 5 % badNonce, a (shortened) validation sleep.
    with running_pebble(
        work,
        authz_reuse_percent=0,
        challtestsrv_answers_challenges=answers_challenges,
        dns_server=dns_resolver,
        http01_port=http01_port,
    ) as pebble:
        yield (
            CaUnderTest(
                kind="pebble",
                directory_url=pebble.directory_url,
                tls_root_pem_path=pebble.tls_root_pem_path,
                http01_port=pebble.http01_port,
                tlsalpn01_port=pebble.tlsalpn01_port,
                challtestsrv_management_url=pebble.challtestsrv_management_url,
                format_logs=lambda: pebble_logs(pebble),
                management_url=pebble.management_url,
            ),
            pebble,
        )


def revocation_status(ca: CaUnderTest, serial: int) -> tuple[str, object]:
    """The CA's own record of the certificate: ("Valid" or "Revoked", reason code)."""
    # Pebble's management port speaks HTTPS under its own TLS root.
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(ca.tls_root_pem_path))
        if ca.kind == "pebble"
        else True
    )
    response = httpx.get(
        f"{ca.management_url}/cert-status-by-serial/{serial:x}", verify=verify, timeout=5.0
    )
    assert response.status_code == 200, response.text
    status = response.json()
    return str(status["Status"]), status.get("Reason")


def authenticator_args(
    authenticator: str, ca: CaUnderTest, base: Path, nginx: Nginx | None, knot: Knot | None
) -> tuple[list[str], str]:
    """The flags a user would type for ``authenticator``, and the name the
    renewal conf records."""
    if authenticator == "standalone-http01":
        return ["--standalone", "--http-01-port", str(ca.http01_port)], "standalone"
    if authenticator == "standalone-tlsalpn01":
        return [
            "--standalone", "--preferred-challenges", "tls-alpn-01",
            "--tls-alpn-01-port", str(ca.tlsalpn01_port),
        ], "standalone"  # fmt: skip
    if authenticator == "webroot-nginx":
        assert nginx is not None
        return ["--webroot", "-w", str(nginx.webroot)], "webroot"
    if authenticator == "manual-hooks":
        auth, cleanup = challtestsrv_hooks(base / "hooks", ca.challtestsrv_management_url)
        return [
            "--manual", "--preferred-challenges", "http-01",
            "--manual-auth-hook", str(auth), "--manual-cleanup-hook", str(cleanup),
        ], "manual"  # fmt: skip
    assert authenticator == "dns-rfc2136-knot" and knot is not None
    base.mkdir(parents=True, exist_ok=True)
    credentials = knot.credentials(base / "rfc2136.ini")
    return ["--dns-rfc2136", "--dns-rfc2136-credentials", str(credentials)], "dns-rfc2136"


@contextlib.contextmanager
def ca_for(
    kind: str, authenticator: str, work: Path, nginx: Nginx | None, knot: Knot | None
) -> Iterator[CaUnderTest]:
    start = certmint_ca if kind == "certmint-ca" else pebble_ca
    with start(
        work,
        # The manual hooks publish through the challenge test server.
        answers_challenges=authenticator == "manual-hooks",
        http01_port=nginx.port if nginx is not None else None,
        dns_resolver=f"127.0.0.1:{knot.port}" if knot is not None else None,
    ) as (ca, _):
        yield ca


# ------------------------------------------------------------------ acceptance 1


@pytest.mark.parametrize("authenticator", AUTHENTICATORS)
@pytest.mark.parametrize("ca_kind", CA_KINDS)
def test_obtain_renew_list_revoke_delete(
    ca_kind: str, authenticator: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    nginx: Nginx | None = (
        request.getfixturevalue("nginx") if authenticator == "webroot-nginx" else None
    )
    knot: Knot | None = (
        request.getfixturevalue("knot") if authenticator == "dns-rfc2136-knot" else None
    )
    with ca_for(ca_kind, authenticator, tmp_path / "ca", nginx, knot) as ca:
        agent = Agent(tmp_path / "agent", ca)
        try:
            _lifecycle(agent, authenticator, nginx, knot)
        finally:
            agent.stop_all()


def _lifecycle(agent: Agent, authenticator: str, nginx: Nginx | None, knot: Knot | None) -> None:
    ca = agent.ca
    name = NAMES[0]
    flags, recorded = authenticator_args(authenticator, ca, agent.base, nginx, knot)
    domains = [arg for n in NAMES for arg in ("-d", n)]

    obtained = agent.certonly(*flags, *domains)
    assert "Successfully received certificate" in obtained.stdout
    for domain in NAMES:
        assert f"{domain}: validated ({CHALLENGE[authenticator]})" in obtained.stdout
    assert str(agent.live(name) / "fullchain.pem") in obtained.stdout
    first = assert_certbot_layout(agent, name, version=1, names=NAMES, authenticator=recorded)

    # A cron job's renew: no authenticator flags, the renewal conf says how.
    renewed = agent.renew("--force-renewal")
    assert f"{name}: renewed" in renewed.stdout
    # The same method again, read back from the conf.
    method = CHALLENGE[authenticator]
    validated = [domain for domain in NAMES if f"{domain}: validated ({method})" in renewed.stdout]
    if ca.kind == "pebble":
        # Pebble reuses a valid authorization one time in a hundred even with
        # PEBBLE_AUTHZREUSE=0 (wfe.go makes a new one only when
        # rand.Intn(100) > the percentage): such a name says so, and at
        # least one name must have been validated again.
        reused = [domain for domain in NAMES if f"{domain}: already authorized" in renewed.stdout]
        assert validated and sorted(validated + reused) == sorted(NAMES), renewed.stdout
    else:
        assert validated == list(NAMES), renewed.stdout
    second = assert_certbot_layout(agent, name, version=2, names=NAMES, authenticator=recorded)
    assert second.serial_number != first.serial_number
    assert all((agent.archive(name) / f"{kind}1.pem").is_file() for kind in KINDS)
    if knot is not None:  # the cleanup removed what the updates added
        assert knot.txt_values(f"_acme-challenge.{name}") == set()
    if nginx is not None:  # the webroot's challenge files are gone again
        challenge_dir = nginx.webroot / ".well-known" / "acme-challenge"
        assert not challenge_dir.is_dir() or not any(challenge_dir.iterdir())

    listing = agent.run("certificates")
    assert listed_names(listing) == [name]
    domains_line = re.search(r"^\s*Domains: (.*)$", listing.stdout, re.M)
    assert domains_line is not None and sorted(domains_line.group(1).split()) == sorted(NAMES)
    assert str(agent.live(name) / "fullchain.pem") in listing.stdout

    assert revocation_status(ca, second.serial_number)[0] == "Valid"
    agent.run(
        "revoke", "--cert-name", name, "--reason", "keycompromise", "--no-delete-after-revoke"
    )
    # RFC 5280 §5.3.1: keyCompromise is reason code 1.
    assert revocation_status(ca, second.serial_number) == ("Revoked", 1)
    assert current_version(agent, name) == 2  # revoking kept the files, as asked

    agent.run("delete", "--cert-name", name)
    for gone in (agent.live(name), agent.archive(name), agent.renewal_conf(name)):
        assert not gone.exists(), gone
    assert "No certificates found" in agent.run("certificates").stdout


# ------------------------------------------------------------------ certmint-ca only


@pytest.fixture(scope="module")
def hooked_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaUnderTest]:
    """certmint-ca whose challenge test server answers http-01, for agents
    using manual hooks that publish through its management API."""
    with certmint_ca(tmp_path_factory.mktemp("hooked-ca"), answers_challenges=True) as (ca, _):
        yield ca


@pytest.fixture
def agent(hooked_ca: CaUnderTest, tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(tmp_path / "agent", hooked_ca)
    try:
        yield agent
    finally:
        agent.stop_all()


def manual_flags(agent: Agent) -> list[str]:
    auth, cleanup = challtestsrv_hooks(agent.base / "hooks", agent.ca.challtestsrv_management_url)
    return [
        "--manual", "--preferred-challenges", "http-01",
        "--manual-auth-hook", str(auth), "--manual-cleanup-hook", str(cleanup),
    ]  # fmt: skip


def obtain(agent: Agent, name: str, *more: str) -> None:
    agent.certonly(*manual_flags(agent), "-d", name, *more)
    assert current_version(agent, name) == 1


def test_ari_window_drives_renewal_and_replaces_is_sent(agent: Agent) -> None:
    name = "ari.example.com"
    obtain(agent, name)
    old_serial = serial_of(agent, name)

    # Not due: a fresh certificate, and the CA's default window is far ahead.
    quiet = agent.renew()
    assert "not due for renewal" in quiet.stdout and "ARI" in quiet.stdout
    assert current_version(agent, name) == 1

    # The operator moves the window into the past: ARI says "renew now".
    now = datetime.now(UTC)
    window = {
        "start": (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    response = httpx.post(
        f"{agent.ca.management_url}/renewal-info/{old_serial:x}", json=window, timeout=5.0
    )
    assert response.status_code == 200, response.text
    assert response.json()["RenewalWindow"]["source"] == "operator"

    renewed = agent.renew()
    assert "ARI" in renewed.stdout, renewed.stdout
    assert f"{name}: renewed" in renewed.stdout
    assert current_version(agent, name) == 2
    new_serial = serial_of(agent, name)
    assert new_serial != old_serial

    # RFC 9773 §5: the new order named the old certificate in "replaces".
    ca = _loopback(agent.ca)
    old_status = certificate_status(ca, old_serial)
    assert old_status["ReplacedBy"], old_status
    assert certificate_status(ca, new_serial)["ReplacedBy"] is None

    # The new certificate has the default window again: nothing more to do.
    again = agent.renew()
    assert "not due for renewal" in again.stdout
    assert current_version(agent, name) == 2


def _loopback(ca: CaUnderTest) -> LoopbackCA:
    """Enough of a LoopbackCA for the harness's certificate_status()."""
    return LoopbackCA(
        directory_url=ca.directory_url,
        root_pem_path=ca.tls_root_pem_path,
        management_url=ca.management_url,
        http01_port=ca.http01_port,
        tlsalpn01_port=ca.tlsalpn01_port,
        dns_port=0,
        challtestsrv_management_url=ca.challtestsrv_management_url,
        data_dir=Path(),
        ca_log_path=Path(),
        challtestsrv_log_path=Path(),
    )


def test_deploy_hooks_get_renewed_lineage_and_domains(agent: Agent) -> None:
    names = ("deploy.example.com", "www.deploy.example.com")
    record = agent.base / "deploy-record.txt"
    hook = env_recording_hook(agent.base / "deploy-hook.py", record)
    hooks_dir = agent.config_dir / "renewal-hooks" / "deploy"
    hooks_dir.mkdir(parents=True)
    directory_record = agent.base / "directory-record.txt"
    env_recording_hook(hooks_dir / "10-record.py", directory_record)

    agent.certonly(*manual_flags(agent), "-d", names[0], "-d", names[1], "--deploy-hook", str(hook))
    record.unlink(missing_ok=True)
    directory_record.unlink(missing_ok=True)

    # The renewal runs the stored --deploy-hook and the directory's scripts.
    agent.renew("--force-renewal")
    expected = f"{agent.live(names[0])}|{' '.join(names)}\n"
    assert record.read_text() == expected
    assert directory_record.read_text() == expected


def test_dry_run_saves_nothing(agent: Agent) -> None:
    name = "dry.example.com"
    dry = agent.certonly(*manual_flags(agent), "-d", name, "--dry-run")
    assert "dry run was successful" in dry.stdout
    assert "certificate downloaded" in dry.stdout  # a full issuance happened
    for path in (agent.live(name), agent.archive(name), agent.renewal_conf(name)):
        assert not path.exists(), path

    obtain(agent, name)
    conf_before = agent.renewal_conf(name).read_text()
    archive_before = sorted(os.listdir(agent.archive(name)))
    # certbot's renew --dry-run simulates every renewal, due or not.
    dry_renew = agent.renew("--dry-run")
    assert "certificate downloaded" in dry_renew.stdout
    assert "dry run was successful" in dry_renew.stdout
    assert current_version(agent, name) == 1
    assert sorted(os.listdir(agent.archive(name))) == archive_before
    assert agent.renewal_conf(name).read_text() == conf_before


def test_failed_renewal_keeps_old_certificate_and_reports_one_line_each(
    agent: Agent,
) -> None:
    names = ("fail-one.example.com", "fail-two.example.com")
    for name in names:
        obtain(agent, name)
    serials = {name: serial_of(agent, name) for name in names}

    # An auth hook that publishes nothing: the CA's validation fails.
    failed = agent.renew("--force-renewal", "--manual-auth-hook", "true", expect=1)
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == len(names), failed.stderr
    for name, line in zip(names, lines, strict=True):
        assert line.startswith(f"certmint: {name}: renewal failed: "), line
        assert name in line.removeprefix(f"certmint: {name}: ")  # the identifier concerned
    for name in names:
        assert current_version(agent, name) == 1
        assert serial_of(agent, name) == serials[name]

    # The failure changed nothing stored: the next plain renew succeeds.
    agent.renew("--force-renewal")
    for name in names:
        assert current_version(agent, name) == 2


# ------------------------------------------------------------------ acceptance 2: kill it


def assert_intact(agent: Agent, name: str, version: int, serial: int | None = None) -> None:
    """The lineage is whole at ``version``, listed, and (if given) unchanged."""
    assert_certbot_layout(agent, name, version=version, names=(name,), authenticator="manual")
    if serial is not None:
        assert serial_of(agent, name) == serial
    assert listed_names(agent.run("certificates")) == [name]


def test_killed_during_first_validation_leaves_nothing_and_next_run_succeeds(
    agent: Agent,
) -> None:
    name = "first.example.com"
    marker = agent.base / "validating"
    hook = blocking_hook(agent.base / "slow-auth.py", marker, once=False)
    flags = manual_flags(agent)
    process = agent.start(
        "certonly", "--server", agent.ca.directory_url, "--agree-tos",
        "--register-unsafely-without-email", *flags, "--manual-auth-hook", str(hook),
        "-d", name,
    )  # fmt: skip
    wait_for_file(marker, process)
    agent.kill(process)

    assert "No certificates found" in agent.run("certificates").stdout
    agent.certonly(*flags, "-d", name)
    # The same name, not name-0001: the killed run left no lineage behind.
    assert_intact(agent, name, 1)


def test_killed_during_renewal_validation_keeps_previous_certificate(agent: Agent) -> None:
    name = "validating.example.com"
    obtain(agent, name)
    serial = serial_of(agent, name)
    marker = agent.base / "validating"
    hook = blocking_hook(agent.base / "slow-auth.py", marker, once=False)

    process = agent.start(
        "renew", "--no-random-sleep-on-renew", "--force-renewal", "--manual-auth-hook", str(hook)
    )
    wait_for_file(marker, process)
    agent.kill(process)

    assert_intact(agent, name, 1, serial)
    agent.renew("--force-renewal")  # with the stored, working hook
    assert_intact(agent, name, 2)


def test_killed_in_deploy_hook_after_download_keeps_complete_new_certificate(
    agent: Agent,
) -> None:
    name = "deploying.example.com"
    obtain(agent, name)
    marker = agent.base / "deploying"
    hook = blocking_hook(agent.base / "slow-deploy.py", marker, once=True)

    process = agent.start(
        "renew", "--no-random-sleep-on-renew", "--force-renewal", "--deploy-hook", str(hook)
    )
    wait_for_file(marker, process)
    agent.kill(process)

    # The new certificate was saved whole before the hook ran: all four
    # links point at version 2, key and certificate match.
    assert_intact(agent, name, 2)
    agent.renew("--force-renewal")  # the stored deploy hook now returns at once
    assert_intact(agent, name, 3)


def test_half_written_archive_version_from_a_crash_is_ignored_then_swept(
    agent: Agent,
) -> None:
    name = "saving.example.com"
    obtain(agent, name)
    serial = serial_of(agent, name)
    archive = agent.archive(name)
    # What a crash mid-save leaves: a key and part of a certificate of
    # version 2, and a temporary file, with the live links still on version 1.
    (archive / "privkey2.pem").write_bytes((archive / "privkey1.pem").read_bytes())
    (archive / "privkey2.pem").chmod(0o600)
    (archive / "cert2.pem").write_bytes((archive / "cert1.pem").read_bytes()[:100])
    (archive / ".chain2.pem.crashed.tmp").write_bytes(b"-----BEGIN CERT")

    assert_intact(agent, name, 1, serial)
    agent.renew("--force-renewal")
    assert_intact(agent, name, 3)
    leftovers = sorted(p.name for p in archive.iterdir())
    assert leftovers == sorted(f"{kind}{v}.pem" for kind in KINDS for v in (1, 3)), leftovers


def test_killed_between_symlink_switches_is_finished_by_next_run(agent: Agent) -> None:
    name = "switching.example.com"
    obtain(agent, name)
    agent.renew("--force-renewal")
    assert current_version(agent, name) == 2
    live = agent.live(name)
    # save_renewal switches privkey, fullchain, chain, cert in that order: a
    # kill after the first two leaves chain and cert on version 1.
    for kind in ("chain", "cert"):
        link = live / f"{kind}.pem"
        link.unlink()
        link.symlink_to(f"../../archive/{name}/{kind}1.pem")

    # The next run that takes the lock points all four at version 2 first,
    # then renews from a consistent lineage.
    agent.renew("--force-renewal")
    assert_intact(agent, name, 3)
