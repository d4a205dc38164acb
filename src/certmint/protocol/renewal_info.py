"""RFC 9773 certificate identifiers, shared by the CA (``renewalInfo``,
``replaces`` checks) and the agent (which sends them).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from certmint.protocol.b64 import b64url_decode, b64url_encode

# RFC 5280 §4.1.2.2: a serial is at most 20 octets; its DER content may need
# one more, the leading zero that keeps a high-bit serial positive.
MAX_SERIAL_OCTETS = 21
# RFC 5280 §4.2.1.2 suggests 20-octet key identifiers; allow generous room
# but bound what a hostile path can make us decode.
MAX_KEY_IDENTIFIER_OCTETS = 64
# Unpadded base64url of both parts and the dot: anything longer is refused
# before decoding.
MAX_CERT_ID_CHARS = (4 * MAX_KEY_IDENTIFIER_OCTETS + 2) // 3 + 1 + (4 * MAX_SERIAL_OCTETS + 2) // 3


@dataclass(frozen=True)
class CertId:
    """A parsed RFC 9773 §4.1 certificate identifier."""

    key_identifier: bytes  # the AKI keyIdentifier
    serial: int  # positive


def _serial_der_content(serial: int) -> bytes:
    """The content octets of the DER INTEGER for a positive serial: minimal
    big-endian two's complement, so a leading zero octet iff the high bit is
    set (X.690 §8.3.2; RFC 9773 §4.1's example encodes 0x87654321 as
    ``AIdlQyE``)."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


def encode_cert_id(key_identifier: bytes, serial: int) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(DER serial content), unpadded."""
    if serial <= 0:
        raise ValueError("certificate serials are positive")
    return f"{b64url_encode(key_identifier)}.{b64url_encode(_serial_der_content(serial))}"


def cert_id_of(cert: x509.Certificate) -> str:
    """The certificate identifier of a certificate; ValueError without an AKI
    keyIdentifier (RFC 9773 §4.1: then the client must not ask)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise ValueError("certificate has no Authority Key Identifier") from None
    if aki.key_identifier is None:
        raise ValueError("certificate's Authority Key Identifier has no keyIdentifier")
    return encode_cert_id(aki.key_identifier, cert.serial_number)


def parse_cert_id(text: str) -> CertId:
    """Parse a certificate identifier strictly; ValueError says what is wrong.

    RFC 9773 §4.1: both parts are unpadded base64url; the serial part is the
    DER INTEGER's content octets. Exactly one spelling is accepted for each
    certificate (canonical base64url, minimal INTEGER encoding), so a
    ``replaces`` value cannot name one certificate in two ways.
    """
    if len(text) > MAX_CERT_ID_CHARS:
        raise ValueError("certificate identifier is too long")
    parts = text.split(".")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError('certificate identifier must be "<keyIdentifier>.<serial>"')
    key_identifier = b64url_decode(parts[0])
    serial_octets = b64url_decode(parts[1])
    if len(key_identifier) > MAX_KEY_IDENTIFIER_OCTETS:
        raise ValueError("key identifier is too long")
    if len(serial_octets) > MAX_SERIAL_OCTETS:
        raise ValueError("serial is longer than 20 octets")
    if serial_octets[0] & 0x80:
        # A DER INTEGER with its high bit set is negative: the encoder left
        # out the leading zero octet that RFC 9773 §4.1 requires.
        raise ValueError("serial encodes a negative INTEGER (missing leading zero octet)")
    if len(serial_octets) > 1 and serial_octets[0] == 0 and not serial_octets[1] & 0x80:
        raise ValueError("serial INTEGER is not minimally encoded (X.690 §8.3.2)")
    serial = int.from_bytes(serial_octets, "big")
    if serial == 0:
        raise ValueError("serial is zero")
    return CertId(key_identifier=key_identifier, serial=serial)
