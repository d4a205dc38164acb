"""Certificate signing requests and PEM chains (RFC 2986, RFC 8555 §7.4, RFC 7468).

``parse_csr`` turns hostile DER into facts the RA can check against an order;
it decides nothing about policy beyond "this is a CSR signed by its own key".
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from certmint.protocol.jwk import PublicKey

_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_SAN_TYPE_NAMES: dict[type[x509.GeneralName], str] = {
    x509.RFC822Name: "rfc822Name",
    x509.UniformResourceIdentifier: "uniformResourceIdentifier",
    x509.DirectoryName: "directoryName",
    x509.RegisteredID: "registeredID",
    x509.OtherName: "otherName",
}
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.*?)-----END CERTIFICATE-----", re.DOTALL)


class CSRError(ValueError):
    """A CSR that does not parse, or whose self-signature does not verify."""


@dataclass(frozen=True)
class ParsedCSR:
    der: bytes
    public_key: PublicKey
    dns_names: tuple[str, ...]  # as written in the CSR; the RA normalises
    ip_addresses: tuple[str, ...]
    common_name: str | None
    other_san_types: tuple[str, ...]
    has_other_extensions: tuple[str, ...]  # dotted OIDs of non-SAN extensions


def parse_csr(der: bytes) -> ParsedCSR:
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise CSRError(f"CSR does not parse as DER PKCS#10: {exc}") from None
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CSRError(f"CSR public key cannot be read: {exc}") from None
    if not isinstance(
        public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    ):
        raise CSRError(f"CSR key type {type(public_key).__name__} is not supported")
    # RFC 2986 §4.2: the signature proves possession of the private key.
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CSRError(f"CSR signature cannot be checked: {exc}") from None
    if not signature_ok:
        raise CSRError("CSR signature does not verify with the CSR's own public key")
    try:
        extensions = list(csr.extensions)
        cn_attributes = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CSRError(f"CSR extensions or subject are malformed: {exc}") from None

    if len(cn_attributes) > 1:
        raise CSRError("CSR subject has more than one common name")
    common_name: str | None = None
    if cn_attributes:
        value = cn_attributes[0].value
        if not isinstance(value, str):
            raise CSRError("CSR common name is not a string")
        common_name = value

    dns_names: list[str] = []
    ip_addresses: list[str] = []
    other_san_types: list[str] = []
    other_extensions: list[str] = []
    for ext in extensions:
        if ext.oid != ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            other_extensions.append(ext.oid.dotted_string)
            continue
        san = ext.value
        if not isinstance(san, x509.SubjectAlternativeName):  # pragma: no cover
            raise CSRError("CSR subjectAltName extension is malformed")
        for general_name in san:
            if isinstance(general_name, x509.DNSName):
                dns_names.append(general_name.value)
            elif isinstance(general_name, x509.IPAddress):
                ip_addresses.append(str(general_name.value))
            else:
                other_san_types.append(_SAN_TYPE_NAMES.get(type(general_name), "unknown"))
    return ParsedCSR(
        der=bytes(der),
        public_key=public_key,
        dns_names=tuple(dns_names),
        ip_addresses=tuple(ip_addresses),
        common_name=common_name,
        other_san_types=tuple(other_san_types),
        has_other_extensions=tuple(other_extensions),
    )


def describe_key(key: PublicKey) -> tuple[str, int | str]:
    """A short description for policy checks and messages."""
    if isinstance(key, rsa.RSAPublicKey):
        return ("RSA", key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ("ECDSA", _CURVE_NAMES.get(key.curve.name, key.curve.name))
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("Ed25519", "")
    raise ValueError(f"unsupported key type {type(key).__name__}")


def pem_encode_certificates(ders: Sequence[bytes]) -> str:
    """RFC 7468 §5 strict encoding: 64-column base64, one block per certificate
    (RFC 8555 §9.1 application/pem-certificate-chain)."""
    blocks = []
    for der in ders:
        b64 = base64.b64encode(der).decode("ascii")
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        blocks.append(
            "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
        )
    return "".join(blocks)


def split_pem_chain(text: str) -> list[bytes]:
    """DER of every CERTIFICATE block in order; text between blocks is
    ignored (RFC 7468 §5.2 explanatory text). ``ValueError`` on bad base64."""
    ders: list[bytes] = []
    for match in _PEM_CERT.finditer(text):
        body = "".join(match.group(1).split())
        try:
            ders.append(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"PEM certificate block is not valid base64: {exc}") from None
    return ders
