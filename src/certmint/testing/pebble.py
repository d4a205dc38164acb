"""Pebble, Let's Encrypt's test CA, on loopback: our agent against another CA.

:func:`running_pebble` starts the Debian ``pebble`` with a generated config
and its own TLS certificate (made here with ``cryptography``; the package
ships none), plus ``certmint-challtestsrv`` as its DNS server (every name is
127.0.0.1) and, if asked, as its http-01 and tls-alpn-01 responder::

    with running_pebble(tmp_path) as pebble:
        session = AcmeSession(pebble.directory_url, key, verify=str(pebble.tls_root_pem_path))

Pebble keeps its chaos by default: it refuses 5 % of good nonces
(``badNonce``) and sleeps before each validation. The sleep is shortened, not
removed (``va_sleep_seconds``), so tests stay quick and clients must still
poll. Everything listens on free high ports on 127.0.0.1; every wait is
bounded; both programs' logs are printed when the ``with`` body fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certmint.protocol.b64 import b64url_encode
from certmint.runtime import SystemClock
from certmint.testing.harness import (
    LOOPBACK,
    HarnessError,
    challtestsrv_command,
    free_port,
    program_path,
    start_process,
    stop_process,
)

STARTUP_TIMEOUT_SECONDS = 30.0
# Pebble sleeps a random whole number of seconds below this before each
# validation (its default is 5); 2 keeps a real wait (0 or 1 s) in the flow.
DEFAULT_VA_SLEEP_SECONDS = 2
_PROBE_INTERVAL_SECONDS = 0.1
_LOG_TAIL_CHARS = 20_000
# Pebble is a Go program: it needs no environment but its own settings.
_BASE_ENV = {"PATH": "/usr/bin:/bin"}

_CLOCK = SystemClock()


@dataclass(frozen=True)
class RunningPebble:
    """Where a running Pebble answers, and where its logs go."""

    directory_url: str
    # The root of Pebble's own HTTPS certificate (ACME and management ports),
    # not of the certificates it issues: those come from issuing_roots_pem().
    tls_root_pem_path: Path
    management_url: str
    http01_port: int
    tlsalpn01_port: int
    dns_port: int
    challtestsrv_management_url: str
    pebble_log_path: Path
    challtestsrv_log_path: Path


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    for _attempt in range(count * 20):
        port = free_port(udp_too=not ports)  # the first is the DNS port
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise HarnessError(f"could not find {count} distinct free ports")


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway root and a leaf for 127.0.0.1/localhost; returns
    (root, certificate, key) paths, the key written 0600."""
    now = _CLOCK.now()
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "certmint test Pebble TLS root")]
    )
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(root_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    root_path, cert_path, key_path = (directory / n for n in ("root.pem", "cert.pem", "key.pem"))
    root_path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    return root_path, cert_path, key_path


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return text if len(text) <= _LOG_TAIL_CHARS else "...\n" + text[-_LOG_TAIL_CHARS:]


def format_logs(pebble: RunningPebble) -> str:
    return (
        f"===== pebble log ({pebble.pebble_log_path}) =====\n{_tail(pebble.pebble_log_path)}\n"
        f"===== certmint-challtestsrv log ({pebble.challtestsrv_log_path}) =====\n"
        f"{_tail(pebble.challtestsrv_log_path)}\n"
    )


def _start_with_env(
    argv: list[str], log_path: Path, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        log.write(("$ " + " ".join(f"{k}={v}" for k, v in env.items()) + " ").encode())
        log.write((" ".join(argv) + "\n").encode())
        log.flush()
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )


def _pause_unless_exited(process: subprocess.Popen[bytes], what: str, log_path: Path) -> None:
    try:
        code = process.wait(timeout=_PROBE_INTERVAL_SECONDS)
    except subprocess.TimeoutExpired:
        return
    raise HarnessError(f"{what} exited with code {code} while starting:\n{_tail(log_path)}")


def _wait_for_tcp(
    process: subprocess.Popen[bytes], port: int, deadline: float, what: str, log_path: Path
) -> None:
    while True:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
            return
        if _CLOCK.monotonic() > deadline:
            raise HarnessError(f"{what} did not listen on {LOOPBACK}:{port} in time")
        _pause_unless_exited(process, what, log_path)


def _wait_for_directory(
    process: subprocess.Popen[bytes], url: str, root: Path, deadline: float, log_path: Path
) -> None:
    tls = ssl.create_default_context(cafile=str(root))
    last_error = "no answer"
    while True:
        try:
            response = httpx.get(url, timeout=2.0, verify=tls)
            if response.status_code == 200 and "newNonce" in response.json():
                return
            last_error = f"HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as error:
            last_error = repr(error)
        if _CLOCK.monotonic() > deadline:
            raise HarnessError(f"{url} did not answer in time: {last_error}")
        _pause_unless_exited(process, "pebble", log_path)


@contextlib.contextmanager
def running_pebble(
    work_dir: Path,
    *,
    nonce_reject_percent: int | None = None,
    va_sleep_seconds: int | None = DEFAULT_VA_SLEEP_SECONDS,
    va_nosleep: bool = False,
    alternate_roots: int = 0,
    authz_reuse_percent: int | None = None,
    eab_keys: Mapping[str, bytes] | None = None,
    challtestsrv_answers_challenges: bool = True,
    dns_server: str | None = None,
    http01_port: int | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> Iterator[RunningPebble]:
    """Start ``certmint-challtestsrv`` and ``pebble``; stop both on exit.

    ``nonce_reject_percent`` None keeps Pebble's default (5 %).
    ``va_sleep_seconds`` None keeps Pebble's default sleep; ``va_nosleep``
    removes it (``PEBBLE_VA_NOSLEEP=1``, for benchmarks). ``alternate_roots``
    makes Pebble offer that many extra chains (``Link: rel="alternate"``).
    ``eab_keys`` (key id → HMAC key) turns External Account Binding on and
    makes it required. Without ``challtestsrv_answers_challenges`` the
    http-01 and tls-alpn-01 ports are left for the client under test to bind.
    ``dns_server`` (``HOST:PORT``) replaces the challenge test server as
    Pebble's resolver (``-dnsserver``), e.g. a real authoritative server for
    dns-01; ``http01_port`` makes Pebble validate http-01 on a port someone
    else already serves (a real web server for webroot).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    pebble_log = work_dir / "pebble.log"
    cts_log = work_dir / "challtestsrv.log"
    dns_port, acme_port, mgmt_port, free_http01_port, tlsalpn01_port, cts_port = (
        _distinct_ports(6)
    )
    http01_port = free_http01_port if http01_port is None else http01_port
    tls_root, tls_cert, tls_key = write_tls_files(work_dir / "pebble-tls")

    config: dict[str, object] = {
        "listenAddress": f"{LOOPBACK}:{acme_port}",
        "managementListenAddress": f"{LOOPBACK}:{mgmt_port}",
        "certificate": str(tls_cert),
        "privateKey": str(tls_key),
        "httpPort": http01_port,
        "tlsPort": tlsalpn01_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": bool(eab_keys),
    }
    if eab_keys:
        config["externalAccountMACKeys"] = {
            kid: b64url_encode(key) for kid, key in eab_keys.items()
        }
    config_path = work_dir / "pebble-config.json"
    config_path.write_text(json.dumps({"pebble": config}, indent=2))

    env = dict(_BASE_ENV)
    if nonce_reject_percent is not None:
        env["PEBBLE_WFE_NONCEREJECT"] = str(nonce_reject_percent)
    if va_nosleep:
        env["PEBBLE_VA_NOSLEEP"] = "1"
    elif va_sleep_seconds is not None:
        env["PEBBLE_VA_SLEEPTIME"] = str(va_sleep_seconds)
    if alternate_roots:
        env["PEBBLE_ALTERNATE_ROOTS"] = str(alternate_roots)
    if authz_reuse_percent is not None:
        env["PEBBLE_AUTHZREUSE"] = str(authz_reuse_percent)

    challtestsrv_argv = challtestsrv_command(
        dns_port=dns_port,
        management_port=cts_port,
        http01_port=http01_port,
        tlsalpn01_port=tlsalpn01_port,
        answers_challenges=challtestsrv_answers_challenges,
    )
    pebble_argv = [
        program_path("pebble"),
        "-config", str(config_path),
        "-dnsserver", dns_server or f"{LOOPBACK}:{dns_port}",
    ]  # fmt: skip

    pebble = RunningPebble(
        directory_url=f"https://{LOOPBACK}:{acme_port}/dir",
        tls_root_pem_path=tls_root,
        management_url=f"https://{LOOPBACK}:{mgmt_port}",
        http01_port=http01_port,
        tlsalpn01_port=tlsalpn01_port,
        dns_port=dns_port,
        challtestsrv_management_url=f"http://{LOOPBACK}:{cts_port}",
        pebble_log_path=pebble_log,
        challtestsrv_log_path=cts_log,
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        deadline = _CLOCK.monotonic() + startup_timeout
        challtestsrv = start_process(challtestsrv_argv, cts_log)
        processes.append(challtestsrv)
        _wait_for_tcp(challtestsrv, cts_port, deadline, "certmint-challtestsrv", cts_log)
        process = _start_with_env(pebble_argv, pebble_log, env)
        processes.append(process)
        _wait_for_directory(process, pebble.directory_url, tls_root, deadline, pebble_log)
        yield pebble
    except BaseException:
        print(format_logs(pebble), flush=True)
        raise
    finally:
        for started in reversed(processes):
            stop_process(started)


def issuing_roots_pem(pebble: RunningPebble, count: int = 1) -> list[bytes]:
    """The roots Pebble issues under (``/roots/<n>`` on its management port),
    default root first, then one per alternate chain."""
    tls = ssl.create_default_context(cafile=str(pebble.tls_root_pem_path))
    roots: list[bytes] = []
    with httpx.Client(verify=tls, timeout=5.0) as http:
        for index in range(count):
            response = http.get(f"{pebble.management_url}/roots/{index}")
            response.raise_for_status()
            x509.load_pem_x509_certificate(response.content)  # hostile until parsed
            roots.append(response.content)
    return roots
