"""Loopback harness: a real certmint CA and challenge test server, as subprocesses.

Tests that talk to certmint the way the world does (certbot, lego, our own
agent over real sockets) start both programs with :func:`running_ca`::

    with running_ca(tmp_path) as ca:
        run_certbot(server=ca.directory_url, ca_bundle=ca.root_pem_path, ...)

Everything listens on 127.0.0.1 on free high ports, with its data in a
temporary directory, so tests never touch ports 53/80/443 or each other.
The CA trusts nobody's DNS but the challenge test server's, which answers
127.0.0.1 for every name. Clients learn only the directory URL and the root
certificate, which the harness fetches from the management port, exactly as a
user of a test CA would (RFC 8555 §7.1.1: the directory is the one entry point).

The module also carries the checks interop tests make on what the CA issued:
``openssl verify`` of the chain and pkilint's CA/Browser Forum TLS Baseline
Requirements linter on the leaf.

Waiting here is real waiting: the harness watches real processes start, so its
deadlines come from the system clock (``runtime.SystemClock``), and every wait
is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509

from certmint.runtime import SystemClock

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 30.0
# What certmint-ca serve prints once every worker serves (ca/cli.py, announce).
SERVE_READY_MARKER = "certmint-ca: ready"
# Between readiness probes we wait on the process itself, so a server that
# dies while starting is noticed at once instead of at the deadline.
_PROBE_INTERVAL_SECONDS = 0.2
_STOP_GRACE_SECONDS = 5.0
_LOG_TAIL_CHARS = 20_000

_CLOCK = SystemClock()


class HarnessError(RuntimeError):
    """The CA or the challenge test server did not start, or a check could not run."""


@dataclass(frozen=True)
class LoopbackCA:
    """Where a running loopback CA answers, and where its logs go."""

    directory_url: str
    root_pem_path: Path
    management_url: str
    # The port the CA's VA connects to for http-01: bind your client here.
    http01_port: int
    tlsalpn01_port: int
    dns_port: int
    challtestsrv_management_url: str
    data_dir: Path
    ca_log_path: Path
    challtestsrv_log_path: Path


@dataclass(frozen=True)
class LintFinding:
    """One finding of a pkilint linter, as its JSON output reports it."""

    validator: str
    node_path: str
    severity: str
    code: str
    message: str | None

    def __str__(self) -> str:
        detail = f": {self.message}" if self.message else ""
        return f"{self.severity} {self.code} @ {self.node_path} ({self.validator}){detail}"


def challtestsrv_command(
    *,
    dns_port: int,
    management_port: int,
    http01_port: int,
    tlsalpn01_port: int,
    answers_challenges: bool,
) -> list[str]:
    """The ``certmint-challtestsrv`` command line both CA harnesses use: DNS
    answering 127.0.0.1 for every name, and the challenge responders on the
    CA's validation ports only when asked — an empty address turns a
    responder off, leaving its port to the client under test."""
    http01 = f"{LOOPBACK}:{http01_port}" if answers_challenges else ""
    tlsalpn01 = f"{LOOPBACK}:{tlsalpn01_port}" if answers_challenges else ""
    return [
        program_path("certmint-challtestsrv"),
        "--dns", f"{LOOPBACK}:{dns_port}",
        "--http01", http01,
        "--tlsalpn01", tlsalpn01,
        "--management", f"{LOOPBACK}:{management_port}",
        "--default-ipv4", LOOPBACK,
    ]  # fmt: skip


# --------------------------------------------------------------------------- ports


def free_port(*, udp_too: bool = False) -> int:
    """A port on 127.0.0.1 that is free now (TCP, and UDP too if asked).

    The kernel picks from its ephemeral range, which is far above the
    privileged ports. Another program can still take the port before we use
    it; that window is short and every caller binds soon after.
    """
    for _attempt in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = int(tcp.getsockname()[1])
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise HarnessError("no free port pair on 127.0.0.1 after 50 tries")


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    for _attempt in range(count * 20):
        port = free_port(udp_too=not ports)  # the first one is the DNS port
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise HarnessError(f"could not find {count} distinct free ports")


# --------------------------------------------------------------------------- programs


def program_path(name: str) -> str:
    """The executable ``name``: the one installed next to this Python first.

    Console scripts that pip installed (certmint-ca, certbot, pkilint's linters)
    live beside ``sys.executable``; PATH may point elsewhere (pyenv shims not
    yet rehashed, a system certbot). Debian programs (lego, openssl) come from PATH.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise HarnessError(f"program {name!r} is not installed (run ./scripts/test once)")
    return found


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    if len(text) > _LOG_TAIL_CHARS:
        return "...\n" + text[-_LOG_TAIL_CHARS:]
    return text


def format_logs(ca: LoopbackCA) -> str:
    """Both programs' output, for a failing test to print."""
    return (
        f"===== certmint-ca serve log ({ca.ca_log_path}) =====\n{_tail(ca.ca_log_path)}\n"
        f"===== certmint-challtestsrv log ({ca.challtestsrv_log_path}) =====\n"
        f"{_tail(ca.challtestsrv_log_path)}\n"
    )


def print_logs(ca: LoopbackCA) -> None:
    print(format_logs(ca), file=sys.stderr, flush=True)


def start_process(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` logging to ``log_path``; ``env`` adds to this process's environment."""
    with log_path.open("ab") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        # A session of its own, so stopping it stops anything it started.
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's session, SIGKILL after a grace period; reap it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=_STOP_GRACE_SECONDS)


def wait_for_output(
    process: subprocess.Popen[bytes], log_path: Path, marker: str, timeout: float
) -> str:
    """Wait until ``marker`` appears in the process's log; return the log so far.

    Fails at once if the process exits first, and after ``timeout`` seconds.
    """
    deadline = _CLOCK.monotonic() + timeout
    while True:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if marker in text:
            return text
        if _CLOCK.monotonic() > deadline:
            raise HarnessError(f"{marker!r} did not appear in {log_path} in {timeout:.0f} s")
        _pause_unless_exited(process, str(log_path.name), log_path)


def _pause_unless_exited(process: subprocess.Popen[bytes], what: str, log_path: Path) -> None:
    """Wait one probe interval on ``process``; fail at once if it exited."""
    try:
        code = process.wait(timeout=_PROBE_INTERVAL_SECONDS)
    except subprocess.TimeoutExpired:
        return
    raise HarnessError(f"{what} exited with code {code} while starting; its log: {log_path}")


def _wait_for_tcp(
    process: subprocess.Popen[bytes], port: int, deadline: float, what: str, log_path: Path
) -> None:
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0):
                return
        except OSError:
            pass
        if _CLOCK.monotonic() > deadline:
            raise HarnessError(f"{what} did not listen on {LOOPBACK}:{port} in time")
        _pause_unless_exited(process, what, log_path)


def _fetch_root(
    process: subprocess.Popen[bytes], management_url: str, deadline: float, log_path: Path
) -> bytes:
    """GET /roots/0 from the management API until it answers a certificate."""
    last_error = "no answer"
    while True:
        try:
            response = httpx.get(f"{management_url}/roots/0", timeout=2.0)
            if response.status_code == 200:
                pem = response.content
                # Hostile until checked: it must parse, and be a CA certificate.
                root = x509.load_pem_x509_certificate(pem)
                constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
                if not constraints.value.ca:
                    raise HarnessError("/roots/0 is not a CA certificate")
                return pem
            last_error = f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            last_error = repr(error)
        if _CLOCK.monotonic() > deadline:
            raise HarnessError(f"management API gave no root in time: {last_error}")
        _pause_unless_exited(process, "certmint-ca serve", log_path)


def _wait_for_directory(
    process: subprocess.Popen[bytes],
    directory_url: str,
    root_pem_path: Path,
    deadline: float,
    log_path: Path,
) -> None:
    """Wait until the directory answers over HTTPS that chains to the root.

    The check is the one clients make: the server's certificate must chain to
    the root from the management port and name 127.0.0.1 (RFC 6125).
    """
    tls = ssl.create_default_context(cafile=str(root_pem_path))
    last_error = "no answer"
    while True:
        try:
            response = httpx.get(directory_url, timeout=2.0, verify=tls)
            if response.status_code == 200 and "newNonce" in response.json():
                return
            last_error = f"HTTP {response.status_code}: {response.text[:200]}"
        except (httpx.HTTPError, ValueError) as error:
            last_error = repr(error)
        if _CLOCK.monotonic() > deadline:
            raise HarnessError(f"{directory_url} did not answer in time: {last_error}")
        _pause_unless_exited(process, "certmint-ca serve", log_path)


@contextlib.contextmanager
def running_ca(
    work_dir: Path,
    *,
    serve_args: Sequence[str] = (),
    challtestsrv_answers_challenges: bool = False,
    dns_resolver: str | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    env: Mapping[str, str] | None = None,
) -> Iterator[LoopbackCA]:
    """Start ``certmint-challtestsrv`` and ``certmint-ca serve``; stop both on exit.

    ``work_dir`` receives the CA's data directory, the root PEM and both logs.
    By default the challenge test server serves only DNS, and the http-01 and
    tls-alpn-01 ports the CA validates against are left free for the client
    under test (certbot --standalone, lego --http) to bind. With
    ``challtestsrv_answers_challenges`` the challenge test server listens on
    those ports instead, for tests that provision responses through its
    management API. ``serve_args`` are appended to ``certmint-ca serve``
    (e.g. ``--eab-required``, chaos flags). ``dns_resolver`` (``HOST:PORT``)
    makes the CA resolve through another DNS server instead of the challenge
    test server's, e.g. a real authoritative server that takes RFC 2136
    updates for dns-01 (``--dns-resolver`` accumulates, so it cannot be
    overridden through ``serve_args``). ``env`` is added to the CA's environment
    (e.g. ``SOFTHSM2_CONF`` for a CA whose issuing keys are in SoftHSM2).

    If the ``with`` body raises, both logs are printed before they are stopped.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = work_dir / "ca-data"
    ca_log_path = work_dir / "certmint-ca.log"
    cts_log_path = work_dir / "challtestsrv.log"
    root_pem_path = work_dir / "root.pem"
    (
        dns_port,
        acme_port,
        management_port,
        http01_port,
        tlsalpn01_port,
        cts_management_port,
    ) = _distinct_free_ports(6)

    challtestsrv_argv = challtestsrv_command(
        dns_port=dns_port,
        management_port=cts_management_port,
        http01_port=http01_port,
        tlsalpn01_port=tlsalpn01_port,
        answers_challenges=challtestsrv_answers_challenges,
    )
    serve_argv = [
        program_path("certmint-ca"),
        "serve",
        "--data-dir", str(data_dir),
        "--listen", f"{LOOPBACK}:{acme_port}",
        "--management-listen", f"{LOOPBACK}:{management_port}",
        "--dns-resolver", dns_resolver or f"{LOOPBACK}:{dns_port}",
        "--http01-port", str(http01_port),
        "--tlsalpn01-port", str(tlsalpn01_port),
        "--allow-private-addresses",
        # Test names live under .example/.test, which the Public Suffix List
        # does not list (RFC 2606 / RFC 6761).
        "--allow-unlisted-tlds",
        *serve_args,
    ]  # fmt: skip

    ca = LoopbackCA(
        directory_url=f"https://{LOOPBACK}:{acme_port}/directory",
        root_pem_path=root_pem_path,
        management_url=f"http://{LOOPBACK}:{management_port}",
        http01_port=http01_port,
        tlsalpn01_port=tlsalpn01_port,
        dns_port=dns_port,
        challtestsrv_management_url=f"http://{LOOPBACK}:{cts_management_port}",
        data_dir=data_dir,
        ca_log_path=ca_log_path,
        challtestsrv_log_path=cts_log_path,
    )

    processes: list[subprocess.Popen[bytes]] = []
    try:
        deadline = _CLOCK.monotonic() + startup_timeout
        challtestsrv = start_process(challtestsrv_argv, cts_log_path)
        processes.append(challtestsrv)
        _wait_for_tcp(
            challtestsrv, cts_management_port, deadline, "certmint-challtestsrv", cts_log_path
        )
        serve = start_process(serve_argv, ca_log_path, env)
        processes.append(serve)
        root_pem_path.write_bytes(_fetch_root(serve, ca.management_url, deadline, ca_log_path))
        _wait_for_directory(serve, ca.directory_url, root_pem_path, deadline, ca_log_path)
        # One worker answering is not all of them: serve prints "ready" once
        # every worker serves (a worker that died at start-up used to leave
        # its share of connections unanswered while the others passed).
        wait_for_output(
            serve, ca_log_path, SERVE_READY_MARKER, max(0.0, deadline - _CLOCK.monotonic())
        )
        yield ca
    except BaseException:
        print_logs(ca)
        raise
    finally:
        for process in reversed(processes):
            stop_process(process)


# --------------------------------------------------------------------------- checks


def split_pem_bundle(pem: bytes) -> list[bytes]:
    """The PEM certificates in ``pem``, in order, each re-encoded on its own."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return [cert.public_bytes(Encoding.PEM) for cert in x509.load_pem_x509_certificates(pem)]


def openssl_verify(root_pem: Path, leaf_pem: Path, untrusted_pem: Path | None) -> str:
    """``openssl verify -CAfile root [-untrusted chain] leaf``; raise unless it says OK.

    ``-x509_strict`` makes OpenSSL apply RFC 5280's rules it otherwise relaxes.
    """
    argv = [program_path("openssl"), "verify", "-x509_strict", "-CAfile", str(root_pem)]
    if untrusted_pem is not None:
        argv += ["-untrusted", str(untrusted_pem)]
    argv.append(str(leaf_pem))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or not result.stdout.strip().endswith(": OK"):
        raise AssertionError(f"openssl verify failed ({' '.join(argv)}):\n{output}")
    return output


def lint_subscriber_certificate(cert_pem: Path) -> list[LintFinding]:
    """Every finding of pkilint's CA/B Forum TLS BR linter on a DV leaf.

    The type is given, not detected: an ACME CA issues domain-validated
    subscriber certificates (TLS BR §7.1.2.7), and detection would lint a leaf
    that lacks the DV policy OID against the wrong profile.
    """
    argv = [
        program_path("lint_cabf_serverauth_cert"),
        "lint",
        "--type", "DV-FINAL-CERTIFICATE",
        "--severity", "ALL",
        "--format", "JSON",
        str(cert_pem),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    # The linter's exit code is the number of reported findings (capped), so
    # only its output tells success; a crash prints no JSON.
    try:
        report = json.loads(result.stdout)
    except ValueError as error:
        raise HarnessError(
            f"pkilint printed no JSON (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        ) from error
    findings: list[LintFinding] = []
    for entry in report.get("results", []):
        for description in entry.get("finding_descriptions", []):
            findings.append(
                LintFinding(
                    validator=str(entry.get("validator")),
                    node_path=str(entry.get("node_path")),
                    severity=str(description.get("severity")),
                    code=str(description.get("code")),
                    message=description.get("message"),
                )
            )
    return findings


def blocking_findings(findings: Sequence[LintFinding]) -> list[LintFinding]:
    """The findings that fail a certificate: FATAL, ERROR and WARNING."""
    return [f for f in findings if f.severity in {"FATAL", "ERROR", "WARNING"}]


def assert_lint_clean(cert_pem: Path) -> None:
    findings = lint_subscriber_certificate(cert_pem)
    if blocking_findings(findings):
        listing = "\n".join(f"  {finding}" for finding in findings)
        raise AssertionError(f"pkilint findings on {cert_pem}:\n{listing}")


def dns_names(cert_pem: bytes) -> set[str]:
    """The leaf's subjectAltName dNSName entries (TLS BR §7.1.2.7.12)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(san.value.get_values_for_type(x509.DNSName))


def certificate_status(ca: LoopbackCA, serial: int) -> dict[str, object]:
    """The management API's ``/cert-status-by-serial/<hex>`` answer, as JSON."""
    response = httpx.get(f"{ca.management_url}/cert-status-by-serial/{serial:x}", timeout=5.0)
    if response.status_code != 200:
        raise AssertionError(
            f"cert-status-by-serial/{serial:x}: HTTP {response.status_code}: {response.text}"
        )
    status = response.json()
    if not isinstance(status, dict):
        raise AssertionError(f"cert-status-by-serial/{serial:x}: not a JSON object: {status!r}")
    return status
