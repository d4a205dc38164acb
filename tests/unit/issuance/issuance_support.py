"""Helpers shared by the issuance tests (importable; conftest.py holds the fixtures)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from certmint.ca.issuance.signer import SignatureHash, Signer
from certmint.testing.entropy import SeededEntropy

START = datetime(2026, 1, 1, tzinfo=UTC)
# Public-looking URLs: pkilint (rightly) reports loopback addresses in AIA/CRL
# URLs as internal names, which is not what these tests are about.
CRL_BASE = "http://ca.example.org/crl/"
AIA_BASE = "http://ca.example.org/aia/"


class SpySigner:
    """A Signer that counts what it is asked to sign."""

    def __init__(self, inner: Signer) -> None:
        self.inner = inner
        self.signed: list[bytes] = []

    @property
    def key_id(self) -> str:
        return self.inner.key_id

    @property
    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self.inner.public_key

    @property
    def hash_algorithm(self) -> SignatureHash:
        return self.inner.hash_algorithm

    def sign(self, tbs: bytes) -> bytes:
        self.signed.append(tbs)
        return self.inner.sign(tbs)


class RecordingEntropy(SeededEntropy):
    """Seeded entropy that remembers every token_bytes draw."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.draws: list[bytes] = []

    def token_bytes(self, n: int) -> bytes:
        data = super().token_bytes(n)
        self.draws.append(data)
        return data


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_text("".join(pem_of(cert) for cert in certs))
    return path


def openssl(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=30, check=False
    )


def openssl_verify(
    *,
    ca_file: Path,
    leaf: Path,
    untrusted: Path | None = None,
    at: datetime,
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` at a fixed time (the fake clock's), so expiry never flakes."""
    args = ["verify", "-attime", str(int(at.timestamp())), "-CAfile", str(ca_file)]
    if untrusted is not None:
        args += ["-untrusted", str(untrusted)]
    return openssl([*args, *extra, str(leaf)])
