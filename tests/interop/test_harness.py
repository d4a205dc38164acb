"""The loopback harness and its checks do what the interop tests rely on.

A checker that cannot fail proves nothing, so the openssl and pkilint helpers
are shown to reject a certificate that breaks the rules; the harness's other
mode (the challenge test server answering challenges) is shown to work.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.testing.harness import (
    blocking_findings,
    lint_subscriber_certificate,
    openssl_verify,
    running_ca,
)

pytestmark = pytest.mark.interop


def self_signed_leaf(path: Path) -> Path:
    """A leaf that breaks the TLS BRs: self-signed, 5 years, no SAN, no policy."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bad.example.com")])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=5 * 365))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_pkilint_helper_reports_errors_on_a_bad_leaf(tmp_path: Path) -> None:
    findings = lint_subscriber_certificate(self_signed_leaf(tmp_path / "bad.pem"))
    codes = {finding.code for finding in blocking_findings(findings)}
    assert "pkix.authority_key_identifier_extension_absent" in codes, findings


def test_openssl_helper_rejects_a_leaf_from_another_root(tmp_path: Path) -> None:
    leaf = self_signed_leaf(tmp_path / "leaf.pem")
    other_root = self_signed_leaf(tmp_path / "other.pem")
    with pytest.raises(AssertionError, match="openssl verify failed"):
        openssl_verify(other_root, leaf, None)


def test_challtestsrv_can_answer_http01_on_the_cas_port(tmp_path: Path) -> None:
    with running_ca(tmp_path / "ca", challtestsrv_answers_challenges=True) as ca:
        added = httpx.post(
            f"{ca.challtestsrv_management_url}/add-http01",
            json={"token": "harness-token", "content": "harness-token.thumbprint"},
            timeout=5,
        )
        assert added.status_code == 200, added.text
        answer = httpx.get(
            f"http://127.0.0.1:{ca.http01_port}/.well-known/acme-challenge/harness-token",
            timeout=5,
        )
        assert answer.status_code == 200
        assert answer.text == "harness-token.thumbprint"
        assert ca.root_pem_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
