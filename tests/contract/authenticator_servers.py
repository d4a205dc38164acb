"""Real servers from Debian for the authenticator suite, started on 127.0.0.1 high ports.

- nginx serves a webroot, the way a user's web server would (webroot, manual).
- Knot DNS is the authoritative server for ``example.com`` and accepts RFC 2136
  updates signed with a TSIG key (dns-rfc2136).

Each is started by a session fixture with a bounded wait for readiness, and
stopped (terminate, then kill) at the end. A start that fails shows the log.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

START_DEADLINE = 10.0
STOP_DEADLINE = 5.0
ZONE = "example.com"
TSIG_KEY_NAME = "certmint-test-key."
TSIG_ALGORITHM = "HMAC-SHA256"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody listens on right now (TCP and UDP both free for DNS)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, other) as check:
            try:
                check.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_DEADLINE)


@dataclass
class Nginx:
    port: int
    webroot: Path
    log: Path

    def log_tail(self) -> str:
        return f"--- nginx error log ---\n{_tail(self.log)}"


def _nginx_binary() -> str:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else ""
    )
    if not binary:
        pytest.fail("nginx is not installed: apt-get install nginx-light (scripts/test does)")
    return binary


@contextlib.contextmanager
def run_nginx(base: Path) -> Iterator[Nginx]:
    binary = _nginx_binary()
    webroot = base / "webroot"
    webroot.mkdir(mode=0o755)
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (base / temp).mkdir()
    port = free_port()
    log = base / "error.log"
    # As root, workers would drop to "nobody", who cannot enter pytest's 0700
    # temporary directories; keep them as root for the test.
    user = "user root root;" if os.geteuid() == 0 else ""
    config = base / "nginx.conf"
    config.write_text(
        f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {base}/nginx.pid;
error_log {log} info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        server_name _;
        root {webroot};
        location / {{ try_files $uri =404; }}
    }}
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-p", str(base), "-e", str(log), "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_tcp(port, process, lambda: _tail(log))
        yield Nginx(port=port, webroot=webroot, log=log)
    finally:
        _stop(process)


def _wait_for_tcp(port: int, process: subprocess.Popen[bytes], log: Callable[[], str]) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode} while starting:\n{log()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    pytest.fail(f"server not listening on 127.0.0.1:{port} after {START_DEADLINE} s:\n{log()}")


@dataclass
class Knot:
    port: int
    key_name: str
    secret: str
    algorithm: str
    log: Path

    def log_tail(self) -> str:
        return f"--- knotd log ---\n{_tail(self.log)}"

    def txt_values(self, name: str) -> set[str]:
        """What the authoritative server answers for TXT ``name`` right now."""
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        response = dns.query.udp(query, "127.0.0.1", timeout=2.0, port=self.port)
        return {
            b"".join(rdata.strings).decode()
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        }

    def credentials(self, path: Path, *, secret: str | None = None) -> Path:
        """certbot's dns-rfc2136 credentials file for this server, 0600."""
        path.write_text(
            "# certbot dns-rfc2136 credentials\n"
            "dns_rfc2136_server = 127.0.0.1\n"
            f"dns_rfc2136_port = {self.port}\n"
            f"dns_rfc2136_name = {self.key_name}\n"
            f"dns_rfc2136_secret = {secret or self.secret}\n"
            f"dns_rfc2136_algorithm = {self.algorithm}\n"
        )
        path.chmod(0o600)
        return path


def _knotd_binary() -> str:
    binary = shutil.which("knotd") or (
        "/usr/sbin/knotd" if Path("/usr/sbin/knotd").exists() else ""
    )
    if not binary:
        pytest.fail("Knot DNS is not installed: apt-get install knot (scripts/test does)")
    return binary


@contextlib.contextmanager
def run_knot(base: Path) -> Iterator[Knot]:
    binary = _knotd_binary()
    port = free_port(socket.SOCK_DGRAM)
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    log = base / "knotd.log"
    (base / "db").mkdir()
    (base / f"{ZONE}.zone").write_text(
        f"$ORIGIN {ZONE}.\n"
        "$TTL 300\n"
        f"@ SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n"
        f"@ NS ns1.{ZONE}.\n"
        "ns1 A 127.0.0.1\n"
        "www A 127.0.0.1\n"
    )
    # The CA under test uses this server as its resolver, and its CAA check
    # climbs to the TLD (RFC 8659 §3): serve an empty parent zone so that
    # "com" answers NOERROR, as a recursive resolver would, not REFUSED.
    parent = ZONE.split(".", 1)[1]
    (base / f"{parent}.zone").write_text(
        f"$ORIGIN {parent}.\n"
        "$TTL 300\n"
        f"@ SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n"
        f"@ NS ns1.{ZONE}.\n"
    )
    config = base / "knot.conf"
    config.write_text(
        f"""
server:
    rundir: "{base}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

log:
  - target: "{log}"
    any: debug

database:
    storage: "{base}/db"

key:
  - id: {TSIG_KEY_NAME}
    algorithm: {TSIG_ALGORITHM.lower()}
    secret: {secret}

acl:
  - id: acme_update
    key: {TSIG_KEY_NAME}
    action: update

template:
  - id: default
    storage: "{base}"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none

zone:
  - domain: {ZONE}
    acl: acme_update
  - domain: {parent}
"""
    )
    process = subprocess.Popen(
        [binary, "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_zone(port, process, log)
        yield Knot(
            port=port, key_name=TSIG_KEY_NAME, secret=secret, algorithm=TSIG_ALGORITHM, log=log
        )
    finally:
        _stop(process)


def _wait_for_zone(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until knotd answers the zone's SOA authoritatively (bounded)."""
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"knotd exited with {process.returncode} while starting:\n{_tail(log)}")
        query = dns.message.make_query(ZONE, dns.rdatatype.SOA)
        with contextlib.suppress(OSError, dns.exception.DNSException):
            response = dns.query.udp(query, "127.0.0.1", timeout=0.2, port=port)
            if response.answer:
                return
        time.sleep(0.02)
    pytest.fail(f"knotd did not serve {ZONE} within {START_DEADLINE} s:\n{_tail(log)}")


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with run_nginx(tmp_path_factory.mktemp("nginx")) as server:
        yield server


@pytest.fixture(scope="session")
def knot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    with run_knot(tmp_path_factory.mktemp("knot")) as server:
        yield server
