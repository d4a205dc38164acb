"""pkilint (the CA/B Forum's reference linter) on what the CA issues: no ERROR, no WARNING."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from certmint.ca.issuance.authority import CertificateAuthority
from certmint.ca.issuance.crl import FULL_CRL, build_shard_crl
from certmint.ca.issuance.hierarchy import Hierarchy, IssuerMaterial
from certmint.ca.storage.records import RevokedEntry
from certmint.testing.clock import FakeClock

from .issuance_support import CRL_BASE

BLOCKING = {"FATAL", "ERROR", "WARNING"}


def _run_linter(module: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    # The pkilint console scripts, run with this interpreter so the test does
    # not depend on PATH.
    code = f"import sys; from pkilint.bin.{module} import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _findings(output: str) -> list[dict[str, Any]]:
    results = json.loads(output)["results"]
    return [
        {"validator": r["validator"], "node": r["node_path"], **finding}
        for r in results
        for finding in r["finding_descriptions"]
    ]


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    findings = _findings(result.stdout)
    blocking = [f for f in findings if f["severity"] in BLOCKING]
    report = "\n".join(json.dumps(f) for f in findings) + "\n" + result.stderr
    # The exit status counts findings of any severity (NOTICE included), so
    # judge by severity; a crash shows up as unparsable output above.
    assert not blocking, "pkilint findings:\n" + report


def _rsa_2048() -> CertificatePublicKeyTypes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()


def _p256() -> CertificatePublicKeyTypes:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def _p384() -> CertificatePublicKeyTypes:
    return ec.generate_private_key(ec.SECP384R1()).public_key()


@pytest.mark.parametrize("make_key", [_p256, _p384, _rsa_2048], ids=["p256", "p384", "rsa2048"])
def test_leaf_is_pkilint_clean(tmp_path: Path, ca: CertificateAuthority, make_key: Any) -> None:
    issued = ca.issue(
        public_key=make_key(),
        dns_names=["www.example.com", "example.com", "*.example.org"],
        # A public address: pkilint rightly reports documentation and private
        # ranges (192.0.2.0/24, 10/8, ...) as internal IP addresses.
        ip_addresses=["9.9.9.9"] if make_key is _p384 else (),
    )
    cert = x509.load_der_x509_certificate(issued.der)
    path = tmp_path / "leaf.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    result = _run_linter(
        "lint_cabf_serverauth_cert", ["lint", "-d", "-o", "-s", "ALL", "-f", "JSON", str(path)]
    )
    # -o prints the detected type: the reserved DV policy OID must be recognised.
    assert "DV-FINAL-CERTIFICATE" in result.stderr, result.stderr
    _assert_clean(result)


def test_short_lived_leaf_is_pkilint_clean(tmp_path: Path, ca: CertificateAuthority) -> None:
    issued = ca.issue(public_key=_p256(), dns_names=["a.example.com"], validity=timedelta(days=6))
    path = tmp_path / "short.der"
    path.write_bytes(issued.der)
    _assert_clean(
        _run_linter(
            "lint_cabf_serverauth_cert",
            ["lint", "-t", "DV-FINAL-CERTIFICATE", "-s", "ALL", "-f", "JSON", str(path)],
        )
    )


@pytest.mark.parametrize("profile", ["BR", "PKIX"])
def test_crl_is_pkilint_clean(
    tmp_path: Path, ca: CertificateAuthority, hierarchy: Hierarchy, clock: FakeClock, profile: str
) -> None:
    # A shard CRL (with its IDP, BR 7.2.2) and the complete CRL (no IDP).
    e1 = hierarchy.issuers[0]
    revoked = [
        RevokedEntry(ca.issue(public_key=_p256(), dns_names=["a.example"]).serial, clock.now(), 1),
        RevokedEntry(ca.issue(public_key=_p256(), dns_names=["b.example"]).serial, clock.now(), 0),
        RevokedEntry(ca.issue(public_key=_p256(), dns_names=["c.example"]).serial, clock.now(), 4),
    ]
    clock.advance(30)
    path = tmp_path / "e1.crl"
    path.write_bytes(build_shard_crl(e1, 3, revoked, clock, base_url=CRL_BASE))
    _assert_clean(
        _run_linter(
            "lint_crl", ["lint", "-t", "CRL", "-p", profile, "-s", "ALL", "-f", "JSON", str(path)]
        )
    )
    _assert_clean(
        _run_linter(
            "lint_crl",
            [
                "lint",
                "-t",
                "CRL",
                "-p",
                profile,
                "-s",
                "ALL",
                "-f",
                "JSON",
                str(_write_empty_crl(tmp_path, e1, clock)),
            ],
        )
    )


def _write_empty_crl(tmp_path: Path, issuer: IssuerMaterial, clock: FakeClock) -> Path:
    path = tmp_path / "empty.crl"
    path.write_bytes(build_shard_crl(issuer, FULL_CRL, [], clock, base_url=CRL_BASE))
    return path


# The dev intermediates are created before the CA knows its public URLs, and
# the dev roots' CRLs (ARLs) are not published, so E1 and its cross-certificate
# carry neither a CRL distribution point nor AIA — as Pebble's intermediates.
# Pin exactly these findings so that anything new fails the test.
KNOWN_INTERMEDIATE_FINDINGS = {
    ("ERROR", "cabf.serverauth.ca.crl_distribution_points_extension_absent"),
    ("WARNING", "cabf.serverauth.ca.authority_info_access_extension_absent"),
}


def test_dev_hierarchy_lints_as_expected(tmp_path: Path, hierarchy: Hierarchy) -> None:
    for index, root in enumerate(hierarchy.roots):
        path = tmp_path / f"root{index}.pem"
        path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
        result = _run_linter(
            "lint_cabf_serverauth_cert", ["lint", "-d", "-o", "-s", "ALL", "-f", "JSON", str(path)]
        )
        assert "ROOT-CA" in result.stderr, result.stderr
        _assert_clean(result)
    for index, (cert,) in enumerate(hierarchy.issuers[0].chains):
        path = tmp_path / f"intermediate{index}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        result = _run_linter(
            "lint_cabf_serverauth_cert", ["lint", "-d", "-o", "-s", "ALL", "-f", "JSON", str(path)]
        )
        assert "TLS-CA" in result.stderr, result.stderr
        findings = _findings(result.stdout)
        blocking = {(f["severity"], f["code"]) for f in findings if f["severity"] in BLOCKING}
        assert blocking == KNOWN_INTERMEDIATE_FINDINGS, json.dumps(findings, indent=1)
