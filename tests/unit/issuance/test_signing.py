"""Lint before sign (issue 5): the throwaway-key draft is what gets linted,
the signer signs exactly its TBS bytes, and nothing reaches the signer when
lint refuses."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import NameOID

from certmint.ca.issuance.signer import FileSigner, SignatureHash, SignerError
from certmint.ca.issuance.signing import LintError, SigningError, sign_certificate, sign_crl

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ISSUER = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Signing Test CA")])

KEYS = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


class CountingSigner:
    """A FileSigner that counts calls and can misbehave."""

    def __init__(self, inner: FileSigner, *, corrupt: bool = False, fail: bool = False) -> None:
        self.inner = inner
        self.calls: list[bytes] = []
        self.corrupt = corrupt
        self.fail = fail

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
        self.calls.append(tbs)
        if self.fail:
            raise SignerError("token removed")
        signature = self.inner.sign(tbs)
        return signature[:-1] + bytes([signature[-1] ^ 1]) if self.corrupt else signature


def self_signed_ca(signer: FileSigner) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(ISSUER)
        .issuer_name(ISSUER)
        .public_key(signer.public_key)
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer.public_key), False)
    )
    return sign_certificate(builder, signer)


def leaf_builder(issuer: x509.Certificate, serial: int = 7) -> x509.CertificateBuilder:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.com")]), True)
    )


@pytest.fixture(params=sorted(KEYS))
def signer(request: pytest.FixtureRequest) -> FileSigner:
    return FileSigner(KEYS[request.param](), key_id=f"test:{request.param}")


def test_signed_certificate_verifies_and_carries_the_linted_tbs(signer: FileSigner) -> None:
    ca = self_signed_ca(signer)
    ca.verify_directly_issued_by(ca)
    seen: list[x509.Certificate] = []
    cert = sign_certificate(leaf_builder(ca), signer, lint=seen.append)
    cert.verify_directly_issued_by(ca)
    assert len(seen) == 1 and seen[0].tbs_certificate_bytes == cert.tbs_certificate_bytes
    # The draft was signed by another key: only the real one verifies.
    with pytest.raises(Exception):  # noqa: B017 - cryptography raises InvalidSignature
        seen[0].verify_directly_issued_by(ca)
    assert isinstance(cert.signature_hash_algorithm, type(signer.hash_algorithm))


def test_openssl_accepts_the_spliced_certificate(signer: FileSigner, tmp_path: Path) -> None:
    ca = self_signed_ca(signer)
    leaf = sign_certificate(leaf_builder(ca), signer)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "verify", "-no_check_time", "-CAfile", str(tmp_path / "ca.pem"),
         str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_refusal_means_the_signer_is_never_called() -> None:
    spy = CountingSigner(FileSigner(KEYS["p256"](), key_id="spy"))
    ca = self_signed_ca(spy.inner)

    def refuse(draft: x509.Certificate) -> None:
        raise LintError("certificate", ("cabf.example_finding",))

    with pytest.raises(LintError, match=r"cabf\.example_finding"):
        sign_certificate(leaf_builder(ca), spy, lint=refuse)
    assert spy.calls == []


@pytest.mark.parametrize(("corrupt", "fail"), [(True, False), (False, True)])
def test_a_bad_or_failing_signer_never_yields_a_certificate(corrupt: bool, fail: bool) -> None:
    spy = CountingSigner(FileSigner(KEYS["p384"](), key_id="spy"), corrupt=corrupt, fail=fail)
    ca = self_signed_ca(spy.inner)
    with pytest.raises(SigningError, match="spy"):
        sign_certificate(leaf_builder(ca), spy)
    assert len(spy.calls) == 1


def test_crl_is_linted_then_signed(signer: FileSigner) -> None:
    ca = self_signed_ca(signer)
    revoked = x509.RevokedCertificateBuilder().serial_number(7).revocation_date(NOW).build()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=7))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_revoked_certificate(revoked)
    )
    seen: list[x509.CertificateRevocationList] = []
    crl = sign_crl(builder, signer, lint=seen.append)
    assert crl.is_signature_valid(signer.public_key)  # type: ignore[arg-type]
    assert seen[0].tbs_certlist_bytes == crl.tbs_certlist_bytes
    assert not seen[0].is_signature_valid(signer.public_key)  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(7) is not None


def test_large_crl_splices_long_lengths() -> None:
    """Thousands of entries: multi-octet DER lengths on the outer SEQUENCE."""
    signer = FileSigner(KEYS["p256"](), key_id="big")
    ca = self_signed_ca(signer)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=7))
    )
    for serial in range(1, 3001):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW).build()
        )
    crl = sign_crl(builder, signer)
    assert crl.is_signature_valid(signer.public_key)  # type: ignore[arg-type]
    assert len(crl) == 3000


def test_hash_follows_the_key() -> None:
    assert isinstance(FileSigner(KEYS["p384"](), "a").hash_algorithm, hashes.SHA384)
    assert isinstance(FileSigner(KEYS["p256"](), "b").hash_algorithm, hashes.SHA256)
    assert isinstance(FileSigner(KEYS["rsa2048"](), "c").hash_algorithm, hashes.SHA256)
