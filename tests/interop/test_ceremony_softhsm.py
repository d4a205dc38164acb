"""Issue 5, acceptance 1: a key ceremony in SoftHSM2, then lego and certbot against it.

A ceremony file with every key in SoftHSM2 (the roots on an "offline" token,
the intermediates on an "online" one) is run twice with ``certmint-ca
ceremony run``: the first run makes two roots, an ECDSA P-384 and an RSA 2048
intermediate, their cross-signs by the second root and the first root's CA
CRL; the second finds every step already done and changes nothing; the audit
log records both runs. ``certmint-ca serve --issuers-file`` then issues from
the HSM-held intermediates: lego obtains a certificate whose chain
``openssl verify`` accepts against the ceremony's root, and certbot's
``--preferred-chain`` picks the cross-signed chain to the other root.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certmint.ca.ceremony.audit import read_records
from certmint.ca.issuance.pkcs11 import release_modules
from certmint.testing.ceremony import ROOT_X2, CeremonyFiles, write_ceremony
from certmint.testing.harness import (
    LoopbackCA,
    assert_lint_clean,
    dns_names,
    openssl_verify,
    program_path,
    running_ca,
    split_pem_bundle,
)
from certmint.testing.softhsm import SoftHsm, create_softhsm

from .conftest import PUBLIC_MANAGEMENT_BASE_URL, call_failed
from .test_certbot import run_certbot
from .test_lego import run_lego

pytestmark = pytest.mark.interop

STEPS = ["x1", "x2", "e7", "r7", "e7-x2", "r7-x2", "x1-crl"]


def ceremony_run(files: CeremonyFiles, hsm: SoftHsm) -> list[str]:
    result = subprocess.run(
        [program_path("certmint-ca"), "ceremony", "run", str(files.config)],
        env={**os.environ, **hsm.env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def outputs(files: CeremonyFiles) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((files.directory / "out").iterdir())
    }


@pytest.fixture
def ceremony(tmp_path: Path) -> Iterator[tuple[SoftHsm, CeremonyFiles]]:
    release_modules()
    hsm = create_softhsm(tmp_path / "softhsm")
    yield hsm, write_ceremony(tmp_path / "ceremony", hsm=hsm)
    release_modules()


@pytest.fixture
def ceremony_ca(
    ceremony: tuple[SoftHsm, CeremonyFiles], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[LoopbackCA, CeremonyFiles]]:
    hsm, files = ceremony
    first = ceremony_run(files, hsm)
    after_first = outputs(files)
    second = ceremony_run(files, hsm)

    # Run 1 made everything; run 2 found everything done and changed nothing.
    assert sum(" generated " in line for line in first) == 4, first
    assert sum(": already done: " in line for line in second) == len(STEPS), second
    assert outputs(files) == after_first
    assert not (files.directory / "keys").exists()  # every key is in a token
    records = read_records(files.audit_log)
    assert [r["event"] for r in records] == (["start"] + ["step"] * len(STEPS) + ["finish"]) * 2
    steps = [r for r in records if r["event"] == "step"]
    assert [r["status"] for r in steps] == ["done"] * len(STEPS) + ["already done"] * len(STEPS)
    assert len({r["run"] for r in records}) == 2

    serve_args = (
        "--issuers-file", str(files.issuers_file),
        "--management-base-url", PUBLIC_MANAGEMENT_BASE_URL,
    )  # fmt: skip
    with running_ca(tmp_path / "ca", serve_args=serve_args, env=hsm.env) as ca:
        yield ca, files
        if call_failed(request):
            from certmint.testing.harness import print_logs

            print_logs(ca)


def _issuer_of(leaf: x509.Certificate, files: CeremonyFiles) -> str:
    for name in ("e7", "r7"):
        intermediate = x509.load_pem_x509_certificate(files.out(f"{name}.pem").read_bytes())
        if leaf.issuer == intermediate.subject:
            leaf.verify_directly_issued_by(intermediate)
            return name
    raise AssertionError(f"{leaf.issuer.rfc4514_string()} is not a ceremony intermediate")


def test_ceremony_in_softhsm_then_lego_and_certbot(
    ceremony_ca: tuple[LoopbackCA, CeremonyFiles], tmp_path: Path
) -> None:
    ca, files = ceremony_ca
    root_x1 = files.out("root-x1.pem")
    root_x2 = files.out("root-x2.pem")
    # The CA serves the ceremony's root as its default.
    assert ca.root_pem_path.read_bytes() == root_x1.read_bytes()

    # lego: the default chain verifies against the ceremony root.
    names = ["ceremony-lego.interop.example.com"]
    certificates = run_lego(ca, tmp_path / "lego", names)
    bundle = split_pem_bundle((certificates / f"{names[0]}.crt").read_bytes())
    leaf_path = certificates / "leaf.pem"
    leaf_path.write_bytes(bundle[0])
    openssl_verify(root_x1, leaf_path, certificates / f"{names[0]}.issuer.crt")
    assert dns_names(bundle[0]) == set(names)
    assert _issuer_of(x509.load_pem_x509_certificate(bundle[0]), files) in ("e7", "r7")
    assert_lint_clean(leaf_path)

    # certbot --preferred-chain: the cross-signed chain, ending at root X2.
    home = tmp_path / "certbot"
    name = "ceremony-certbot.interop.example.com"
    run_certbot(
        ca,
        home,
        "certonly",
        "--standalone",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--http-01-port", str(ca.http01_port),
        "--http-01-address", "127.0.0.1",
        "--preferred-chain", ROOT_X2,
        "-d", name,
    )  # fmt: skip
    live = home / "config" / "live" / name
    chain = x509.load_pem_x509_certificates((live / "chain.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    issuer = _issuer_of(leaf, files)
    cross = x509.load_pem_x509_certificate(files.out(f"{issuer}-cross-x2.pem").read_bytes())
    assert chain == [cross]
    assert chain[-1].issuer == x509.load_pem_x509_certificate(root_x2.read_bytes()).subject
    openssl_verify(root_x2, live / "cert.pem", live / "chain.pem")
