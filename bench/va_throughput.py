#!/usr/bin/env python3
"""Validations per second of the VA, per challenge type, against the local
challenge test server.

    python3 bench/va_throughput.py [--concurrency 32] [--duration 10]
                                   [--types http-01,dns-01,tls-alpn-01,...]
                                   [--warmup 1] [--no-caa] [--loop asyncio|uvloop]

``certmint-challtestsrv`` runs as a separate process (its own session, free
loopback ports), so the responder does not share this process's core or GIL:
the VA meets its responder over real sockets, as in production. It answers
DNS (127.0.0.1 for every name, the TXT records set here, no CAA records),
http-01 and tls-alpn-01. The VA runs in this process on one event loop with
``--concurrency`` validations in flight, each type in turn: ``--warmup``
seconds unmeasured, then ``--duration`` seconds measured.

Each type validates its own name under ``bench.example`` with what a real
agent would publish:

- http-01: the key authorization at /.well-known/acme-challenge/<token>;
- dns-01: the TXT at ``_acme-challenge.<name>`` (RFC 8555 §8.4);
- tls-alpn-01: the acmeIdentifier certificate (RFC 8737);
- dns-account-01: the TXT at ``_<label>._acme-challenge.<name>``
  (draft-ietf-acme-dns-account-label);
- dns-persist-01: the standing TXT at ``_validation-persist.<name>``
  naming the CA's issuer domain and the account (draft-ietf-acme-dns-persist).

A type not in ``ValidationAuthority.supported_challenge_types`` is skipped,
and the script says so. CAA is checked on every validation, as BR 3.2.2.8
requires (three more lookups: the name, ``bench.example``, ``example``);
``--no-caa`` measures the challenge alone.

Columns: validations completed in the window; validations/s (wall clock);
p50/p99 latency (nearest rank, ms); failures (must be 0; their problem types
are listed below the table and the exit status is 1); CPU-ms per validation
spent by this process (``time.process_time``: the VA and its event loop,
not the responder).

Every loop is bounded: by the window, by ``--max-validations`` per type, and
by a wall-clock cap on each type's run. Not a test (DESIGN.md §5): a script
that prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import ManagedProcess, free_port, start_responder

from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig, ValidationRequest
from certmint.protocol.challenges import dns01_record_name, dns01_txt_value
from certmint.testing.clock import FakeClock

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
ACCOUNT_URI = "https://ca.bench.example/acme/acct/1"
ISSUER = "certmint.invalid"
ALL_TYPES = ("http-01", "dns-01", "tls-alpn-01", "dns-account-01", "dns-persist-01")
# Beyond the window: time for validations in flight to finish (each is
# bounded by VAConfig.total_timeout) before the run is cut off.
GRACE_SECONDS = 30.0


@dataclass
class TypeResult:
    kind: str
    latencies_ms: list[float] = field(default_factory=list)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    first_failure: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def done(self) -> int:
        return len(self.latencies_ms)

    def percentile_ms(self, pct: float) -> float:
        # Nearest-rank percentile: an actually observed latency, never interpolated.
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        rank = max(1, -(-len(ordered) * pct // 100))
        return ordered[int(rank) - 1]


class Responder:
    """``certmint-challtestsrv`` in its own process, driven over its
    management API (the pebble-challtestsrv paths)."""

    def __init__(self, workdir: Path) -> None:
        ports: list[int] = []
        for _ in range(100):  # four distinct free ports
            if len(ports) == 4:
                break
            if (port := free_port()) not in ports:
                ports.append(port)
        self.ports = dict(zip(("dns", "http01", "tlsalpn01", "responder_mgmt"), ports, strict=True))
        self.process: ManagedProcess = start_responder("certmint", workdir, self.ports)
        self.process.wait_for_port(self.ports["tlsalpn01"], 30.0)
        self._http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.ports['responder_mgmt']}", timeout=10.0
        )

    def post(self, path: str, body: dict[str, str]) -> None:
        response = self._http.post(path, json=body)
        if response.status_code != 200:
            raise OSError(f"responder {path}: {response.status_code} {response.text.strip()}")

    def close(self) -> None:
        self._http.close()
        self.process.stop()


def name_for(kind: str) -> str:
    return f"{kind.replace('-', '')}.bench.example"


def publish(responder: Responder, kind: str) -> None:
    """What an agent would publish to prove ``name_for(kind)`` with ``kind``."""
    name = name_for(kind)
    if kind == "http-01":
        responder.post("/add-http01", {"token": TOKEN, "content": KEYAUTHZ})
    elif kind == "tls-alpn-01":
        responder.post("/add-tlsalpn01", {"host": name, "content": KEYAUTHZ})
    elif kind == "dns-01":
        responder.post(
            "/set-txt", {"host": dns01_record_name(name), "value": dns01_txt_value(KEYAUTHZ)}
        )
    elif kind == "dns-account-01":
        from certmint.protocol.challenges import dns_account01_record_name

        record = dns_account01_record_name(name, ACCOUNT_URI)
        responder.post("/set-txt", {"host": record, "value": dns01_txt_value(KEYAUTHZ)})
    elif kind == "dns-persist-01":
        from certmint.protocol.challenges import (
            dns_persist01_record_name,
            dns_persist01_txt_value,
        )

        value = dns_persist01_txt_value(ISSUER, ACCOUNT_URI)
        responder.post("/set-txt", {"host": dns_persist01_record_name(name), "value": value})
    else:
        raise ValueError(f"unknown challenge type {kind}")


def request_for(kind: str) -> ValidationRequest:
    token, keyauthz = (TOKEN, KEYAUTHZ) if kind != "dns-persist-01" else ("", "")
    return ValidationRequest(kind, "dns", name_for(kind), token, keyauthz, account_uri=ACCOUNT_URI)


async def drive(
    va: ValidationAuthority, kind: str, seconds: float, args: argparse.Namespace
) -> TypeResult:
    """Validations of ``kind``, ``args.concurrency`` at a time, for ``seconds``."""
    request = request_for(kind)
    result = TypeResult(kind)
    remaining = args.max_validations
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            outcome = await va.validate(request)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            if not outcome.valid:
                problem = outcome.problem
                ptype = problem.type if problem else "?"
                result.failures[ptype] += 1
                result.first_failure.setdefault(ptype, problem.detail if problem else "")

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with asyncio.timeout(seconds + GRACE_SECONDS):
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    result.cpu_seconds = time.process_time() - cpu0
    result.wall_seconds = time.perf_counter() - wall0
    return result


async def measure(args: argparse.Namespace, responder: Responder) -> list[TypeResult | str]:
    config = VAConfig(
        resolvers=(f"127.0.0.1:{responder.ports['dns']}",),
        http01_port=responder.ports["http01"],
        tlsalpn01_port=responder.ports["tlsalpn01"],
        allow_private_addresses=True,
        dns_timeout=5.0,
        connect_timeout=5.0,
        total_timeout=10.0,
        caa_identities=(ISSUER,),
        check_caa=not args.no_caa,
    )
    va = ValidationAuthority(config, FakeClock())
    rows: list[TypeResult | str] = []
    try:
        supported = va.supported_challenge_types
        for kind in args.types:
            if kind not in supported:
                rows.append(
                    f"{kind}: skipped (not in ValidationAuthority.supported_challenge_types)"
                )
                continue
            publish(responder, kind)
            if args.warmup > 0:
                await drive(va, kind, args.warmup, args)
            rows.append(await drive(va, kind, args.duration, args))
    finally:
        await va.aclose()
    return rows


def print_table(rows: list[TypeResult | str], args: argparse.Namespace) -> int:
    print(
        f"\nVA throughput: concurrency {args.concurrency}, {args.duration:g} s per type, "
        f"CAA {'off' if args.no_caa else 'on'}, loop {args.loop}"
    )
    header = (
        f"{'type':<16}{'validations':>12}{'validations/s':>15}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'failures':>10}{'CPU-ms/validation':>19}"
    )
    print(header)
    print("-" * len(header))
    notes: list[str] = []
    failed = 0
    for row in rows:
        if isinstance(row, str):
            notes.append(row)
            continue
        fails = sum(row.failures.values())
        failed += fails
        rate = row.done / row.wall_seconds if row.wall_seconds else float("nan")
        cpu_ms = row.cpu_seconds / row.done * 1000 if row.done else float("nan")
        print(
            f"{row.kind:<16}{row.done:>12}{rate:>15.1f}{row.percentile_ms(50):>9.2f}"
            f"{row.percentile_ms(99):>9.2f}{fails:>10}{cpu_ms:>19.3f}"
        )
        for ptype, count in row.failures.most_common():
            notes.append(f"{row.kind}: {count} x {ptype}: {row.first_failure[ptype]}")
    for note in notes:
        print(note)
    return 1 if failed else 0


def parse_types(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_TYPES]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(ALL_TYPES)}")
    return kinds


@contextlib.contextmanager
def running_responder() -> Iterator[Responder]:
    with tempfile.TemporaryDirectory(prefix="va-throughput-") as workdir:
        responder = Responder(Path(workdir))
        try:
            yield responder
        except BaseException:
            print(responder.process.log_tail(), file=sys.stderr)
            raise
        finally:
            responder.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per type")
    parser.add_argument("--types", type=parse_types, default=ALL_TYPES, metavar="T1,T2")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per type, unmeasured")
    parser.add_argument("--max-validations", type=int, default=1_000_000, help="cap per type")
    parser.add_argument("--no-caa", action="store_true", help="skip the CAA check")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.concurrency < 1 or args.duration <= 0:
        parser.error("--concurrency and --duration must be positive")
    with running_responder() as responder:
        run: Callable[..., list[TypeResult | str]]
        if args.loop == "uvloop":
            import uvloop

            run = uvloop.run
        else:
            run = asyncio.run
        rows = run(measure(args, responder))
    return print_table(rows, args)


if __name__ == "__main__":
    sys.exit(main())
