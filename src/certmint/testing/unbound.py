"""Unbound (Debian's ``unbound``) as a validating resolver that never leaves loopback.

:func:`running_unbound` starts ``unbound -d`` with a generated configuration
on 127.0.0.1 at a free high port (UDP and TCP), waits until it answers, and
yields its address as ``VAConfig.resolvers`` writes it (``"127.0.0.1:port"``)::

    with running_knot(tmp / "knot", zones) as knot, running_unbound(
        tmp / "unbound", stubs={"example.": knot.stub_address}, trust_anchors=anchors
    ) as resolver:
        VAConfig(resolvers=(resolver,), ...)

It validates (``module-config: "validator iterator"``) with the given trust
anchors only: no root anchor, no root hints in use. How it is kept off the
Internet, each measure sufficient on its own for client queries:

- ``local-zone: "." refuse`` answers REFUSED, from local data, for every name
  outside the stub zones; each stub zone gets ``local-zone: <zone>
  transparent``, the more specific local zone, so its names are resolved
  (unbound.conf(5): the most specific local zone decides). The names the
  resolver looks up itself (DS, DNSKEY of the stub zones) lie in stub zones;
  nothing it asks is below the root's hints, so it never primes the root;
- ``outgoing-interface: 127.0.0.1``: it can only send from loopback, which
  the kernel routes nowhere else.

``ede: yes`` adds RFC 8914 Extended DNS Errors (e.g. 6, "DNSSEC Bogus") to
answers for queries that carry EDNS, and ``val-log-level: 2`` logs why each
validation failed: both show up in the log this module prints when the
``with`` body fails or Unbound does not start.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from certmint.runtime import SystemClock
from certmint.testing.harness import (
    LOOPBACK,
    HarnessError,
    free_port,
    start_process,
    stop_process,
)
from certmint.testing.knot import tail

START_TIMEOUT_SECONDS = 15.0
_PROBE_TIMEOUT_SECONDS = 0.2
_PROBE_PAUSE_SECONDS = 0.05
_CLOCK = SystemClock()


def unbound_binary() -> str:
    found = shutil.which("unbound") or shutil.which("unbound", path="/usr/sbin:/usr/bin")
    if found is None:
        raise HarnessError("Unbound is not installed: apt-get install unbound")
    return found


def _quote(text: str) -> str:
    if '"' in text or "\n" in text:
        raise ValueError(f"{text!r} cannot be quoted in unbound.conf")
    return f'"{text}"'


def unbound_config(
    base: Path, port: int, stubs: Mapping[str, str], trust_anchors: Sequence[str]
) -> str:
    anchors = "".join(f"    trust-anchor: {_quote(anchor)}\n" for anchor in trust_anchors)
    transparent = "".join(f"    local-zone: {_quote(zone)} transparent\n" for zone in stubs)
    stub_zones = "".join(
        f"stub-zone:\n    name: {_quote(zone)}\n    stub-addr: {address}\n"
        for zone, address in stubs.items()
    )
    return f"""server:
    verbosity: 1
    interface: {LOOPBACK}
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    outgoing-interface: {LOOPBACK}
    access-control: 127.0.0.0/8 allow
    num-threads: 1
    so-reuseport: no
    chroot: ""
    username: ""
    directory: {_quote(str(base))}
    pidfile: {_quote(str(base / "unbound.pid"))}
    use-syslog: no
    logfile: ""
    log-time-ascii: yes
    # Test servers listen on 127.0.0.1 (unbound.conf(5): by default it
    # will not send queries to localhost).
    do-not-query-localhost: no
    module-config: "validator iterator"
    val-log-level: 2
    ede: yes
{anchors}    local-zone: "." refuse
{transparent}
remote-control:
    control-enable: no

{stub_zones}"""


def _answers(port: int) -> bool:
    """Whether it answers at all: "." is refused from local data, at once."""
    query = dns.message.make_query(".", dns.rdatatype.SOA)
    with contextlib.suppress(OSError, dns.exception.DNSException):
        response = dns.query.udp(query, LOOPBACK, timeout=_PROBE_TIMEOUT_SECONDS, port=port)
        return response.rcode() == dns.rcode.REFUSED
    return False


@contextlib.contextmanager
def running_unbound(
    work_dir: Path, *, stubs: Mapping[str, str], trust_anchors: Sequence[str]
) -> Iterator[str]:
    """A validating Unbound for ``stubs`` (zone → ``"127.0.0.1@port"`` of its
    authoritative server) trusting ``trust_anchors`` (DS or DNSKEY RR text)."""
    base = work_dir.resolve()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    port = free_port(udp_too=True)
    config = base / "unbound.conf"
    config.write_text(unbound_config(base, port, stubs, trust_anchors))
    log_path = base / "unbound.log"
    process = start_process([unbound_binary(), "-d", "-c", str(config)], log_path)
    try:
        deadline = _CLOCK.monotonic() + START_TIMEOUT_SECONDS
        while not _answers(port):
            if process.poll() is not None:
                raise HarnessError(
                    f"unbound exited with {process.returncode} while starting:\n{tail(log_path)}"
                )
            if _CLOCK.monotonic() > deadline:
                raise HarnessError(
                    f"unbound did not answer on {LOOPBACK}:{port} within "
                    f"{START_TIMEOUT_SECONDS} s:\n{tail(log_path)}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_PROBE_PAUSE_SECONDS)
        try:
            yield f"{LOOPBACK}:{port}"
        except BaseException:
            print(f"===== unbound log ({log_path}) =====\n{tail(log_path)}", file=sys.stderr)
            raise
    finally:
        stop_process(process)
