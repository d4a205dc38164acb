#!/usr/bin/env python3
"""CPU cost of one http-01 validation (DNS lookup + fetch) in the VA.

    python3 bench/va_micro.py [--validations 2000] [--concurrency 8] [--warmup 200]
                              [--repeat 3] [--responder thread|process]
                              [--loop asyncio|uvloop]

The challenge test server (``certmint.testing.challtestsrv.ChallengeTestServer``)
answers on loopback: DNS 127.0.0.1 for every name, the http-01 file. The VA
runs on the main thread's event loop; CPU is read with ``time.thread_time()``
on the main thread, so the figure is the VA's own CPU (plus the asyncio loop
driving it), not the responder's.

``--responder thread`` (default) serves from a daemon thread of this process.
It shares the GIL with the VA, and the hand-overs inflate and scatter the
VA's figures (cold caches, lock traffic). ``--responder process`` runs the same
server in a child process, as the CA meets its responder in production and in
bench/issuance_flows.py; its figures are lower and steadier.

``--loop uvloop`` runs the VA on uvloop, as ``certmint-ca serve`` does when
uvloop is installed.

Each repeat prints validations/s (wall clock) and CPU-µs per validation; the
best (lowest) and median repeats are printed last. Every loop is bounded by
--validations and by a wall-clock cap.

Not a test (DESIGN.md §5): a script that prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Event as EventType

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest
from certmint.testing.challtestsrv import ChallengeTestServer
from certmint.testing.clock import FakeClock

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
WALL_CAP_SECONDS = 120.0


async def run_batch(va: ValidationAuthority, count: int, concurrency: int) -> tuple[int, int]:
    """Run ``count`` validations, ``concurrency`` at a time; (ok, failed)."""
    request = ValidationRequest("http-01", "dns", "bench.example", TOKEN, KEYAUTHZ)
    remaining = count
    ok = failed = 0

    async def worker() -> None:
        nonlocal remaining, ok, failed
        while remaining > 0:
            remaining -= 1
            result = await va.validate(request)
            if result.valid:
                ok += 1
            else:
                failed += 1
                if failed == 1:
                    print(f"  first failure: {result.problem}")

    async with asyncio.timeout(WALL_CAP_SECONDS):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, failed


async def measure(args: argparse.Namespace, dns_port: int, http01_port: int) -> None:
    config = VAConfig(
        resolvers=(f"127.0.0.1:{dns_port}",),
        http01_port=http01_port,
        allow_private_addresses=True,
        dns_timeout=2.0,
        connect_timeout=2.0,
        total_timeout=5.0,
    )
    va = ValidationAuthority(config, FakeClock())
    try:
        await run_batch(va, args.warmup, args.concurrency)
        figures: list[float] = []
        for round_no in range(1, args.repeat + 1):
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            ok, failed = await run_batch(va, args.validations, args.concurrency)
            cpu = time.thread_time() - cpu0
            wall = time.perf_counter() - wall0
            done = ok + failed
            cpu_us = cpu / done * 1e6 if done else float("nan")
            figures.append(cpu_us)
            print(
                f"round {round_no}: {ok} ok, {failed} failed, "
                f"{done / wall:8.1f} validations/s, {cpu_us:8.1f} CPU-µs/validation (VA thread)"
            )
        print(
            f"best: {min(figures):.1f}, median: {statistics.median(figures):.1f} CPU-µs/validation"
        )
    finally:
        await va.aclose()


def _new_server() -> ChallengeTestServer:
    server = ChallengeTestServer(tlsalpn01_address=None, management_address=None)
    server.add_http01(TOKEN, KEYAUTHZ)
    return server


def _serve_in_child(ports: multiprocessing.Queue[tuple[int, int]], stop: EventType) -> None:
    server = _new_server()
    with server.run_in_thread():
        ports.put((server.dns_port, server.http01_port))
        stop.wait(WALL_CAP_SECONDS * 10)


@contextlib.contextmanager
def responder(kind: str) -> Iterator[tuple[int, int]]:
    """(dns port, http-01 port) of a running responder, stopped on the way out."""
    if kind == "thread":
        server = _new_server()
        with server.run_in_thread():
            yield server.dns_port, server.http01_port
        return
    ports: multiprocessing.Queue[tuple[int, int]] = multiprocessing.Queue()
    stop = multiprocessing.Event()
    child = multiprocessing.Process(target=_serve_in_child, args=(ports, stop), daemon=True)
    child.start()
    try:
        yield ports.get(timeout=30)
    finally:
        stop.set()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validations", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--responder", choices=("thread", "process"), default="thread")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    with responder(args.responder) as (dns_port, http01_port):
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(measure(args, dns_port, http01_port))
        else:
            asyncio.run(measure(args, dns_port, http01_port))


if __name__ == "__main__":
    main()
