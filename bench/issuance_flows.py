#!/usr/bin/env python3
"""N concurrent complete ACME issuance flows against certmint-ca and Pebble.

    python3 bench/issuance_flows.py [--server certmint|pebble|both]
        [--concurrency 8] [--duration 20] [--flows N] [--warmup 2]

A flow is new order → http-01 → finalize → certificate download (RFC 8555
§7.4, §8.3). The script starts everything itself on free loopback ports — one
challenge responder shared by both CAs, then each CA in turn, so the two never
compete for the cores — and prints for each server: flows/s, p50/p99 flow
latency, and server CPU-milliseconds per certificate (utime+stime of the
server's process tree from /proc over the measured window), plus the ratios
certmint/pebble. A flow that makes no progress for 30 s is a stall: it is
cancelled and reported ("STALLED: n flows stuck > 30 s"), never waited on
forever. Every loop is bounded in count and time, and everything started is
killed on the way out.

See bench/README.md for what each figure means and the figures measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from acme_driver import (
    AcmeWorker,
    CertificateKeyPool,
    ChallengeResponder,
    FlowError,
    HttpConnection,
    HttpxConnection,
    Progress,
    RawHttp1Connection,
    fetch_directory,
)
from servers import (
    ManagedProcess,
    ServerProfiler,
    free_port,
    machine_busy_seconds,
    start_certmint,
    start_pebble,
    start_responder,
)

STALL_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = STALL_SECONDS + 5.0
WATCHDOG_TICK_SECONDS = 1.0
ACCOUNT_TIMEOUT_SECONDS = 60.0
# After the measured window closes, in-flight flows get this long beyond the
# stall threshold to finish before they are cancelled.
DRAIN_GRACE_SECONDS = 5.0
FAILURE_BACKOFF_SECONDS = 0.05


@dataclass
class PhaseResult:
    server: str
    concurrency: int
    ok: int = 0
    failed: int = 0
    stalled: int = 0
    window_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    server_cpu_ms: float = 0.0
    client_cpu_ms: float = 0.0
    responder_cpu_ms: float = 0.0
    machine_busy_ms: float = 0.0  # all CPUs, all processes (/proc/stat)
    bad_nonce_retries: int = 0
    polls: int = 0  # status polls made by ok flows
    last_completion: float = 0.0  # monotonic time the last flow ended (ok or failed)
    drive_seconds: float = 0.0  # measured window including the wait for stalled flows
    failure_reasons: dict[str, int] = field(default_factory=dict)
    failure_examples: dict[str, str] = field(default_factory=dict)
    stalled_steps: dict[str, int] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)  # summed over ok flows
    error: str = ""
    profile_summary: str = ""

    @property
    def flows_per_second(self) -> float:
        return self.ok / self.window_seconds if self.window_seconds > 0 else 0.0

    @property
    def cpu_ms_per_cert(self) -> float:
        return self.server_cpu_ms / self.ok if self.ok else float("nan")

    def percentile_ms(self, pct: float) -> float:
        # Nearest-rank percentile: an actually observed latency, never interpolated.
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        rank = max(1, -(-len(ordered) * pct // 100))
        return ordered[int(rank) - 1]


@dataclass
class RunLimits:
    concurrency: int
    duration: float
    max_flows: int | None
    warmup: float
    poll_interval: float
    retry_after_cap: float
    http_client: str
    profile_dir: Path | None


class FlowTally:
    """Shared counters for one window (warm-up or measured)."""

    def __init__(self, result: PhaseResult | None, max_flows: int | None) -> None:
        self.result = result
        self.remaining = max_flows

    def claim(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


async def _run_one_flow(worker: AcmeWorker, tally: FlowTally) -> bool:
    """One flow under the stall watchdog; True if it issued a certificate."""
    progress = Progress()
    started = time.monotonic()
    task = asyncio.ensure_future(worker.run_flow(progress))
    result = tally.result
    # The watchdog: a flow whose step has not advanced for STALL_SECONDS is
    # stuck; it is cancelled and counted, so a deadlocked CA cannot hang us.
    for _ in range(int(24 * 3600 / WATCHDOG_TICK_SECONDS)):
        done, _pending = await asyncio.wait({task}, timeout=WATCHDOG_TICK_SECONDS)
        if done:
            break
        if time.monotonic() - progress.last > STALL_SECONDS:
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
            if result is not None:
                result.stalled += 1
                result.stalled_steps[progress.step] = result.stalled_steps.get(progress.step, 0) + 1
            return False
    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
    if result is None:  # warm-up: outcome only
        return exc is None
    result.last_completion = time.monotonic()
    if exc is None:
        result.ok += 1
        result.polls += progress.polls
        for step, seconds in progress.step_seconds.items():
            result.step_seconds[step] = result.step_seconds.get(step, 0.0) + seconds
        result.latencies_ms.append((time.monotonic() - started) * 1000.0)
        return True
    result.failed += 1
    reason = exc.reason if isinstance(exc, FlowError) else f"{type(exc).__name__}: {exc}"[:120]
    result.failure_reasons[reason] = result.failure_reasons.get(reason, 0) + 1
    result.failure_examples.setdefault(reason, str(exc)[:400])
    return False


async def _drive(
    workers: list[AcmeWorker], tally: FlowTally, seconds: float, server: ManagedProcess
) -> None:
    """Each worker runs flows back to back until the window closes."""
    deadline = time.monotonic() + seconds

    async def loop(worker: AcmeWorker) -> None:
        while time.monotonic() < deadline and tally.claim():
            if not await _run_one_flow(worker, tally):
                if not server.alive():
                    raise OSError(f"{server.name} exited with code {server.process.poll()}")
                # A failing server must not turn the client into a busy loop.
                await asyncio.sleep(FAILURE_BACKOFF_SECONDS)

    tasks = [asyncio.ensure_future(loop(w)) for w in workers]
    # Hard cap: the window, plus one stall period, plus grace. Anything still
    # running then is cancelled and counted as stalled.
    _done, pending = await asyncio.wait(
        tasks, timeout=seconds + STALL_SECONDS + DRAIN_GRACE_SECONDS + WATCHDOG_TICK_SECONDS
    )
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5.0)
        if tally.result is not None:
            tally.result.stalled += len(pending)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_phase(
    name: str,
    directory_url: str,
    ca_bundle: str,
    server: ManagedProcess,
    responder: ManagedProcess,
    responder_management_url: str,
    limits: RunLimits,
) -> PhaseResult:
    result = PhaseResult(server=name, concurrency=limits.concurrency)
    # One connection per worker and per peer: a worker sends one request at a
    # time, and no pool is scanned on every request.
    async with contextlib.AsyncExitStack() as stack:
        tls = ssl.create_default_context(cafile=ca_bundle)

        async def connect(url: str) -> HttpConnection:
            connection: HttpConnection
            if limits.http_client == "httpx":
                one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
                connection = HttpxConnection(httpx.AsyncClient(
                    verify=tls, limits=one, timeout=httpx.Timeout(HTTP_TIMEOUT_SECONDS)))
            else:
                connection = RawHttp1Connection(url, tls, HTTP_TIMEOUT_SECONDS)
            stack.push_async_callback(connection.aclose)
            return connection

        directory = await fetch_directory(await connect(directory_url), directory_url)
        # Enough distinct certificate keys that no two concurrent flows share
        # one; made now so client key generation is outside the window.
        keys = CertificateKeyPool(limits.concurrency * 4)
        workers = [
            AcmeWorker(
                await connect(directory_url), directory,
                ChallengeResponder(await connect(responder_management_url),
                                   responder_management_url),
                keys, poll_interval=limits.poll_interval,
                retry_after_cap=limits.retry_after_cap,
            )
            for _ in range(limits.concurrency)
        ]
        await asyncio.wait_for(
            asyncio.gather(*(w.create_account() for w in workers)), ACCOUNT_TIMEOUT_SECONDS
        )
        if limits.warmup > 0:
            await _drive(workers, FlowTally(None, None), limits.warmup, server)
        nonce_retries_before = sum(w.bad_nonce_retries for w in workers)

        cpu_before = server.cpu_seconds()
        client_before = _client_cpu_seconds()
        responder_before = responder.cpu_seconds()
        machine_before = machine_busy_seconds()
        profiler = None
        if limits.profile_dir is not None and name == "certmint":
            profiler = ServerProfiler(
                server.process.pid, limits.profile_dir / f"certmint-c{limits.concurrency}.txt",
                limits.duration)
        started = time.monotonic()
        try:
            await _drive(workers, FlowTally(result, limits.max_flows), limits.duration, server)
        finally:
            if profiler is not None:
                result.profile_summary = profiler.finish()
        result.drive_seconds = time.monotonic() - started
        # A stalled flow holds the drive open for STALL_SECONDS while the
        # server does nothing; throughput is over the time flows completed.
        result.window_seconds = result.drive_seconds
        if result.stalled and result.last_completion > started:
            result.window_seconds = result.last_completion - started
        result.server_cpu_ms = (server.cpu_seconds() - cpu_before) * 1000.0
        result.client_cpu_ms = (_client_cpu_seconds() - client_before) * 1000.0
        result.responder_cpu_ms = (responder.cpu_seconds() - responder_before) * 1000.0
        result.machine_busy_ms = (machine_busy_seconds() - machine_before) * 1000.0
        result.bad_nonce_retries = sum(w.bad_nonce_retries for w in workers) - nonce_retries_before
    return result


# -- report ----------------------------------------------------------------

COLUMNS = ("server", "concurrency", "flows ok", "flows failed", "flows/s", "p50 ms", "p99 ms",
           "CPU-ms/cert")


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN → "-"


def render_table(results: list[PhaseResult]) -> str:
    rows = [list(COLUMNS)]
    for r in results:
        rows.append([
            r.server, str(r.concurrency), str(r.ok), str(r.failed), _fmt(r.flows_per_second),
            _fmt(r.percentile_ms(50)), _fmt(r.percentile_ms(99)), _fmt(r.cpu_ms_per_cert, 2),
        ])
    by_name = {r.server: r for r in results}
    if "certmint" in by_name and "pebble" in by_name:
        c, p = by_name["certmint"], by_name["pebble"]

        def ratio(a: float, b: float) -> str:
            return _fmt(a / b, 2) if b and a == a and b == b else "-"

        rows.append([
            "certmint/pebble", "", "", "", ratio(c.flows_per_second, p.flows_per_second),
            ratio(c.percentile_ms(50), p.percentile_ms(50)),
            ratio(c.percentile_ms(99), p.percentile_ms(99)),
            ratio(c.cpu_ms_per_cert, p.cpu_ms_per_cert),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_notes(results: list[PhaseResult]) -> str:
    notes: list[str] = []
    for r in results:
        if r.error:
            notes.append(f"{r.server}: ERROR {r.error}")
        if r.stalled:
            steps = ", ".join(f"{k}: {v}" for k, v in sorted(r.stalled_steps.items()))
            notes.append(f"{r.server}: STALLED: {r.stalled} flows stuck > {STALL_SECONDS:.0f} s"
                         + (f" (last step reached — {steps})" if steps else ""))
        for reason, count in sorted(r.failure_reasons.items(), key=lambda kv: -kv[1])[:5]:
            notes.append(f"{r.server}: failed x{count}: {reason}")
            example = r.failure_examples.get(reason, "")
            if example and example != reason:
                notes.append(f"    e.g. {example}")
        if r.drive_seconds > 0:
            window_ms = r.drive_seconds * 1000.0  # CPU is sampled over the whole drive
            other_ms = r.machine_busy_ms - r.server_cpu_ms - r.client_cpu_ms - r.responder_cpu_ms
            if r.window_seconds < r.drive_seconds:
                notes.append(f"{r.server}: flows/s over {r.window_seconds:.1f} s up to the last "
                             f"completed flow; CPU over all {r.drive_seconds:.1f} s")
            notes.append(
                f"{r.server}: window {r.drive_seconds:.1f} s; cores busy: server "
                f"{r.server_cpu_ms / window_ms:.2f}, client {r.client_cpu_ms / window_ms:.2f}, "
                f"responder {r.responder_cpu_ms / window_ms:.2f}, other processes "
                f"{max(other_ms, 0.0) / window_ms:.2f} (of {os.cpu_count()}); "
                f"badNonce retries {r.bad_nonce_retries}")
            if r.client_cpu_ms / window_ms > 0.9:
                notes.append(f"{r.server}: WARNING client near one full core: figures may be "
                             "client-bound")
            if other_ms / window_ms > 0.2:
                notes.append(f"{r.server}: WARNING other processes used "
                             f"{other_ms / window_ms:.2f} cores during the window: "
                             "figures are disturbed, re-run on a quiet machine")
        if r.ok:
            steps = ", ".join(f"{step} {seconds / r.ok * 1000.0:.1f}"
                              for step, seconds in r.step_seconds.items())
            notes.append(f"{r.server}: mean ms per step (ok flows): {steps}; "
                         f"polls per flow {r.polls / r.ok:.1f}")
        if r.profile_summary:
            notes.append(r.profile_summary)
    return "\n".join(notes)


# -- orchestration -----------------------------------------------------------


async def _bench_server(
    name: str, workdir: Path, ports: dict[str, int], args: argparse.Namespace,
    limits: RunLimits, started: list[ManagedProcess], responder: ManagedProcess,
) -> PhaseResult:
    print(f"[bench] starting {name} ...", file=sys.stderr, flush=True)
    try:
        if name == "pebble":
            server, directory_url, bundle = start_pebble(workdir / "pebble", ports)
        else:
            server, directory_url, bundle = start_certmint(
                workdir / "certmint", ports, args.certmint_arg
            )
    except OSError as exc:  # the start helpers stop what they started
        return PhaseResult(server=name, concurrency=limits.concurrency,
                           error=f"could not start: {exc}")
    started.append(server)
    try:
        print(f"[bench] {name}: {limits.concurrency} workers, warm-up {limits.warmup:g} s, "
              f"window {limits.duration:g} s", file=sys.stderr, flush=True)
        return await run_phase(
            name, directory_url, bundle, server, responder,
            f"http://127.0.0.1:{ports['responder_mgmt']}", limits,
        )
    except (FlowError, httpx.HTTPError, TimeoutError, OSError) as exc:
        print(server.log_tail(), file=sys.stderr)
        return PhaseResult(server=name, concurrency=limits.concurrency,
                           error=f"{type(exc).__name__}: {exc}")
    finally:
        if args.keep_logs:
            print(f"[bench] {name} log: {server.log_path}", file=sys.stderr)
        server.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("certmint", "pebble", "both"), default="both")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="measured window in seconds (also the cap when --flows is given)")
    parser.add_argument("--flows", type=int, default=None,
                        help="stop after this many flows in the measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up seconds")
    parser.add_argument("--poll-interval", type=float, default=0.015,
                        help="seconds between polls of a pending authorization or order")
    parser.add_argument("--retry-after-cap", type=float, default=0.02,
                        help="Retry-After is honoured up to this many seconds (default 0.02): "
                             "the benchmark measures the CA, not a politeness delay")
    parser.add_argument("--responder", choices=("auto", "certmint", "pebble"), default="auto",
                        help="challenge test server: certmint-challtestsrv or pebble-challtestsrv")
    parser.add_argument("--http-client", choices=("raw", "httpx"), default="raw",
                        help="client transport: a minimal keep-alive HTTP/1.1 client (default,"
                             " ~0.03 ms CPU per request) or httpx (~0.6 ms per request)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample certmint-ca with py-spy over the measured window; write "
                             "raw stacks to DIR and print the hot spots")
    parser.add_argument("--certmint-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for certmint-ca serve (repeat), e.g. --workers=1")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or (args.flows is not None and args.flows < 1):
        parser.error("concurrency, duration and flows must be positive")
    return args


async def main_async(args: argparse.Namespace, workdir: Path,
                     started: list[ManagedProcess]) -> list[PhaseResult]:
    ports = {name: free_port() for name in (
        "dns", "http01", "tlsalpn01", "responder_mgmt",
        "pebble", "pebble_mgmt", "certmint", "certmint_mgmt")}
    responder = start_responder(args.responder, workdir, ports)
    started.append(responder)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    limits = RunLimits(args.concurrency, args.duration, args.flows, args.warmup,
                       args.poll_interval, args.retry_after_cap, args.http_client,
                       args.profile)
    names = ["pebble", "certmint"] if args.server == "both" else [args.server]
    results = []
    for name in names:
        results.append(await _bench_server(
            name, workdir, ports, args, limits, started, responder))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="certmint-bench-"))
    started: list[ManagedProcess] = []

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    results: list[PhaseResult] = []
    try:
        results = asyncio.run(main_async(args, workdir, started))
    except KeyboardInterrupt:
        print("[bench] interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # e.g. the challenge responder did not start
        print(f"[bench] error: {exc}", file=sys.stderr)
        return 2
    finally:
        for process in reversed(started):
            process.stop()
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render_table(results))
    notes = render_notes(results)
    if notes:
        print()
        print(notes)
    failed = any(r.error or r.stalled or not r.ok for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
