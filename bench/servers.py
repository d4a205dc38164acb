"""Processes for the issuance-flow benchmark: the challenge responder, Pebble
and certmint-ca on free loopback ports, each in its own session so it can be
stopped by its id, and the CPU they spend read from /proc (proc(5)).
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROCESS_START_TIMEOUT_SECONDS = 60.0
PROCESS_STOP_TIMEOUT_SECONDS = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port free for both TCP and UDP (the DNS responder needs both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise OSError("no free loopback port found")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces or parentheses: split after
    # the last ")"; what remains starts at field 3 (proc(5)).
    return raw[raw.rfind(")") + 2 :].split()


def process_tree_cpu_seconds(root: int) -> float:
    """utime+stime of ``root`` and every live descendant, plus the cutime and
    cstime of reaped children (proc(5) fields 14-17), so each CPU tick the
    server's tree spent is counted exactly once."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    ticks = 0
    stack: list[int] = [root]
    seen: set[int] = set()
    while stack and len(seen) < 10_000:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        fields = _stat_fields(pid)
        if fields is None:
            continue
        ticks += sum(int(value) for value in fields[11:15])
        stack.extend(children.get(pid, []))
    return ticks / CLOCK_TICKS


class ManagedProcess:
    """A child in its own session, output to a log file, stopped by its id."""

    def __init__(self, name: str, argv: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return "\n".join(f"[{self.name}] {line}" for line in tail)

    def wait_for_log(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if marker in text:
                return text
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise OSError(f"{self.name} did not print {marker!r} (exit code "
                      f"{self.process.poll()}):\n{self.log_tail()}")

    def wait_for_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.05)
        raise OSError(f"{self.name} is not listening on 127.0.0.1:{port} (exit code "
                      f"{self.process.poll()}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group we created, then SIGKILL; idempotent."""
        if self.process.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(PROCESS_STOP_TIMEOUT_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()


def _console_script(name: str) -> str:
    # Prefer the script installed next to this interpreter: a pyenv shim would
    # add a wrapper process and its start-up cost to the measured tree.
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise OSError(f"{name} not found on PATH")
    return found


def start_responder(kind: str, workdir: Path, ports: dict[str, int]) -> ManagedProcess:
    if kind == "auto":
        ours = importlib.util.find_spec("certmint.testing.challtestsrv") is not None
        kind = "certmint" if ours else "pebble"
    if kind == "certmint":
        argv = [_console_script("certmint-challtestsrv"),
                "--dns", f"127.0.0.1:{ports['dns']}",
                "--http01", f"127.0.0.1:{ports['http01']}",
                "--tlsalpn01", f"127.0.0.1:{ports['tlsalpn01']}",
                "--management", f"127.0.0.1:{ports['responder_mgmt']}",
                "--default-ipv4", "127.0.0.1"]
    else:
        # No AAAA answers (-defaultIPv6 ""): the http-01 responder listens on
        # 127.0.0.1 only, and a VA preferring IPv6 would find nobody there.
        argv = ["pebble-challtestsrv",
                "-dns01", f"127.0.0.1:{ports['dns']}",
                "-http01", f"127.0.0.1:{ports['http01']}",
                "-https01", "",
                "-tlsalpn01", f"127.0.0.1:{ports['tlsalpn01']}",
                "-management", f"127.0.0.1:{ports['responder_mgmt']}",
                "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]
    print(f"[bench] challenge responder: {argv[0]}", file=sys.stderr, flush=True)
    process = ManagedProcess(f"{kind}-challtestsrv", argv, workdir / "responder.log")
    try:
        process.wait_for_port(ports["responder_mgmt"], PROCESS_START_TIMEOUT_SECONDS)
        process.wait_for_port(ports["http01"], PROCESS_START_TIMEOUT_SECONDS)
    except OSError:
        process.stop()
        raise
    return process


def _write_pebble_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway root and a 127.0.0.1/localhost leaf for Pebble's WFE (the
    Debian package ships no test certificates)."""
    now = datetime.datetime.now(datetime.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench pebble TLS root")])
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(root_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    root_path, cert_path, key_path = (directory / n for n in ("root.pem", "cert.pem", "key.pem"))
    root_path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(leaf_key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return root_path, cert_path, key_path


def start_pebble(directory: Path, ports: dict[str, int]) -> tuple[ManagedProcess, str, str]:
    root_path, cert_path, key_path = _write_pebble_tls(directory)
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{ports['pebble']}",
        "managementListenAddress": f"127.0.0.1:{ports['pebble_mgmt']}",
        "certificate": str(cert_path), "privateKey": str(key_path),
        "httpPort": ports["http01"], "tlsPort": ports["tlsalpn01"],
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}
    config_path = directory / "pebble-config.json"
    config_path.write_text(json.dumps(config, indent=2))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    process = ManagedProcess(
        "pebble",
        ["pebble", "-config", str(config_path), "-dnsserver", f"127.0.0.1:{ports['dns']}"],
        directory / "pebble.log", env=env,
    )
    try:
        process.wait_for_port(ports["pebble"], PROCESS_START_TIMEOUT_SECONDS)
    except OSError:
        process.stop()
        raise
    return process, f"https://127.0.0.1:{ports['pebble']}/dir", str(root_path)


def start_certmint(
    directory: Path, ports: dict[str, int], extra_args: Sequence[str] = ()
) -> tuple[ManagedProcess, str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    argv = [_console_script("certmint-ca"), "serve",
            "--data-dir", str(directory / "data"),
            "--listen", f"127.0.0.1:{ports['certmint']}",
            "--management-listen", f"127.0.0.1:{ports['certmint_mgmt']}",
            "--dns-resolver", f"127.0.0.1:{ports['dns']}",
            "--http01-port", str(ports["http01"]),
            "--tlsalpn01-port", str(ports["tlsalpn01"]),
            "--allow-private-addresses",
            # The flows' names live under .test (RFC 2606), which the Public
            # Suffix List does not list: a playground setting, as --dev has.
            "--allow-unlisted-tlds", *extra_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = ManagedProcess("certmint-ca", argv, directory / "certmint-ca.log", env=env)
    try:
        text = process.wait_for_log("certmint-ca: ready", PROCESS_START_TIMEOUT_SECONDS)
    except OSError:
        process.stop()
        raise
    directory_match = re.search(r"certmint-ca: ACME directory (\S+)", text)
    root_match = re.search(r"certmint-ca: root certificate (\S+)", text)
    if not directory_match or not root_match:
        process.stop()
        raise OSError(f"certmint-ca start-up lines not understood:\n{process.log_tail()}")
    return process, directory_match.group(1), root_match.group(1)


def machine_busy_seconds() -> float:
    """CPU time every process on the machine spent (proc(5) /proc/stat "cpu"
    line: user nice system idle iowait irq softirq steal ...)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class ServerProfiler:
    """py-spy sampling a Python server over the measured window.

    ``--nonblocking`` reads the target's memory without pausing it, so the
    profile does not slow the server it measures. Results are raw collapsed
    stacks ("frame;frame;... count"), summarised by ``summarise_profile``.
    """

    def __init__(self, pid: int, output: Path, seconds: float, rate: int = 100) -> None:
        self.output = output
        exe = shutil.which("py-spy")
        if exe is None:
            raise OSError("py-spy not found (pip install py-spy)")
        self._log = output.with_suffix(".log").open("wb")
        self.process = subprocess.Popen(
            [exe, "record", "--nonblocking", "--subprocesses", "--format", "raw",
             "--rate", str(rate),
             "--duration", str(max(1, round(seconds))), "--pid", str(pid), "--output",
             str(output)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def finish(self, timeout: float = 30.0) -> str:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5.0)
        self._log.close()
        return summarise_profile(self.output) if self.output.exists() else "no profile written"


def summarise_profile(path: Path, top: int = 15) -> str:
    """Share of samples per function: self (leaf) and inclusive (anywhere on
    the stack), with file paths shortened to the package."""
    self_count: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        self_count[frames[-1]] = self_count.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "profile is empty"

    def rows(counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"  {count / total:6.1%}  {frame}" for frame, count in ranked]

    wanted = {k: v for k, v in inclusive.items() if "certmint/" in k}
    return "\n".join([f"py-spy: {total} samples ({path})", "self time:", *rows(self_count),
                      "inclusive, certmint functions:", *rows(wanted)])
