"""The subscriber (TLS server) certificate profile: serials, key checks, the DV shape.

Shared by the issuing authority (``authority.py``) and the development
hierarchy, which issues the server's own HTTPS certificate from the same
profile (``hierarchy.py``). Every rule here cites the CA/Browser Forum
Baseline Requirements (BR, v2.x) or RFC 5280.

The ACME profiles (draft-ietf-acme-profiles; ``config.ProfileConfig``) vary
this one shape: validity, and optionally a subject commonName and, for RSA
keys, keyEncipherment (``common_name_for`` and the builder's arguments).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from certmint.runtime import Entropy

# BR 7.1: serials are non-sequential, > 0, with at least 64 bits of CSPRNG
# output. Like Boulder we draw 18 bytes (144 bits), well under RFC 5280
# §4.1.2.2's 20-octet limit even with DER's leading zero byte.
SERIAL_BYTES = 18
_SERIAL_HEX_DIGITS = SERIAL_BYTES * 2

# BR 7.1.6.1: the reserved policy identifier for domain-validated certificates.
DV_POLICY_OID = x509.ObjectIdentifier("2.23.140.1.2.1")

# BR 6.1.5: RSA moduli of at least 2048 bits, divisible by 8; we accept the
# three sizes Let's Encrypt accepts. BR 6.1.5 / 7.1.3.1.2: ECDSA on P-256/P-384.
ALLOWED_RSA_BITS = frozenset({2048, 3072, 4096})
ALLOWED_EC_CURVES = frozenset({"secp256r1", "secp384r1"})

# Let's Encrypt's limit on names per certificate.
MAX_NAMES = 100


def new_serial(entropy: Entropy) -> int:
    """A positive serial of ``SERIAL_BYTES`` random bytes (BR 7.1)."""
    # Zero has probability 2**-144; it is still not a positive integer
    # (RFC 5280 §4.1.2.2), so draw again rather than assume it away.
    for _ in range(8):
        serial = int.from_bytes(entropy.token_bytes(SERIAL_BYTES), "big")
        if serial > 0:
            return serial
    raise RuntimeError("entropy source returned zero serials repeatedly")


def serial_to_string(serial: int) -> str:
    """Lowercase hex, zero-padded to the full 18 bytes (Boulder's SerialToString)."""
    return f"{serial:0{_SERIAL_HEX_DIGITS}x}"


def truncate_to_seconds(when: datetime) -> datetime:
    """X.509 times carry whole seconds (RFC 5280 §4.1.2.5); keep records equal to the DER."""
    return when.replace(microsecond=0)


def check_subject_public_key(public_key: CertificatePublicKeyTypes) -> bool:
    """Validate a subscriber key; return True when it is RSA.

    Raises ValueError for anything outside BR 6.1.5/6.1.6 as we apply them.
    """
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size not in ALLOWED_RSA_BITS:
            raise ValueError(f"RSA key size {public_key.key_size} is not allowed")
        exponent = public_key.public_numbers().e
        # BR 6.1.6: odd, at least 3; SHOULD be in [2**16+1, 2**256-1] — we make it a MUST.
        if exponent % 2 == 0 or not (2**16 + 1 <= exponent < 2**256):
            raise ValueError("RSA public exponent is not allowed")
        return True
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ALLOWED_EC_CURVES:
            raise ValueError(f"elliptic curve {public_key.curve.name} is not allowed")
        return False
    raise ValueError(f"subject key type {type(public_key).__name__} is not allowed")


def _check_dns_name(name: str) -> str:
    # The RA and policy authority have already vetted the identifiers; this is
    # the CA's own last line (defence in depth): ASCII A-labels only, sane
    # lengths, wildcards only as the whole left-most label (BR 7.1.2.7.12).
    lowered = name.lower()
    if not lowered or len(lowered) > 253 or not lowered.isascii():
        raise ValueError(f"invalid DNS name {name!r}")
    labels = lowered.split(".")
    # An all-numeric last label is never a hostname (RFC 3696 §2); in
    # particular an IP address must be an iPAddress SAN, not a dNSName.
    if labels[-1].isdigit():
        raise ValueError(f"{name!r} is not a DNS name (IP addresses go in ip_addresses)")
    for index, label in enumerate(labels):
        if label == "*" and index == 0 and len(labels) > 2:
            continue
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            raise ValueError(f"invalid DNS name {name!r}")
        if not all(ch.isalnum() or ch == "-" for ch in label):
            raise ValueError(f"invalid DNS name {name!r}")
    return lowered


def subject_alt_names(
    dns_names: Sequence[str], ip_addresses: Sequence[str]
) -> list[x509.GeneralName]:
    """Sorted, de-duplicated SAN entries; ValueError if none or too many."""
    dns = sorted({_check_dns_name(name) for name in dns_names})
    addresses = {ipaddress.ip_address(text) for text in ip_addresses}
    ips = sorted(addresses, key=lambda address: (address.version, int(address)))
    if not dns and not ips:
        raise ValueError("a certificate needs at least one name")
    if len(dns) + len(ips) > MAX_NAMES:
        raise ValueError(f"more than {MAX_NAMES} names")
    entries: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    entries.extend(x509.IPAddress(address) for address in ips)
    return entries


# RFC 5280 Appendix A: ub-common-name is 64 characters.
_COMMON_NAME_MAX = 64


def common_name_for(dns_names: Sequence[str]) -> str | None:
    """The commonName a profile with one gets (Let's Encrypt's classic):
    the first DNS name, in the SAN's order, that fits in 64 characters;
    None when there is none (an IP-only certificate gets no CN)."""
    for name in sorted({_check_dns_name(n) for n in dns_names}):
        if len(name) <= _COMMON_NAME_MAX:
            return name
    return None


def key_usage(
    *, digital_signature: bool, key_encipherment: bool = False, signs_certificates: bool = False
) -> x509.KeyUsage:
    """A keyUsage value: the bits each profile sets, every other bit clear.
    ``signs_certificates`` is a CA's keyCertSign and cRLSign (BR 7.1.2.10.7)."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def crl_distribution_points(crl_url: str) -> x509.CRLDistributionPoints:
    """BR 7.1.2.11.2: one distributionPoint with an HTTP fullName, no reasons
    and no cRLIssuer."""
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(crl_url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def subscriber_certificate_builder(
    *,
    issuer_cert: x509.Certificate,
    public_key: CertificatePublicKeyTypes,
    serial: int,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    not_before: datetime,
    not_after: datetime,
    aia_issuer_url: str | None,
    crl_url: str | None,
    common_name: str | None = None,
    rsa_key_encipherment: bool = False,
    ocsp_url: str | None = None,
) -> x509.CertificateBuilder:
    """A Baseline-Requirements DV subscriber certificate (BR 7.1.2.7), unsigned.

    ``aia_issuer_url``/``crl_url`` may be None only for the development
    server's own certificate, which is issued before any URL is configured.
    ``common_name`` (one of ``dns_names``) and ``rsa_key_encipherment`` are
    the profile's variations; both default to the shape pkilint finds clean.
    ``ocsp_url`` is set only when the operator runs the optional OCSP
    responder (``serve --ocsp``, ``ca/ocsp.py``).
    """
    is_rsa = check_subject_public_key(public_key)
    if not_after <= not_before:
        raise ValueError("notAfter must be after notBefore")
    sans = subject_alt_names(dns_names, ip_addresses)
    if common_name is not None and x509.DNSName(common_name) not in sans:
        # BR 7.1.4.3: a subscriber CN repeats one of the SAN entries.
        raise ValueError(f"common name {common_name!r} is not one of the certificate's names")
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    # BR 7.1.2.7.2: every subject attribute is optional for DV; like Let's
    # Encrypt's tlsserver and shortlived profiles we leave the subject empty
    # by default and put the names only in the SAN.
    subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        if common_name is not None
        else x509.Name([])
    )

    builder = (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(issuer_cert.subject)
        .subject_name(subject)
        .public_key(public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # RFC 5280 §4.2.1.6: with an empty subject the SAN MUST be critical;
        # with a subject it SHOULD NOT be (pkilint: san_extension_is_critical
        # _non_empty_subject).
        .add_extension(x509.SubjectAlternativeName(sans), critical=common_name is None)
        # BR 7.1.2.7.11: digitalSignature. For RSA keys keyEncipherment is a
        # MAY, but the BR discourage setting it together with digitalSignature
        # and pkilint warns (subscriber_rsa_digitalsignature_and_keyencipherment
        # _present); TLS 1.3 and ECDHE never use RSA key transport, so, like
        # Let's Encrypt's tlsserver profile, we set digitalSignature only unless
        # the profile asks for Let's Encrypt's classic shape.
        .add_extension(
            key_usage(digital_signature=True, key_encipherment=is_rsa and rsa_key_encipherment),
            critical=True,
        )
        # BR 7.1.2.7.10: serverAuth (clientAuth MAY; Let's Encrypt dropped it).
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # BR 7.1.2.7.8: if present, cA FALSE; we mark it critical as Boulder does.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # BR 7.1.2.11.1: keyIdentifier only, equal to the issuer's SKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        # BR 7.1.2.7.9 (7.1.2.11.2 shape): the DV reserved policy, no qualifiers.
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(DV_POLICY_OID, None)]),
            critical=False,
        )
    )
    # BR 7.1.2.7.6: subjectKeyIdentifier is NOT RECOMMENDED in subscriber
    # certificates (pkilint warns: subscriber.subject_key_identifier_extension
    # _present), so it is deliberately omitted.
    # BR 7.1.2.7.7: caIssuers over plain HTTP, DER. No OCSP URL by default:
    # like Let's Encrypt since 2025, revocation is published by CRL only; an
    # operator who runs the optional responder gets id-ad-ocsp (HTTP) first.
    access = []
    if ocsp_url is not None:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
        )
    if aia_issuer_url is not None:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(aia_issuer_url),
            )
        )
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    if crl_url is not None:
        # BR 7.1.2.11.2: one distributionPoint with an HTTP fullName, no reasons
        # and no cRLIssuer. Required when there is no OCSP URL (BR 7.1.2.7).
        builder = builder.add_extension(crl_distribution_points(crl_url), critical=False)
    return builder
