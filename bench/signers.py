"""Issuance rate with the file signer vs the PKCS#11 signer (SoftHSM2).

    python3 bench/signers.py [--seconds 3] [--threads 1] [--modes raw,sign,issue]
                             [--module /usr/lib/softhsm/libsofthsm2.so]

Runs the test ceremony twice in a temporary directory (``certmint.testing.
ceremony``: roots X1/X2, intermediates E7 = ECDSA P-384 and R7 = RSA 2048),
once with 0600 key files and once with every key in a fresh SoftHSM2 token,
loads each result the way ``serve --issuers-file`` does, and then, for each
(signer, intermediate), measures for ``--seconds`` each:

- ``raw``:   ``signer.sign(tbs)`` alone (plus, for PKCS#11, the same with a
             session opened, logged in and closed around every signature:
             the "session per call" design, for comparison);
- ``sign``:  ``sign_certificate`` of a fresh subscriber builder (new serial,
             key from a pool): build with the throwaway key, sign the TBS,
             splice, verify; no lint;
- ``issue``: ``CertificateAuthority.issue`` — lint (pkilint + certmint's own
             checks) then sign: what a finalize costs the CA.

Prints certs/s (or signatures/s) and ms each. ``--threads N`` runs N threads
against the same signer (PKCS#11 calls are serialised per module; see
issuance/pkcs11.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from certmint.ca.ceremony.config import load_ceremony_config
from certmint.ca.ceremony.keys import spec_of
from certmint.ca.ceremony.steps import Ceremony
from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.configured import load_configured_hierarchy
from certmint.ca.issuance.hierarchy import Hierarchy, IssuerMaterial
from certmint.ca.issuance.pkcs11 import Pkcs11Signer, release_modules
from certmint.ca.issuance.profile import new_serial, subscriber_certificate_builder
from certmint.ca.issuance.signing import sign_certificate
from certmint.runtime import SystemClock, SystemEntropy
from certmint.testing.ceremony import ONLINE_PIN, ONLINE_TOKEN, write_ceremony
from certmint.testing.softhsm import SoftHsm, softhsm_session

BASE = "http://ca.bench.example.com/"


def measure(seconds: float, threads: int, operation: Callable[[int], None]) -> tuple[int, float]:
    """Run ``operation(n)`` back to back in ``threads`` threads for ``seconds``."""
    for n in range(5):  # warm up: lint tables, lint keys, sessions
        operation(n - 5)
    stop = time.monotonic() + seconds
    counts = [0] * threads
    errors: list[BaseException] = []

    def work(index: int) -> None:
        n = 0
        try:
            while time.monotonic() < stop:
                operation(index * 1_000_000 + n)
                n += 1
        except BaseException as exc:  # reported below, the bench stops
            errors.append(exc)
        counts[index] = n

    started = time.monotonic()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=seconds + 120)
    elapsed = time.monotonic() - started
    if errors:
        raise SystemExit(f"bench/signers.py: {type(errors[0]).__name__}: {errors[0]}")
    return sum(counts), elapsed


def ceremony_hierarchy(directory: Path, hsm: SoftHsm | None) -> Hierarchy:
    clock, entropy = SystemClock(), SystemEntropy()
    files = write_ceremony(directory / "ceremony", hsm=hsm)
    Ceremony(load_ceremony_config(files.config), clock, entropy, report=lambda _l: None).run()
    return load_configured_hierarchy(files.issuers_file, directory / "data", clock, entropy)


def rows_for(
    label: str,
    issuer: IssuerMaterial,
    hierarchy: Hierarchy,
    args: argparse.Namespace,
    module: str | None,
) -> list[tuple[str, str, int, float]]:
    clock, entropy = SystemClock(), SystemEntropy()
    keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(32)]
    rows: list[tuple[str, str, int, float]] = []
    name = f"{label} {issuer.id} {spec_of(issuer.signer.public_key)}"
    modes = args.modes.split(",")
    if "raw" in modes:
        tbs = b"x" * 600  # about a leaf's TBSCertificate
        rows.append(
            (
                name,
                "raw sign",
                *measure(args.seconds, args.threads, lambda _n: issuer.signer.sign(tbs)),
            )
        )
        if module is not None and args.threads == 1:
            rows.append(
                (name, "raw, session per call", *session_per_call(args, module, issuer, tbs))
            )
    if "sign" in modes:
        now = clock.now()

        def sign_one(n: int) -> None:
            builder = subscriber_certificate_builder(
                issuer_cert=issuer.cert,
                public_key=keys[n % len(keys)],
                serial=new_serial(entropy),
                dns_names=[f"n{n + 5}.bench.example.com"],
                ip_addresses=(),
                not_before=now - timedelta(hours=1),
                not_after=now + timedelta(days=90) - timedelta(hours=1, seconds=1),
                aia_issuer_url=f"{BASE}{issuer.id}.der",
                crl_url=f"{BASE}{issuer.id}.crl",
            )
            sign_certificate(builder, issuer.signer)

        rows.append((name, "sign_certificate", *measure(args.seconds, args.threads, sign_one)))
    if "issue" in modes:
        only = replace(hierarchy, issuers=(issuer,))
        ca = CertificateAuthority(
            only, IssuanceConfig(crl_base_url=BASE, aia_base_url=BASE), clock, entropy
        )

        def issue_one(n: int) -> None:
            ca.issue(public_key=keys[n % len(keys)], dns_names=[f"n{n + 5}.bench.example.com"])

        rows.append((name, "CA.issue (lint+sign)", *measure(args.seconds, args.threads, issue_one)))
    return rows


def session_per_call(
    args: argparse.Namespace, module: str, issuer: IssuerMaterial, tbs: bytes
) -> tuple[int, float]:
    """Open a session, log in, find the key, sign, close: every time."""
    import hashlib

    import pkcs11
    from pkcs11 import Mechanism, ObjectClass

    assert isinstance(issuer.signer, Pkcs11Signer)
    release_modules()  # no other session may hold the login
    token = pkcs11.lib(module).get_token(token_label=ONLINE_TOKEN)
    is_ec = isinstance(issuer.signer.public_key, ec.EllipticCurvePublicKey)
    digest = hashlib.sha384(tbs).digest()

    def once(_n: int) -> None:
        with token.open(user_pin=ONLINE_PIN) as session:
            key = session.get_key(ObjectClass.PRIVATE_KEY, label=issuer.id)
            if is_ec:
                key.sign(digest, mechanism=Mechanism.ECDSA)
            else:
                key.sign(tbs, mechanism=Mechanism.SHA256_RSA_PKCS)

    result = measure(args.seconds, 1, once)
    pkcs11.unload(module)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", default="raw,sign,issue")
    args = parser.parse_args()
    rows: list[tuple[str, str, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="certmint-bench-signers-") as tmp:
        base = Path(tmp)
        files_hierarchy = ceremony_hierarchy(base / "file", None)
        for issuer in files_hierarchy.issuers:
            rows += rows_for("file", issuer, files_hierarchy, args, None)
        with softhsm_session(base / "softhsm") as hsm:
            hsm_hierarchy = ceremony_hierarchy(base / "pkcs11", hsm)
            for issuer in hsm_hierarchy.issuers:
                rows += rows_for("pkcs11", issuer, hsm_hierarchy, args, hsm.module_path)
    print(f"{args.seconds:g} s per row, {args.threads} thread(s)")
    print(f"{'signer / issuer':<28} {'operation':<24} {'count':>7} {'per s':>9} {'ms each':>8}")
    for name, operation, count, elapsed in rows:
        rate = count / elapsed if elapsed else 0.0
        each = 1000.0 * elapsed * args.threads / count if count else float("nan")
        print(f"{name:<28} {operation:<24} {count:>7} {rate:>9.1f} {each:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
