"""Knot DNS (Debian's ``knot``) as an authoritative server for test zones.

:func:`running_knot` serves zone files as they are — DNSSEC records
included, signing off — on 127.0.0.1 at a free high port, and stops the
server on exit. It follows the RFC 2136 fixture in
tests/contract/authenticator_servers.py, minus dynamic updates, plus two
settings for pre-signed (and deliberately broken) zones:

- ``dnssec-signing: off``: Knot must serve the RRSIGs ldns made, not sign;
- ``semantic-checks: off``: only the mandatory checks run at load time, so
  a zone whose signatures were tampered with is served, not refused.

Readiness is the SOA of every zone answered authoritatively (bounded wait);
if the server exits or never gets there, the error carries its log.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype

from certmint.runtime import SystemClock
from certmint.testing.harness import (
    LOOPBACK,
    HarnessError,
    free_port,
    start_process,
    stop_process,
)

START_TIMEOUT_SECONDS = 15.0
_PROBE_TIMEOUT_SECONDS = 0.2
_PROBE_PAUSE_SECONDS = 0.05
_LOG_TAIL_CHARS = 8_000
_CLOCK = SystemClock()


@dataclass(frozen=True)
class RunningKnot:
    port: int
    log_path: Path

    @property
    def stub_address(self) -> str:
        """Where it listens, as Unbound's ``stub-addr`` writes it."""
        return f"{LOOPBACK}@{self.port}"

    @property
    def resolver_address(self) -> str:
        """Where it listens, as ``VAConfig.resolvers`` writes it."""
        return f"{LOOPBACK}:{self.port}"

    def log_tail(self) -> str:
        return tail(self.log_path)


def tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return text if len(text) <= _LOG_TAIL_CHARS else "...\n" + text[-_LOG_TAIL_CHARS:]


def knotd_binary() -> str:
    found = shutil.which("knotd") or shutil.which("knotd", path="/usr/sbin:/usr/bin")
    if found is None:
        raise HarnessError("Knot DNS is not installed: apt-get install knot")
    return found


def knot_config(base: Path, port: int, zones: Mapping[str, Path]) -> str:
    entries = "".join(
        f'  - domain: "{origin}"\n    file: "{path}"\n' for origin, path in zones.items()
    )
    return f"""
server:
    rundir: "{base}"
    listen: {LOOPBACK}@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

log:
  - target: "{base / "knotd.log"}"
    any: info

database:
    storage: "{base / "db"}"

template:
  - id: default
    storage: "{base}"
    dnssec-signing: off
    semantic-checks: off
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none

zone:
{entries}"""


def _serves(port: int, origin: str) -> bool:
    query = dns.message.make_query(origin, dns.rdatatype.SOA)
    with contextlib.suppress(OSError, dns.exception.DNSException):
        response = dns.query.udp(query, LOOPBACK, timeout=_PROBE_TIMEOUT_SECONDS, port=port)
        return bool(response.flags & dns.flags.AA) and bool(response.answer)
    return False


@contextlib.contextmanager
def running_knot(work_dir: Path, zones: Mapping[str, Path]) -> Iterator[RunningKnot]:
    """Serve ``zones`` (absolute origin → zone file) until the block ends."""
    base = work_dir.resolve()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    (base / "db").mkdir(exist_ok=True)
    port = free_port(udp_too=True)
    config = base / "knot.conf"
    config.write_text(knot_config(base, port, zones))
    log_path = base / "knotd.log"
    process = start_process([knotd_binary(), "-c", str(config)], base / "knotd.out")
    try:
        deadline = _CLOCK.monotonic() + START_TIMEOUT_SECONDS
        pending = list(zones)
        while pending:
            if process.poll() is not None:
                raise HarnessError(
                    f"knotd exited with {process.returncode} while starting:\n"
                    f"{tail(base / 'knotd.out')}\n{tail(log_path)}"
                )
            if _CLOCK.monotonic() > deadline:
                raise HarnessError(
                    f"knotd did not serve {', '.join(pending)} within "
                    f"{START_TIMEOUT_SECONDS} s:\n{tail(log_path)}"
                )
            pending = [origin for origin in pending if not _serves(port, origin)]
            if pending:  # a pause that ends at once if the server exits
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=_PROBE_PAUSE_SECONDS)
        yield RunningKnot(port=port, log_path=log_path)
    finally:
        stop_process(process)
