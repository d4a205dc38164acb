"""Certificates and keys for the storage tests: small, fast, distinct per call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.client.keys import key_to_pem
from certmint.client.storage import RenewalParams

START = datetime(2026, 1, 1, tzinfo=UTC)
_ISSUER_KEY = ec.generate_private_key(ec.SECP256R1())
_ISSUER_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certmint test issuer")])
_ISSUER_PEM = (
    x509.CertificateBuilder()
    .subject_name(_ISSUER_NAME)
    .issuer_name(_ISSUER_NAME)
    .public_key(_ISSUER_KEY.public_key())
    .serial_number(1)
    .not_valid_before(START - timedelta(days=365))
    .not_valid_after(START + timedelta(days=3650))
    .sign(_ISSUER_KEY, hashes.SHA256())
    .public_bytes(serialization.Encoding.PEM)
)


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    cert_pem: bytes
    chain_pem: bytes
    fullchain_pem: bytes

    def files(self) -> dict[str, bytes]:
        return {
            "key_pem": self.key_pem,
            "cert_pem": self.cert_pem,
            "chain_pem": self.chain_pem,
            "fullchain_pem": self.fullchain_pem,
        }


def issue(
    names: Sequence[str] = ("example.com",),
    *,
    not_before: datetime = START,
    days: int = 90,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(_ISSUER_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=True)
        .sign(_ISSUER_KEY, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    return Issued(key_to_pem(key), cert_pem, _ISSUER_PEM, cert_pem + _ISSUER_PEM)


def params(**changes: object) -> RenewalParams:
    base: dict[str, object] = {
        "server": "https://127.0.0.1:14000/dir",
        "account": "0123456789abcdef0123456789abcdef",
        "authenticator": "standalone",
        "domains": ("example.com",),
        "http01_port": 5002,
    }
    base.update(changes)
    return RenewalParams(**base)  # type: ignore[arg-type]
