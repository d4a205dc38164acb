"""Network namespaces for tests: a private network stack per process group.

Multi-perspective validation (CA/B Forum BR §3.2.2.9) is only worth testing
when the perspectives really see different networks: their own resolver, their
own loopback, their own routes. A Linux network namespace gives exactly that.
:func:`network_namespace` creates one, joined to the host by a veth pair on a
private /30, and runs programs inside it::

    with network_namespace("cm", 1) as ns:
        ns.popen(["certmint-ca", "va-perspective", "--listen", f"{ns.ns_address}:8000", ...])
        httpx.get(f"http://{ns.ns_address}:8000/...")  # the host reaches the namespace

From inside, ``ns.host_address`` is the host (servers the host binds there or on
0.0.0.0 are reachable), and 127.0.0.1 is the namespace's own loopback, not the
host's — so a DNS server the host runs on ``host_address`` is that namespace's
view of the world, and nothing on the host's loopback leaks in.

Names carry the creating process's id (``cm-<pid>-<index>``, host interface
``cmh<pid>x<index>``), so concurrent test runs do not collide and a later run
can tell a crashed run's leftovers (their pid is dead) from a live run's
(:func:`sweep_stale_namespaces`, run on every entry). Addresses come from
10.213.0.0/16 (RFC 1918 private space that test hosts rarely route), the /30
``10.213.<index>.0`` when free, otherwise the next free /30; the choice is made
under a file lock and checked against every IPv4 address and route on the host.

Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN). Without it
:class:`NetnsUnavailable` says so; :func:`netns_unavailable_reason` probes once
so a test fixture can fail or skip with that reason.

Every ``ip`` call has a deadline; cleanup always runs and never raises.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# 10.213.0.0/16: private (RFC 1918) and far from the 10.0/10.1/10.10 ranges that
# container runtimes and VPNs tend to pick.
ADDRESS_POOL = ipaddress.IPv4Network("10.213.0.0/16")
_PREFIX_LENGTH = 30
_IP_TIMEOUT_SECONDS = 10.0
_STOP_GRACE_SECONDS = 5.0
_MAX_INDEX = 255  # the index is the third octet of the preferred /30
_MAX_PREFIX_CHARS = 3  # keeps "<prefix>h<pid>x<index>" within IFNAMSIZ - 1 = 15
# Inside the namespace the peer end has a fixed name: it lives in its own
# namespace, so it cannot clash with anything.
NS_INTERFACE = "veth0"
_LOCK_PATHS = (Path("/run/lock/certmint-netns.lock"), Path("/tmp/certmint-netns.lock"))  # noqa: S108 - fallback when /run/lock is absent
_ROUTE_KEYWORDS = frozenset(
    {"local", "broadcast", "unicast", "multicast", "anycast", "unreachable", "blackhole",
     "prohibit", "throw", "nat"}
)  # fmt: skip


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no ``ip``, ...)."""


class NetnsError(RuntimeError):
    """An ``ip`` command failed while setting a namespace up."""


# --------------------------------------------------------------------------- ip


def _ip_program() -> str:
    found = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise NetnsUnavailable("the `ip` program (iproute2) is not installed")
    return found


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [_ip_program(), *args]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=_IP_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise NetnsError(
            f"`{' '.join(argv)}` did not finish in {_IP_TIMEOUT_SECONDS:.0f} s"
        ) from error
    if check and result.returncode != 0:
        raise NetnsError(
            f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def _ip_json(*args: str) -> list[dict[str, Any]]:
    text = _ip("-j", *args).stdout.strip()
    data = json.loads(text) if text else []
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []


def _namespace_names() -> list[str]:
    # `ip netns list` prints "name" or "name (id: N)".
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _pids_in(name: str) -> list[int]:
    result = _ip("netns", "pids", name, check=False)
    return [int(token) for token in result.stdout.split() if token.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; it belongs to someone else
    return True


# --------------------------------------------------------------------------- addresses


def _used_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to."""
    used: list[ipaddress.IPv4Network] = []
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            with contextlib.suppress(KeyError, ValueError, TypeError):
                used.append(
                    ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
                )
    for line in _ip("-4", "-o", "route", "show", "table", "all").stdout.splitlines():
        tokens = line.split()
        if tokens and tokens[0] in _ROUTE_KEYWORDS:
            tokens = tokens[1:]
        if not tokens or tokens[0] == "default":
            continue
        with contextlib.suppress(ValueError):
            used.append(ipaddress.IPv4Network(tokens[0], strict=False))
    return used


def _choose_subnet(index: int) -> ipaddress.IPv4Network:
    """The /30 ``10.213.<index>.0`` if nothing on the host overlaps it, else the
    next free /30 of the pool (wrapping round)."""
    used = _used_ipv4_networks()
    subnets = list(ADDRESS_POOL.subnets(new_prefix=_PREFIX_LENGTH))
    start = index * (256 // 4)
    for offset in range(len(subnets)):
        candidate = subnets[(start + offset) % len(subnets)]
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise NetnsError(f"no free /{_PREFIX_LENGTH} left in {ADDRESS_POOL}")


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    """Serialise choose-then-assign across processes, so two runs starting at
    once do not pick the same /30."""
    for path in _LOCK_PATHS:
        try:
            handle = path.open("a")
        except OSError:
            continue
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    yield  # no writable lock path: the overlap check alone still guards most races


# --------------------------------------------------------------------------- processes


def _stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the process's group, SIGKILL after a grace period; reap it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_GRACE_SECONDS)


def _kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- namespace


@dataclass
class NetworkNamespace:
    """A live namespace: where it is, and the processes started inside it."""

    name: str
    host_interface: str
    host_address: str
    ns_address: str
    prefix_length: int = _PREFIX_LENGTH
    processes: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec <name> ...``)."""
        return [_ip_program(), "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace; it is stopped when the namespace
        closes. It gets a session of its own (``start_new_session``) unless the
        caller says otherwise, so stopping it stops what it started."""
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process: subprocess.Popen[Any] = subprocess.Popen(self.command(argv), **kwargs)
        self.processes.append(process)
        return process

    def run(
        self, argv: Sequence[str], *, timeout: float, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside the namespace to completion, within ``timeout`` seconds."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.command(argv), timeout=timeout, check=False, **kwargs)

    def close(self) -> None:
        """Stop every process, then remove the veth pair and the namespace.
        Idempotent and never raises: it runs on every exit path."""
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                _stop_process(process)
        # Deleting one end of a veth pair deletes both, at once; deleting only
        # the namespace would leave the host end until the kernel's deferred
        # namespace cleanup runs, holding on to the /30.
        with contextlib.suppress(Exception):
            _ip("link", "del", self.host_interface, check=False)
        with contextlib.suppress(Exception):
            # Anything that escaped its process group still pins the namespace.
            _kill_pids(_pids_in(self.name))
        with contextlib.suppress(Exception):
            _ip("netns", "del", self.name, check=False)


def _add_namespace(name: str) -> None:
    """``ip netns add``; a refusal for want of privilege is NetnsUnavailable."""
    try:
        _ip("netns", "add", name)
    except NetnsError as error:
        text = str(error)
        if "File exists" in text:
            raise NetnsError(f"network namespace {name!r} already exists: {text}") from error
        raise NetnsUnavailable(
            f"cannot create network namespace {name!r} (needs root: CAP_SYS_ADMIN and "
            f"CAP_NET_ADMIN): {text}"
        ) from error


def _validate(name_prefix: str, index: int) -> None:
    if not re.fullmatch(rf"[a-z]{{1,{_MAX_PREFIX_CHARS}}}", name_prefix):
        raise ValueError(f"name_prefix must be 1-{_MAX_PREFIX_CHARS} lowercase letters")
    if not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"index must be 0-{_MAX_INDEX}")


def _create(name_prefix: str, index: int) -> NetworkNamespace:
    pid = os.getpid()
    name = f"{name_prefix}-{pid}-{index}"
    host_interface = f"{name_prefix}h{pid}x{index}"
    _add_namespace(name)
    namespace = NetworkNamespace(name, host_interface, host_address="", ns_address="")
    try:
        # The peer end is created directly inside the namespace, so a crash
        # never leaves it behind on the host.
        _ip("link", "add", host_interface, "type", "veth",
            "peer", "name", NS_INTERFACE, "netns", name)  # fmt: skip
        with _allocation_lock():
            subnet = _choose_subnet(index)
            host_ip, ns_ip = (str(address) for address in list(subnet.hosts())[:2])
            _ip("addr", "add", f"{host_ip}/{_PREFIX_LENGTH}", "dev", host_interface)
        namespace.host_address, namespace.ns_address = host_ip, ns_ip
        _ip("link", "set", host_interface, "up")
        inside = ("netns", "exec", name, _ip_program())
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "addr", "add", f"{ns_ip}/{_PREFIX_LENGTH}", "dev", NS_INTERFACE)
        _ip(*inside, "link", "set", NS_INTERFACE, "up")
    except BaseException:
        namespace.close()
        raise
    return namespace


@contextlib.contextmanager
def network_namespace(name_prefix: str = "cm", index: int = 1) -> Iterator[NetworkNamespace]:
    """A fresh namespace ``<prefix>-<pid>-<index>`` joined to the host by a veth
    pair; removed, with every process started through it, on exit."""
    _validate(name_prefix, index)
    sweep_stale_namespaces(name_prefix)
    namespace = _create(name_prefix, index)
    try:
        yield namespace
    finally:
        namespace.close()


def sweep_stale_namespaces(name_prefix: str = "cm") -> list[str]:
    """Delete namespaces (and host veth ends) named for ``name_prefix`` whose
    creating process is dead: the leftovers of a crashed run. Returns their names."""
    _validate(name_prefix, 0)
    swept: list[str] = []
    namespace_pattern = re.compile(rf"{name_prefix}-(\d+)-\w+")
    for name in _namespace_names():
        match = namespace_pattern.fullmatch(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        _kill_pids(_pids_in(name))
        _ip("netns", "del", name, check=False)
        swept.append(name)
    interface_pattern = re.compile(rf"{name_prefix}h(\d+)x\d+")
    with contextlib.suppress(NetnsError, ValueError):
        for link in _ip_json("link", "show"):
            interface = str(link.get("ifname", ""))
            match = interface_pattern.fullmatch(interface)
            if match is not None and not _pid_alive(int(match.group(1))):
                _ip("link", "del", interface, check=False)
    return swept


def netns_unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can.

    Probes by creating (and removing) a throwaway namespace, the one thing
    that proves the privilege.
    """
    name = f"cm-{os.getpid()}-probe"
    try:
        _ip("netns", "del", name, check=False)  # a probe this process left behind
        _add_namespace(name)
    except (NetnsUnavailable, NetnsError) as error:
        return str(error)
    _ip("netns", "del", name, check=False)
    return None
