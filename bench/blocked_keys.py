"""Blocked-key lookup cost: what the key policy pays per account or CSR key.

    python bench/blocked_keys.py [--blocked 100000] [--lookups 20000] [--url sqlite:///x.db]

Fills ``blocked_keys`` with N random SPKI digests (one transaction), then
times ``StorageAuthority.is_key_blocked`` -- a primary-key lookup -- for keys
that are blocked and keys that are not, and the whole ``KeyPolicy`` check of
a P-256 key with that hook wired in (as ``app.py`` does). Prints mean and
median microseconds per call. A figure-printing script, not a test
(DESIGN.md §5); it draws random digests, which the CA's own code never does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from certmint.ca.keypolicy import KeyPolicy, blocked_by, shipped_weak_rsa_fingerprints
from certmint.ca.storage import open_storage
from certmint.ca.storage.schema import blocked_keys

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def timed(call: Callable[[], object], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return statistics.fmean(samples), statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocked", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blocked-keys-") as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'ca.db'}"
        sa = open_storage(url)
        try:
            digests = [os.urandom(32) for _ in range(args.blocked)]
            with sa.engine.begin() as conn:
                conn.execute(
                    blocked_keys.insert(),
                    [
                        {"key_spki_sha256": d.hex(), "added_at": T0, "source": "admin"}
                        for d in digests
                    ],
                )
            hit, miss = digests[len(digests) // 2], os.urandom(32)
            assert sa.is_key_blocked(hit) and not sa.is_key_blocked(miss)
            policy = KeyPolicy(shipped_weak_rsa_fingerprints(), blocked_by(sa.is_key_blocked))
            key = ec.generate_private_key(ec.SECP256R1()).public_key()
            print(f"{args.blocked} blocked keys, {url.split(':', 1)[0]}, {args.lookups} lookups")
            for label, call in (
                ("is_key_blocked (blocked)", lambda: sa.is_key_blocked(hit)),
                ("is_key_blocked (not blocked)", lambda: sa.is_key_blocked(miss)),
                ("KeyPolicy P-256 check with the hook", lambda: policy.check_certificate_key(key)),
            ):
                mean, median = timed(call, args.lookups)
                print(f"{label:40s} mean {mean:7.1f} µs  median {median:7.1f} µs")
        finally:
            sa.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
