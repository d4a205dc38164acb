from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from certmint.protocol.challenges import tls_alpn01_certificate
from certmint.protocol.csr import (
    CSRError,
    describe_key,
    parse_csr,
    pem_encode_certificates,
    split_pem_chain,
)
from certmint.protocol.jwk import generate_private_key, public_keys_equal


def _csr(
    key: object,
    *,
    cn: str | None = None,
    sans: list[x509.GeneralName] | None = None,
    extra: list[x509.ExtensionType] | None = None,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext in extra or []:
        builder = builder.add_extension(ext, critical=False)
    algorithm = None if "Ed25519" in type(key).__name__ else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES384", "EdDSA"])
def test_parse_good_csr(alg: str) -> None:
    key = generate_private_key(alg)
    der = _csr(
        key,
        cn="www.example.com",
        sans=[
            x509.DNSName("www.example.com"),
            x509.DNSName("example.com"),
            x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
        ],
    )
    parsed = parse_csr(der)
    assert parsed.der == der
    assert public_keys_equal(parsed.public_key, key.public_key())
    assert parsed.dns_names == ("www.example.com", "example.com")
    assert parsed.ip_addresses == ("192.0.2.1",)
    assert parsed.common_name == "www.example.com"
    assert parsed.other_san_types == ()
    assert parsed.has_other_extensions == ()


def test_parse_cn_only_csr() -> None:
    parsed = parse_csr(_csr(generate_private_key("ES256"), cn="only.example.com"))
    assert parsed.common_name == "only.example.com"
    assert parsed.dns_names == ()
    assert parsed.ip_addresses == ()


def test_parse_reports_other_sans_and_extensions() -> None:
    der = _csr(
        generate_private_key("ES256"),
        sans=[
            x509.DNSName("a.example"),
            x509.RFC822Name("a@example.com"),
            x509.UniformResourceIdentifier("https://example.com/"),
        ],
        extra=[x509.BasicConstraints(ca=True, path_length=None)],
    )
    parsed = parse_csr(der)
    assert parsed.common_name is None
    assert parsed.dns_names == ("a.example",)
    assert parsed.other_san_types == ("rfc822Name", "uniformResourceIdentifier")
    assert parsed.has_other_extensions == (ExtensionOID.BASIC_CONSTRAINTS.dotted_string,)


def test_parse_rejects_bad_signature() -> None:
    der = bytearray(_csr(generate_private_key("ES256"), sans=[x509.DNSName("a.example")]))
    # Flip a bit inside the DNS name: still parses, signature no longer holds.
    index = bytes(der).index(b"a.example")
    der[index] ^= 0x01
    with pytest.raises(CSRError, match="signature"):
        parse_csr(bytes(der))


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x00", b"not a csr at all"])
def test_parse_rejects_garbage(der: bytes) -> None:
    with pytest.raises(CSRError):
        parse_csr(der)


def test_describe_key() -> None:
    assert describe_key(generate_private_key("RS256").public_key()) == ("RSA", 2048)
    assert describe_key(generate_private_key("ES256").public_key()) == ("ECDSA", "P-256")
    assert describe_key(generate_private_key("ES384").public_key()) == ("ECDSA", "P-384")
    assert describe_key(generate_private_key("ES512").public_key()) == ("ECDSA", "P-521")
    assert describe_key(generate_private_key("EdDSA").public_key()) == ("Ed25519", "")


def test_pem_round_trip() -> None:
    certs = [tls_alpn01_certificate(f"n{i}.example", "k.t")[0] for i in range(3)]
    ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    pem = pem_encode_certificates(ders)
    assert pem.count("-----BEGIN CERTIFICATE-----\n") == 3
    assert all(len(line) <= 64 for line in pem.splitlines())
    assert pem.endswith("-----END CERTIFICATE-----\n")
    # Same bytes as cryptography's own PEM encoder.
    assert pem == "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
    assert split_pem_chain(pem) == ders
    # Explanatory text and CRLF line endings between blocks are tolerated.
    assert split_pem_chain("leaf:\r\n" + pem.replace("\n", "\r\n") + "trailer") == ders


def test_split_pem_chain_rejects_bad_base64() -> None:
    with pytest.raises(ValueError):
        split_pem_chain("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
    assert split_pem_chain("no certificates here") == []


def test_csr_error_is_value_error() -> None:
    assert issubclass(CSRError, ValueError)
