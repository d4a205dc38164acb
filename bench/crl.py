#!/usr/bin/env python3
"""CRL generation time and size for large revocation lists (issue 5, acceptance 5).

    python3 bench/crl.py [--entries 10000,100000,1000000] [--keys p384[,rsa2048]]
        [--modes shard,ctor,chained] [--chained-max 100000] [--seed 1]
        [--profile N] [--no-openssl] [--timeout 1800] [--lint-timeout 600]

For each issuer key, size and mode, a fresh child process (so that peak RSS
is that run's alone) makes an issuer (a self-signed CA certificate, its key
in a ``FileSigner``) and ``N`` realistic revoked entries — random 18-byte
serials (BR 7.1, as the CA draws them), revocation dates spread over the 90
days before thisUpdate, reason codes mixed (none 40 %, superseded 30 %,
cessationOfOperation 20 %, keyCompromise 10 %) — as the SA hands them over
(``RevokedEntry``: hex serial, datetime, reason code). Drawing them is not
timed (that is the SA's share). Then it times one CRL, without lint:

- ``shard``: the CA's own path, ``issuance.crl.build_shard_crl`` — parse and
  de-duplicate serials, one ``RevokedCertificate`` per entry, the BR 7.2.2
  extensions (cRLNumber, AKI, critical IDP), ``signing.sign_crl`` (the
  throwaway-key draft, the splice, the real signature, its verification)
  and the DER. Only the total is timed;
- ``ctor``: the same CRL with cryptography's builders driven directly, timed
  in three phases: **entries** (a chained ``RevokedCertificateBuilder`` per
  entry), **assemble** (the list handed to the
  ``CertificateRevocationListBuilder`` constructor) and **sign**
  (``signing.sign_crl``);
- ``chained``: like ``ctor`` but with ``add_revoked_certificate`` once per
  entry, as ``authority.build_crl`` did before issue 5. Every ``add_*``
  returns a new builder holding a copy of the list, so this is quadratic; it
  runs only up to ``--chained-max``.

Every CRL is checked: cryptography parses it, counts N entries and verifies
the signature, and ``openssl crl -CAfile issuer.pem`` says ``verify OK``
(``--no-openssl`` skips that). The figures: DER size, peak RSS of the child
(``getrusage`` maxrss) after the build, and for ``shard`` rows the lint
(``issuance.crl_lint.lint_crl``, as the CRL updater runs it) timed on its
own afterwards, bounded by ``--lint-timeout``, with the peak RSS after it.

``entries/s`` is N ÷ the build's total. ``--profile N`` runs the ``shard``
path once for N entries under cProfile and prints the top functions.

Every child runs under ``--timeout`` plus ``--lint-timeout`` seconds of wall
time. Not a test (DESIGN.md §5); the CA's own code never uses ``random``
(DESIGN.md §2), a benchmark's synthetic data may.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certmint.ca.issuance.crl import build_shard_crl, issuing_distribution_point
from certmint.ca.issuance.hierarchy import IssuerMaterial
from certmint.ca.issuance.profile import serial_to_string
from certmint.ca.issuance.signer import FileSigner
from certmint.ca.issuance.signing import sign_certificate, sign_crl
from certmint.ca.storage.records import RevokedEntry
from certmint.testing.clock import FakeClock

THIS_UPDATE = datetime(2026, 1, 1, tzinfo=UTC)
SPREAD = timedelta(days=90)  # how far back revocation dates go
SERIAL_BYTES = 18  # as the CA draws them (profile.SERIAL_BYTES)
CRL_BASE = "http://ca.example.org/crl/"
CRL_URL = f"{CRL_BASE}bench/1.crl"

# RFC 5280 §5.3.1 codes with a rough Let's Encrypt-like mix; None = no
# CRLReason extension (BR 7.2.2: unspecified(0) is never encoded).
REASON_MIX: tuple[tuple[x509.ReasonFlags | None, int], ...] = (
    (None, 40),
    (x509.ReasonFlags.superseded, 30),
    (x509.ReasonFlags.cessation_of_operation, 20),
    (x509.ReasonFlags.key_compromise, 10),
)

KEYS = ("p384", "rsa2048")
MODES = ("shard", "ctor", "chained")
_REASON_CODES = {
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
}


@dataclass(frozen=True)
class Result:
    key: str
    entries: int
    mode: str
    total_s: float
    # The ctor/chained phases; None for shard (one call, timed whole).
    entries_s: float | None
    assemble_s: float | None
    sign_s: float | None
    lint_s: float | None
    lint_state: str  # "done", "absent", "over N s"
    der_bytes: int
    max_rss_mib: float
    lint_rss_mib: float
    openssl: str

    @property
    def per_second(self) -> float:
        return self.entries / self.total_s if self.total_s > 0 else 0.0


# -- one run (child process) -------------------------------------------------


def _issuer(key_name: str) -> tuple[FileSigner, x509.Certificate]:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_name == "p384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = FileSigner(key, key_id=f"bench:{key_name}")
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certmint"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"certmint CRL bench {key_name}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .serial_number(1)
        .issuer_name(name)
        .subject_name(name)
        .public_key(key.public_key())
        .not_valid_before(THIS_UPDATE - timedelta(days=365))
        .not_valid_after(THIS_UPDATE + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
    )
    return signer, sign_certificate(builder, signer)


def _entry_data(count: int, seed: int) -> list[tuple[int, datetime, x509.ReasonFlags | None]]:
    rng = random.Random(seed)
    reasons = [reason for reason, _ in REASON_MIX]
    weights = [weight for _, weight in REASON_MIX]
    spread_seconds = int(SPREAD.total_seconds())
    drawn = rng.choices(reasons, weights=weights, k=count)
    data = []
    for reason in drawn:
        serial = 0
        while serial == 0:  # RFC 5280 §4.1.2.2: positive
            serial = int.from_bytes(rng.randbytes(SERIAL_BYTES), "big")
        revoked_at = THIS_UPDATE - timedelta(seconds=rng.randrange(1, spread_seconds))
        data.append((serial, revoked_at, reason))
    return data


def _revoked(
    data: list[tuple[int, datetime, x509.ReasonFlags | None]],
) -> list[x509.RevokedCertificate]:
    out = []
    for serial, revoked_at, reason in data:
        builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at)
        if reason is not None:
            builder = builder.add_extension(x509.CRLReason(reason), critical=False)
        out.append(builder.build())
    return out


def _crl_builder(
    issuer: x509.Certificate, revoked: list[x509.RevokedCertificate], chained: bool
) -> x509.CertificateRevocationListBuilder:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = x509.CertificateRevocationListBuilder(revoked_certificates=[] if chained else revoked)
    builder = (
        builder.issuer_name(issuer.subject)
        .last_update(THIS_UPDATE)
        .next_update(THIS_UPDATE + timedelta(days=7))  # BR 4.9.7: at most 10 days
        .add_extension(x509.CRLNumber(1), critical=False)  # RFC 5280 §5.2.3
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        # BR 7.2.2: a sharded (partitioned) CRL carries its own URL in a
        # critical Issuing Distribution Point (RFC 5280 §5.2.5).
        .add_extension(issuing_distribution_point(CRL_URL), critical=True)
    )
    if chained:
        for entry in revoked:
            builder = builder.add_revoked_certificate(entry)
    return builder


def _crl_lint() -> Callable[[x509.CertificateRevocationList], None]:
    from certmint.ca.issuance.crl_lint import lint_crl

    return lint_crl


def _records(data: list[tuple[int, datetime, x509.ReasonFlags | None]]) -> list[RevokedEntry]:
    """The entries as ``StorageAuthority.list_revoked`` returns them."""
    return [
        RevokedEntry(serial_to_string(serial), at, None if why is None else _REASON_CODES[why])
        for serial, at, why in data
    ]


def _build_shard(
    signer: FileSigner, issuer: x509.Certificate, entries: list[RevokedEntry]
) -> x509.CertificateRevocationList:
    material = IssuerMaterial(id="bench", cert=issuer, signer=signer, chains=((issuer,),))
    der = build_shard_crl(material, 1, entries, FakeClock(THIS_UPDATE), base_url=CRL_BASE)
    return x509.load_der_x509_crl(der)


def _openssl_verify(der: bytes, issuer: x509.Certificate) -> str:
    with tempfile.TemporaryDirectory(prefix="crl-bench-") as tmp:
        crl_path, ca_path = Path(tmp) / "bench.crl", Path(tmp) / "issuer.pem"
        crl_path.write_bytes(der)
        ca_path.write_bytes(issuer.public_bytes(serialization.Encoding.PEM))
        done = subprocess.run(
            [
                *("openssl", "crl", "-inform", "DER", "-noout"),
                *("-in", str(crl_path), "-CAfile", str(ca_path)),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    said = (done.stdout + done.stderr).strip()
    return "verify OK" if done.returncode == 0 and "verify OK" in said else f"FAILED: {said}"


class _LintTimeout(Exception):
    pass


def _timed_lint(
    lint: Callable[[x509.CertificateRevocationList], None],
    crl: x509.CertificateRevocationList,
    limit: float,
) -> float | None:
    """Seconds ``lint`` took, or None when it ran past ``limit`` (the linter
    is pure Python, so SIGALRM interrupts it)."""

    def expire(signum: int, frame: object) -> None:
        raise _LintTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    started = time.perf_counter()
    try:
        lint(crl)
    except _LintTimeout:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return time.perf_counter() - started


def run_one(
    key_name: str, count: int, mode: str, seed: int, openssl: bool, lint_limit: float
) -> Result:
    signer, issuer = _issuer(key_name)
    data = _entry_data(count, seed)
    phases: tuple[float | None, float | None, float | None] = (None, None, None)
    if mode == "shard":
        entries = _records(data)
        del data
        started = time.perf_counter()
        crl = _build_shard(signer, issuer, entries)
        total = time.perf_counter() - started
        del entries
    else:
        started = time.perf_counter()
        revoked = _revoked(data)
        built = time.perf_counter()
        builder = _crl_builder(issuer, revoked, chained=mode == "chained")
        assembled = time.perf_counter()
        crl = sign_crl(builder, signer)
        signed = time.perf_counter()
        del revoked, builder, data
        total = signed - started
        phases = (built - started, assembled - built, signed - assembled)

    der = crl.public_bytes(serialization.Encoding.DER)
    parsed = x509.load_der_x509_crl(der)
    public_key = issuer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    if len(parsed) != count or not parsed.is_signature_valid(public_key):
        raise SystemExit(f"the {key_name} {mode} CRL with {count} entries does not check out")
    verdict = _openssl_verify(der, issuer) if openssl else "skipped"
    del parsed
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    # The lint is timed last, so that its memory does not count in the
    # build's peak; it has its own peak column.
    lint_s: float | None = None
    lint_state = "absent"
    lint_rss_kib = 0
    if mode == "shard":
        lint_s = _timed_lint(_crl_lint(), crl, lint_limit)
        lint_state = "done" if lint_s is not None else f"over {lint_limit:.0f} s"
        lint_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return Result(
        key=key_name,
        entries=count,
        mode=mode,
        total_s=total,
        entries_s=phases[0],
        assemble_s=phases[1],
        sign_s=phases[2],
        lint_s=lint_s,
        lint_state=lint_state,
        der_bytes=len(der),
        max_rss_mib=rss_kib / 1024,
        lint_rss_mib=lint_rss_kib / 1024,
        openssl=verdict,
    )


def profile_one(key_name: str, count: int, seed: int) -> None:
    signer, issuer = _issuer(key_name)
    entries = _records(_entry_data(count, seed))
    profiler = cProfile.Profile()
    profiler.enable()
    _build_shard(signer, issuer, entries)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(16)
    print(f"cProfile, {key_name}, {count} entries, shard mode (top by own time):")
    print(out.getvalue())


# -- the driver ----------------------------------------------------------------


def _child(key_name: str, count: int, mode: str, args: argparse.Namespace) -> Result | str:
    command = [sys.executable, __file__, "--one", f"{key_name}:{count}:{mode}"]
    command += ["--seed", str(args.seed)]
    if args.no_openssl:
        command.append("--no-openssl")
    command += ["--lint-timeout", str(args.lint_timeout)]
    limit = args.timeout + args.lint_timeout
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {limit:.0f} s"
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    return Result(**json.loads(done.stdout.strip().splitlines()[-1]))


def _row(cells: list[str]) -> str:
    widths = (7, 8, 7, 9, 10, 7, 7, 9, 7, 11, 7, 8, 12)
    pairs = enumerate(zip(cells, widths, strict=False))
    return "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in pairs)


HEADER = [
    "key",
    "entries",
    "mode",
    "entries s",
    "assemble s",
    "sign s",
    "total s",
    "entries/s",
    "DER MB",
    "DER B/entry",
    "RSS MiB",
    "lint s",
    "lint RSS MiB",
]


def _format(result: Result) -> str:
    return _row(
        [
            result.key,
            str(result.entries),
            result.mode,
            _seconds(result.entries_s),
            _seconds(result.assemble_s),
            _seconds(result.sign_s),
            f"{result.total_s:.2f}",
            f"{result.per_second:,.0f}",
            f"{result.der_bytes / 1e6:.2f}",
            f"{result.der_bytes / result.entries:.1f}",
            f"{result.max_rss_mib:.0f}",
            _lint_cell(result),
            f"{result.lint_rss_mib:.0f}" if result.lint_state != "absent" else "-",
        ]
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _lint_cell(result: Result) -> str:
    if result.lint_s is not None:
        return f"{result.lint_s:.2f}"
    return "-" if result.lint_state == "absent" else result.lint_state


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if not sizes or any(size < 1 or size > 10_000_000 for size in sizes):
        raise argparse.ArgumentTypeError("counts are between 1 and 10,000,000")
    return sizes


def _keys(text: str) -> list[str]:
    keys = [part.strip() for part in text.split(",") if part.strip()]
    if not keys or any(key not in KEYS for key in keys):
        raise argparse.ArgumentTypeError(f"keys are among {', '.join(KEYS)}")
    return keys


def _modes(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    if not modes or any(mode not in MODES for mode in modes):
        raise argparse.ArgumentTypeError(f"modes are among {', '.join(MODES)}")
    return modes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=_sizes, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--keys", type=_keys, default=["p384"], help="p384, rsa2048")
    parser.add_argument("--modes", type=_modes, default=list(MODES), help=", ".join(MODES))
    parser.add_argument(
        "--chained-max", type=int, default=100_000, help="largest size run in chained mode"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=int, metavar="N", help="cProfile one run of N entries")
    parser.add_argument("--no-openssl", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per build")
    parser.add_argument(
        "--lint-timeout", type=float, default=600.0, help="seconds the lint may take per run"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # KEY:N:MODE, the child's job
    args = parser.parse_args()

    if args.one:
        key_name, count, mode = args.one.split(":")
        result = run_one(
            key_name, int(count), mode, args.seed, not args.no_openssl, args.lint_timeout
        )
        print(json.dumps(asdict(result)))
        return 0
    if args.profile:
        profile_one(args.keys[0], args.profile, args.seed)
        return 0

    print(f"CRL bench, seed {args.seed}")
    print(_row(HEADER))
    failures = 0
    for key_name in args.keys:
        for count in args.entries:
            for mode in args.modes:
                if mode == "chained" and count > args.chained_max:
                    continue
                outcome = _child(key_name, count, mode, args)
                if isinstance(outcome, str):
                    failures += 1
                    print(_row([key_name, str(count), mode]) + f"  FAILED: {outcome}")
                    continue
                print(_format(outcome), flush=True)
                if outcome.openssl not in ("verify OK", "skipped"):
                    failures += 1
                    print(f"  openssl: {outcome.openssl}")
    if not args.no_openssl and not failures:
        print("every CRL parsed, listed every entry and verified (cryptography and openssl crl)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
