#!/usr/bin/env python3
"""Added latency of multi-perspective corroboration (BR 3.2.2.9).

    python3 bench/perspective_latency.py [--remotes 3] [--validations 200]
        [--concurrency 8] [--warmup 20] [--challenges http-01,dns-01]
        [--netns] [--remote-timeout 10] [--keep-logs]

Validates the same http-01 and dns-01 challenges two ways against a
``certmint-challtestsrv``:

- ``single``: the primary ``ValidationAuthority`` alone, in this process;
- ``primary+N``: ``MultiPerspectiveVA`` — the same primary plus N remote
  perspectives (``certmint-ca va-perspective`` processes reached through
  ``RemotePerspective``), all asked concurrently, BR quorum applied.

Each is run ``--validations`` times sequentially (one at a time: the latency a
lone applicant sees) and then with ``--concurrency`` validations in flight
(latency under load, and validations/s). Every validation includes the CAA
lookup the VA makes at validation time (BR 3.2.2.8). Figures: p50 and p99
(nearest rank) of the wall time of one ``validate()`` call, in ms, and the
added latency of corroboration (primary+N minus single) at each percentile.

By default everything is on loopback: one challenge test server serves every
perspective. With ``--netns`` (root only) each perspective runs in a network
namespace of its own (``certmint.testing.netns``) and resolves through its own
challenge test server on the host end of its veth, as the integration tests
do — the figures then include the veth hop.

Every loop is bounded by its count and by a wall-clock cap; every process the
script starts is stopped on the way out. Not a test (DESIGN.md §5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.corroboration import MultiPerspectiveVA
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.ca.va.remote import RemotePerspective
from certmint.protocol.challenges import dns01_record_name, dns01_txt_value
from certmint.runtime import SystemClock
from certmint.testing.harness import (
    free_port,
    program_path,
    start_process,
    stop_process,
    wait_for_output,
)
from certmint.testing.netns import NetnsUnavailable, network_namespace

NAME = "perspective-bench.example"
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
LOOPBACK = "127.0.0.1"
STARTUP_SECONDS = 30.0
BATCH_CAP_SECONDS = 300.0  # no batch runs longer, whatever the arguments
# Inside a fresh namespace, and on the host end of its veth, only we bind.
NETNS_PERSPECTIVE_PORT = 4000
NETNS_DNS_PORT = 8053
NETNS_MANAGEMENT_PORT = 8055


@dataclass(frozen=True)
class Figures:
    latencies_ms: list[float]
    failed: int
    first_problem: str | None
    wall_seconds: float

    def percentile(self, fraction: float) -> float:
        """Nearest-rank percentile of the latencies (ms)."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        rank = min(max(1, math.ceil(fraction * len(ordered))), len(ordered))
        return ordered[rank - 1]

    @property
    def per_second(self) -> float:
        done = len(self.latencies_ms)
        return done / self.wall_seconds if self.wall_seconds > 0 else float("nan")


# --------------------------------------------------------------------------- processes


class Processes:
    """Everything started, stopped in reverse order on exit."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.stack = contextlib.ExitStack()

    def start(self, argv: list[str], log_name: str, marker: str) -> None:
        log_path = self.work / log_name
        process = start_process(argv, log_path)
        self.stack.callback(stop_process, process)
        wait_for_output(process, log_path, marker, STARTUP_SECONDS)


def challtestsrv(processes: Processes, name: str, dns: str, http01: str, mgmt: str, a: str) -> str:
    """Start a challenge test server answering ``a`` for every name; its
    management URL."""
    processes.start(
        [
            program_path("certmint-challtestsrv"),
            "--dns", dns, "--http01", http01, "--tlsalpn01", "",
            "--management", mgmt, "--default-ipv4", a,
        ],
        f"challtestsrv-{name}.log",
        "management listening on",
    )  # fmt: skip
    return f"http://{mgmt}"


def perspective_argv(
    listen: str, region: str, secret: Path, resolver: str, http01_port: int
) -> list[str]:
    return [
        program_path("certmint-ca"), "va-perspective",
        "--listen", listen, "--region", region, "--secret-file", str(secret),
        "--dns-resolver", resolver, "--http01-port", str(http01_port),
        "--allow-private-addresses",
    ]  # fmt: skip


def provision(management_url: str) -> None:
    """The right http-01 file and dns-01 TXT in one view."""
    with httpx.Client(timeout=10) as http:
        for path, body in (
            ("/add-http01", {"token": TOKEN, "content": KEYAUTHZ}),
            (
                "/set-txt",
                {"host": dns01_record_name(NAME) + ".", "value": dns01_txt_value(KEYAUTHZ)},
            ),
        ):
            response = http.post(management_url + path, json=body)
            response.raise_for_status()


@contextlib.contextmanager
def setup(args: argparse.Namespace, work: Path) -> Iterator[tuple[VAConfig, list[str]]]:
    """Start the views and perspectives; yield the primary's VA config and the
    perspectives' base URLs."""
    secret = work / "perspective.secret"
    secret.write_text(os.urandom(32).hex() + "\n")
    processes = Processes(work)
    with processes.stack:
        dns_port = free_port(udp_too=True)
        http01_port = free_port()
        primary_view = challtestsrv(
            processes, "primary", f"{LOOPBACK}:{dns_port}", f"{LOOPBACK}:{http01_port}",
            f"{LOOPBACK}:{free_port()}", LOOPBACK,
        )  # fmt: skip
        provision(primary_view)
        urls: list[str] = []
        for index in range(args.remotes):
            region = f"r{index + 1}"
            if not args.netns:
                port = free_port()
                processes.start(
                    perspective_argv(
                        f"{LOOPBACK}:{port}", region, secret, f"{LOOPBACK}:{dns_port}", http01_port
                    ),
                    f"perspective-{region}.log",
                    "listening on",
                )
                urls.append(f"http://{LOOPBACK}:{port}")
                continue
            ns = processes.stack.enter_context(network_namespace("cmb", index + 1))
            host = ns.host_address
            view = challtestsrv(
                processes, region, f"{host}:{NETNS_DNS_PORT}", f"{host}:{http01_port}",
                f"{host}:{NETNS_MANAGEMENT_PORT}", host,
            )  # fmt: skip
            provision(view)
            log_path = work / f"perspective-{region}.log"
            listen = f"{ns.ns_address}:{NETNS_PERSPECTIVE_PORT}"
            with log_path.open("ab") as log:
                process = ns.popen(
                    perspective_argv(
                        listen, region, secret, f"{host}:{NETNS_DNS_PORT}", http01_port
                    ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            wait_for_output(process, log_path, "listening on", STARTUP_SECONDS)
            urls.append(f"http://{listen}")
        config = VAConfig(
            resolvers=(f"{LOOPBACK}:{dns_port}",),
            http01_port=http01_port,
            allow_private_addresses=True,
        )
        yield config, urls


# --------------------------------------------------------------------------- measuring


Validate = Callable[[ValidationRequest], Awaitable[ValidationResult]]


async def batch(
    validate: Validate, request: ValidationRequest, count: int, concurrency: int
) -> Figures:
    latencies: list[float] = []
    failed = 0
    first_problem: str | None = None
    remaining = count

    async def worker() -> None:
        nonlocal remaining, failed, first_problem
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            result = await validate(request)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if result.valid:
                latencies.append(elapsed_ms)
            else:
                failed += 1
                if first_problem is None:
                    first_problem = str(result.problem)

    wall0 = time.perf_counter()
    async with asyncio.timeout(BATCH_CAP_SECONDS):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Figures(latencies, failed, first_problem, time.perf_counter() - wall0)


async def measure(
    args: argparse.Namespace, config: VAConfig, urls: list[str], secret: bytes
) -> int:
    """Print the table; return the number of failed validations (must be 0)."""
    clock = SystemClock()
    primary = ValidationAuthority(config, clock)
    remotes = [
        RemotePerspective(f"r{i + 1}", url, secret, args.remote_timeout)
        for i, url in enumerate(urls)
    ]
    multi = MultiPerspectiveVA(primary, remotes, clock)
    modes: list[tuple[str, Validate]] = [
        ("single", primary.validate),
        (f"primary+{len(remotes)}", multi.validate),
    ]
    where = "network namespaces" if args.netns else "loopback"
    print(
        f"{len(remotes)} remote perspectives on {where}; {args.validations} validations per "
        f"cell after {args.warmup} warm-up; concurrency {args.concurrency}; "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        f"{'challenge':<10} {'mode':<11} {'seq p50':>9} {'seq p99':>9} "
        f"{'conc p50':>9} {'conc p99':>9} {'conc val/s':>11}  failed"
    )
    failures = 0
    try:
        for challenge in args.challenges:
            request = ValidationRequest(challenge, "dns", NAME, TOKEN, KEYAUTHZ)
            rows: dict[str, tuple[Figures, Figures]] = {}
            for mode, validate in modes:
                await batch(validate, request, args.warmup, 1)
                sequential = await batch(validate, request, args.validations, 1)
                concurrent = await batch(validate, request, args.validations, args.concurrency)
                rows[mode] = (sequential, concurrent)
            print()
            print(header)
            for mode, (sequential, concurrent) in rows.items():
                print(
                    f"{challenge:<10} {mode:<11} {sequential.percentile(0.5):9.2f} "
                    f"{sequential.percentile(0.99):9.2f} {concurrent.percentile(0.5):9.2f} "
                    f"{concurrent.percentile(0.99):9.2f} {concurrent.per_second:11.1f}  "
                    f"{sequential.failed + concurrent.failed}"
                )
                for figures in (sequential, concurrent):
                    failures += figures.failed
                    if figures.first_problem is not None:
                        print(f"  first failure ({mode}): {figures.first_problem}")
            (single_seq, single_conc), (multi_seq, multi_conc) = rows.values()
            added = [
                multi_seq.percentile(0.5) - single_seq.percentile(0.5),
                multi_seq.percentile(0.99) - single_seq.percentile(0.99),
                multi_conc.percentile(0.5) - single_conc.percentile(0.5),
                multi_conc.percentile(0.99) - single_conc.percentile(0.99),
            ]
            print(f"{challenge:<10} {'added ms':<11} " + " ".join(f"{a:+9.2f}" for a in added))
    finally:
        await multi.aclose()
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--remotes", type=int, default=3)
    parser.add_argument("--validations", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--challenges",
        type=lambda text: [c for c in text.split(",") if c],
        default=["http-01", "dns-01"],
    )
    parser.add_argument("--netns", action="store_true", help="perspectives in namespaces (root)")
    parser.add_argument("--remote-timeout", type=float, default=10.0)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.remotes <= 20:
        parser.error("--remotes must be 1-20")
    if not set(args.challenges) <= {"http-01", "dns-01"}:
        parser.error("--challenges takes http-01 and/or dns-01")
    if args.validations < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--validations and --concurrency must be positive, --warmup not negative")
    work = Path(tempfile.mkdtemp(prefix="perspective-bench-"))
    try:
        with setup(args, work) as (config, urls):
            secret = (work / "perspective.secret").read_text().strip().encode()
            failures = asyncio.run(measure(args, config, urls, secret))
    except NetnsUnavailable as error:
        print(f"--netns: {error}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        return 2
    except BaseException:
        print(f"logs kept in {work}", file=sys.stderr)
        raise
    if failures:
        # A failed validation is a broken setup, not a slow one: keep the logs.
        print(f"{failures} validations failed; logs kept in {work}", file=sys.stderr)
        return 1
    if args.keep_logs:
        print(f"logs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
