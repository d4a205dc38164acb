#!/usr/bin/env python3
"""Time to first certificate: certmint, certbot and lego (and uacme) against one Pebble.

    python3 bench/time_to_first_cert.py [--runs 5] [--warmup 1]
        [--clients certmint,certbot,lego,uacme] [--timeout 120]
        [--import-profile N] [--keep-logs]

One run is one whole client process, from subprocess start to exit, timed
with ``time.perf_counter``: a new account in a fresh state directory, one
fresh random name, http-01 answered by the client's own standalone server
(RFC 8555 §8.3), finalize, download. The exit code is checked and so is the
certificate file the client must have written. Every client gets the same
Pebble, started once with ``PEBBLE_VA_NOSLEEP=1`` and otherwise Pebble's
defaults (including its 5 % badNonce rejection, unless
``PEBBLE_WFE_NONCEREJECT`` is set in this script's environment). Each client
first makes ``--warmup`` unmeasured runs (to load the page cache and the
bytecode caches fairly), then ``--runs`` measured ones; the client order
rotates every round so drifting machine load is spread over all of them.
Clients never run at the same time.

Prints median, min and max seconds per client, its CPU seconds (user+system
of the client's process tree, from getrusage(RUSAGE_CHILDREN)), its ratio to
certmint, and how busy the machine was with other work. See bench/README.md.
A figure-printing script, not a test (DESIGN.md §5).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import (
    PROCESS_START_TIMEOUT_SECONDS,
    ManagedProcess,
    machine_busy_seconds,
    process_tree_cpu_seconds,
)

from certmint.testing.harness import HarnessError, program_path
from certmint.testing.pebble import RunningPebble, running_pebble

CLIENT_NAMES = ("certmint", "certbot", "lego", "uacme")
TARGET_CERTMINT_MEDIAN_SECONDS = 0.6  # issue 3, acceptance 3
KILL_WAIT_SECONDS = 5.0
LOG_TAIL_LINES = 15
REPO_ROOT = Path(__file__).resolve().parent.parent
# uacme (libcurl-gnutls) trusts only the system bundle and has no option for
# another one; it sees Pebble's TLS root there through a private mount namespace.
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class RunPlan:
    """What one client run executes, and the file it must leave behind."""

    argv: list[str]
    env: dict[str, str]
    certificate: Path


@dataclass(frozen=True)
class RunResult:
    client: str
    measured: bool
    seconds: float
    cpu_seconds: float
    exit_code: int | None  # None: killed at the timeout
    error: str  # "" when the run issued a certificate
    log_path: Path


class Client:
    """One ACME client under test; subclasses say how to run it."""

    name = ""

    def unavailable(self) -> str | None:
        """Why this client cannot run here, or None."""
        return None

    def version(self) -> str:
        return "?"

    def plan(self, pebble: RunningPebble, state: Path, identifier: str) -> RunPlan:
        raise NotImplementedError

    @contextlib.contextmanager
    def serving(self, pebble: RunningPebble, state: Path) -> Iterator[None]:
        """Anything the client needs running around (not inside) its timed run."""
        yield


def _debian_version(package: str) -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "?"


class CertbotLikeClient(Client):
    """certmint and certbot take the same flags (certmint speaks certbot's CLI)."""

    program = ""
    extra_args: tuple[str, ...] = ()

    def unavailable(self) -> str | None:
        try:
            program_path(self.program)
        except HarnessError:
            return "not installed"
        return None

    def plan(self, pebble: RunningPebble, state: Path, identifier: str) -> RunPlan:
        argv = [
            program_path(self.program), "certonly", "--standalone", "-d", identifier,
            "--server", pebble.directory_url,
            "--http-01-port", str(pebble.http01_port), *self.extra_args,
            "--agree-tos", "--register-unsafely-without-email", "-n",
            "--config-dir", str(state / "config"), "--work-dir", str(state / "work"),
            "--logs-dir", str(state / "logs"),
        ]  # fmt: skip
        env = dict(os.environ, REQUESTS_CA_BUNDLE=str(pebble.tls_root_pem_path))
        return RunPlan(argv, env, state / "config" / "live" / identifier / "fullchain.pem")


class CertmintClient(CertbotLikeClient):
    name = program = "certmint"

    def version(self) -> str:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=False).stdout.strip()
        return f"{importlib.metadata.version('certmint')} (commit {rev or '?'})"


class CertbotClient(CertbotLikeClient):
    name = program = "certbot"
    # certbot's standalone server binds every address by default; Pebble
    # resolves every name to 127.0.0.1, so bind there like the others.
    extra_args = ("--http-01-address", "127.0.0.1")

    def version(self) -> str:
        return f"{importlib.metadata.version('certbot')} (PyPI)"


class LegoClient(Client):
    name = "lego"

    def unavailable(self) -> str | None:
        return None if shutil.which("lego") else "not installed"

    def version(self) -> str:
        return f"{_debian_version('lego')} (Debian)"

    def plan(self, pebble: RunningPebble, state: Path, identifier: str) -> RunPlan:
        argv = [
            shutil.which("lego") or "lego", "--server", pebble.directory_url, "--accept-tos",
            "--email", "x@example.com", "--domains", identifier,
            "--http", "--http.port", f"127.0.0.1:{pebble.http01_port}",
            "--path", str(state), "run",
        ]  # fmt: skip
        env = dict(os.environ, LEGO_CA_CERTIFICATES=str(pebble.tls_root_pem_path))
        return RunPlan(argv, env, state / "certificates" / f"{identifier}.crt")


# uacme has no standalone server: it calls a hook per challenge (uacme(1),
# "-h"). This one declines every type but http-01 (exit 1 makes uacme try the
# next challenge) and writes the key authorization into a webroot.
_UACME_HOOK = """#!/bin/sh
[ "$2" = http-01 ] || exit 1
case "$1" in
    begin) printf '%s' "$5" > "$UACME_WEBROOT/.well-known/acme-challenge/$4" ;;
    *) rm -f "$UACME_WEBROOT/.well-known/acme-challenge/$4" ;;
esac
"""
# "new" registers the account, "issue" gets the certificate: two processes,
# timed together. $0.. are the positional arguments of sh -c.
_UACME_SCRIPT = (
    'mount --bind "$0" "$1" && uacme -a "$2" -c "$3" -t EC -o -y new'
    ' && exec uacme -a "$2" -c "$3" -t EC -o -h "$4" issue "$5"'
)


class UacmeClient(Client):
    name = "uacme"

    def unavailable(self) -> str | None:
        if shutil.which("uacme") is None:
            return "not installed"
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
        if probe.returncode != 0:
            return "installed, but skipped: `unshare -m` (needed to trust Pebble's TLS root) failed"
        return None

    def version(self) -> str:
        return f"{_debian_version('uacme')} (Debian)"

    def plan(self, pebble: RunningPebble, state: Path, identifier: str) -> RunPlan:
        hook = state / "hook.sh"
        hook.write_text(_UACME_HOOK)
        hook.chmod(0o700)
        argv = ["unshare", "-m", "sh", "-c", _UACME_SCRIPT, str(pebble.tls_root_pem_path),
                str(SYSTEM_CA_BUNDLE), pebble.directory_url, str(state / "conf"), str(hook),
                identifier]
        env = dict(os.environ, UACME_WEBROOT=str(state / "webroot"))
        return RunPlan(argv, env, state / "conf" / identifier / "cert.pem")

    @contextlib.contextmanager
    def serving(self, pebble: RunningPebble, state: Path) -> Iterator[None]:
        # The static server for the hook's files starts before the timer and
        # stops after it (the other clients' timed runs include their server).
        (state / "webroot" / ".well-known" / "acme-challenge").mkdir(parents=True)
        server = ManagedProcess(
            "uacme-webroot",
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
             "--directory", str(state / "webroot"), str(pebble.http01_port)],
            state / "webroot.log")
        try:
            server.wait_for_port(pebble.http01_port, PROCESS_START_TIMEOUT_SECONDS)
            yield
        finally:
            server.stop()


ALL_CLIENTS: dict[str, Client] = {c.name: c for c in (
    CertmintClient(), CertbotClient(), LegoClient(), UacmeClient())}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in lines)


def run_client(client: Client, pebble: RunningPebble, state: Path, measured: bool,
               timeout: float) -> RunResult:
    """One timed run of ``client`` in the fresh directory ``state``."""
    state.mkdir(parents=True)
    identifier = f"{secrets.token_hex(6)}.ttfc.test"
    plan = client.plan(pebble, state, identifier)
    log_path = state / "client.log"
    with client.serving(pebble, state), log_path.open("wb") as log:
        cpu_before = _children_cpu_seconds()
        started = time.perf_counter()
        process = subprocess.Popen(plan.argv, env=plan.env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        exit_code: int | None
        try:
            exit_code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group we created
            process.wait(KILL_WAIT_SECONDS)
            exit_code = None
        seconds = time.perf_counter() - started
        cpu_seconds = _children_cpu_seconds() - cpu_before
    if exit_code is None:
        error = f"killed after {timeout:g} s"
    elif exit_code != 0:
        error = f"exit code {exit_code}"
    elif not plan.certificate.is_file():
        error = f"exit code 0 but no certificate at {plan.certificate}"
    else:
        error = ""
    return RunResult(client.name, measured, seconds, cpu_seconds, exit_code, error, log_path)


def import_profile(pebble: RunningPebble, state: Path, top: int, timeout: float) -> str:
    """One extra, unmeasured certmint run under ``python -X importtime``."""
    state.mkdir(parents=True)
    identifier = f"{secrets.token_hex(6)}.ttfc.test"
    plan = CertmintClient().plan(pebble, state, identifier)
    argv = [sys.executable, "-X", "importtime", "-c",
            "import sys; from certmint.client.cli import main; sys.exit(main())",
            *plan.argv[1:]]
    started = time.perf_counter()
    done = subprocess.run(argv, env=plan.env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    seconds = time.perf_counter() - started
    rows: list[tuple[int, int, str]] = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (.*)$", line)
        if match:
            rows.append((int(match.group(1)), int(match.group(2)), match.group(3)))
    total_ms = sum(own for own, _, _ in rows) / 1000.0
    lines = [f"certmint under -X importtime: exit {done.returncode}, {seconds:.3f} s wall, "
             f"{total_ms:.0f} ms importing {len(rows)} modules; top by cumulative ms:"]
    for own, cumulative, name in sorted(rows, key=lambda r: -r[1])[:top]:
        lines.append(f"  {cumulative / 1000.0:7.1f}  (self {own / 1000.0:5.1f})  {name}")
    return "\n".join(lines)


# -- report ------------------------------------------------------------------


def render_table(clients: Sequence[Client], results: Sequence[RunResult], runs: int) -> str:
    def ok_seconds(name: str) -> list[float]:
        return [r.seconds for r in results if r.client == name and r.measured and not r.error]

    certmint = ok_seconds("certmint")
    certmint_median = statistics.median(certmint) if certmint else None
    header = ["client", "median s", "min s", "max s", "CPU s (median)", "ok/runs",
              "ratio to certmint"]
    rows = [header]
    for client in clients:
        seconds = ok_seconds(client.name)
        cpu = [r.cpu_seconds for r in results
               if r.client == client.name and r.measured and not r.error]
        if not seconds:
            rows.append([client.name, "-", "-", "-", "-", f"0/{runs}", "-"])
            continue
        median = statistics.median(seconds)
        ratio = f"{median / certmint_median:.2f}" if certmint_median else "-"
        rows.append([client.name, f"{median:.3f}", f"{min(seconds):.3f}", f"{max(seconds):.3f}",
                     f"{statistics.median(cpu):.3f}", f"{len(seconds)}/{runs}", ratio])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per client")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured runs per client before the measured ones")
    parser.add_argument("--clients", default=",".join(CLIENT_NAMES),
                        help="comma-separated subset of " + ", ".join(CLIENT_NAMES))
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds before one client run is killed and counted failed")
    parser.add_argument("--import-profile", type=int, default=0, metavar="N",
                        help="after the runs, one extra certmint run under -X importtime; "
                             "print its N slowest imports")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.client_list = [name.strip() for name in args.clients.split(",") if name.strip()]
    unknown = set(args.client_list) - set(CLIENT_NAMES)
    if unknown:
        parser.error(f"unknown clients: {', '.join(sorted(unknown))}")
    if args.runs < 1 or args.warmup < 0 or args.timeout <= 0:
        parser.error("--runs must be ≥ 1, --warmup ≥ 0, --timeout > 0")
    return args


def _pebble_settings() -> tuple[int | None, str]:
    reject = os.environ.get("PEBBLE_WFE_NONCEREJECT")
    if reject is None:
        return None, ("PEBBLE_VA_NOSLEEP=1; everything else Pebble's defaults "
                      "(5 % of good nonces rejected as badNonce)")
    return int(reject), f"PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT={int(reject)} (from env)"


def measure(args: argparse.Namespace, workdir: Path) -> int:
    chosen = [ALL_CLIENTS[name] for name in args.client_list]
    clients: list[Client] = []
    skipped: list[str] = []
    for client in chosen:
        reason = client.unavailable()
        if reason is None:
            clients.append(client)
        else:
            skipped.append(f"{client.name}: {reason}")
    if not clients:
        print("\n".join(skipped), file=sys.stderr)
        return 2
    nonce_reject, pebble_note = _pebble_settings()
    results: list[RunResult] = []
    rounds = args.warmup + args.runs
    with running_pebble(workdir / "pebble", va_nosleep=True, nonce_reject_percent=nonce_reject,
                        challtestsrv_answers_challenges=False) as pebble:
        busy_before = tree_before = clients_cpu = 0.0
        started = 0.0
        for index in range(rounds):
            measured = index >= args.warmup
            if index == args.warmup:
                busy_before, tree_before = machine_busy_seconds(), process_tree_cpu_seconds(
                    os.getpid())
                started = time.perf_counter()
            shift = index % len(clients)
            for client in clients[shift:] + clients[:shift]:
                state = workdir / "runs" / f"{index:02d}-{client.name}"
                result = run_client(client, pebble, state, measured, args.timeout)
                results.append(result)
                label = "run" if measured else "warm-up"
                print(f"[ttfc] {label} {index + 1}/{rounds} {client.name}: {result.seconds:.3f} s"
                      + (f" FAILED ({result.error})" if result.error else ""),
                      file=sys.stderr, flush=True)
                if measured:
                    clients_cpu += result.cpu_seconds
        window = time.perf_counter() - started
        busy = machine_busy_seconds() - busy_before
        tree = process_tree_cpu_seconds(os.getpid()) - tree_before
        profile = (import_profile(pebble, workdir / "runs" / "importtime", args.import_profile,
                                  args.timeout) if args.import_profile > 0 else "")

    print("time to first certificate: one name, http-01 standalone, new account, "
          "fresh state directory per run")
    print(f"Pebble {_debian_version('pebble')}: {pebble_note}")
    print(f"{args.runs} measured runs per client after {args.warmup} warm-up run(s) each, "
          "not counted (they load the page and bytecode caches); client order rotated every "
          "round; one client at a time")
    print()
    print(render_table(clients, results, args.runs))
    for line in skipped:
        print(line)
    print()
    certmint = [r.seconds for r in results
                if r.client == "certmint" and r.measured and not r.error]
    if certmint:
        median = statistics.median(certmint)
        verdict = "met" if median <= TARGET_CERTMINT_MEDIAN_SECONDS else "NOT met"
        print(f"target: certmint median ≤ {TARGET_CERTMINT_MEDIAN_SECONDS} s — {verdict} "
              f"({median:.3f} s)")
    print("versions: " + ", ".join(f"{c.name} {c.version()}" for c in clients))
    other = max(busy - tree, 0.0)
    print(f"cores busy over the measured runs ({window:.1f} s): clients {clients_cpu / window:.2f}"
          f", Pebble + responder + this script {max(tree - clients_cpu, 0.0) / window:.2f}, "
          f"other processes {other / window:.2f} (of {os.cpu_count()})")
    if other / window > 0.2:
        print(f"WARNING other processes used {other / window:.2f} cores: figures are disturbed, "
              "re-run on a quiet machine")
    if any(c.name == "uacme" for c in clients):
        print("uacme: timed as `unshare -m sh -c 'mount --bind <Pebble TLS root> <system "
              "bundle>; uacme new; uacme issue'` (it trusts only the system bundle); its hook "
              "writes http-01 answers to a webroot served by a static server started before "
              "the timer")
    failures = [r for r in results if r.error]
    for failure in failures:
        print(f"FAILED {failure.client} ({'measured' if failure.measured else 'warm-up'}): "
              f"{failure.error}; log {failure.log_path}:\n{_log_tail(failure.log_path)}")
    if profile:
        print()
        print(profile)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="certmint-ttfc-"))

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return measure(args, workdir)
    except KeyboardInterrupt:
        print("[ttfc] interrupted", file=sys.stderr)
        return 130
    except (HarnessError, OSError) as exc:
        print(f"[ttfc] error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep_logs:
            print(f"[ttfc] logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
