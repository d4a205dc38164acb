"""The shapes of what a ceremony signs: roots, intermediates, cross-certificates, CA CRLs.

Builders only: nothing here signs. ``steps.py`` hands each builder to
``signing.sign_certificate``/``sign_crl`` with a lint hook, so every
signature by a CA key is of something pkilint has passed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from certmint.ca.ceremony.config import RevokedConfig, SubjectConfig
from certmint.ca.issuance.profile import DV_POLICY_OID, crl_distribution_points, key_usage

_REASONS = {
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}


def ca_name(subject: SubjectConfig) -> x509.Name:
    # BR 7.1.2.10.2: countryName, organizationName, commonName, in that order.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, subject.country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject.organization),
            x509.NameAttribute(NameOID.COMMON_NAME, subject.common_name),
        ]
    )


def validity(not_before: datetime, days: int) -> tuple[datetime, datetime]:
    # RFC 5280 §4.1.2.5 counts both ends: a span of N days ends one second early.
    return not_before, not_before + timedelta(days=days) - timedelta(seconds=1)


def _key_usage(*, digital_signature: bool) -> x509.KeyUsage:
    # BR 7.1.2.10.7: keyCertSign and cRLSign, critical. digitalSignature is
    # set on intermediates, which may sign OCSP responses directly (as Let's
    # Encrypt's do), and left off roots, which sign only certificates and CRLs.
    return key_usage(digital_signature=digital_signature, signs_certificates=True)


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def root_builder(
    subject: SubjectConfig,
    public_key: CertificateIssuerPublicKeyTypes,
    serial: int,
    not_before: datetime,
    days: int,
) -> x509.CertificateBuilder:
    """A self-signed root per BR 7.1.2.1 (ISRG Root X2's shape)."""
    name = ca_name(subject)
    start, end = validity(not_before, days)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    return (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(name)
        .subject_name(name)
        .public_key(public_key)
        .not_valid_before(start)
        .not_valid_after(end)
        # BR 7.1.2.1.2: cA TRUE, critical; pathLenConstraint NOT RECOMMENDED.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=False), critical=True)
        .add_extension(ski, critical=False)
        # BR 7.1.2.1.3: authorityKeyIdentifier, when present, equals the SKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )


def _subordinate(
    builder: x509.CertificateBuilder,
    issuer_cert: x509.Certificate,
    crl_url: str,
    ca_issuers_url: str,
) -> x509.CertificateBuilder:
    """What BR 7.1.2.2 (cross) and 7.1.2.6 (TLS subordinate) share."""
    return (
        builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer_cert)),
            critical=False,
        )
        # BR 7.1.2.10.3: caIssuers over HTTP; no OCSP URL (BR 7.1.2.10.3 makes
        # it optional, and the roots publish CRLs, BR 7.1.2.11.2).
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(ca_issuers_url),
                    )
                ]
            ),
            critical=False,
        )
        # BR 7.1.2.11.2: one distribution point, fullName an http URL, where
        # the issuer's CA CRL (the ceremony's ``crl`` step) is published.
        .add_extension(crl_distribution_points(crl_url), critical=False)
        # BR 7.1.2.10.6 / 7.1.2.2.5: serverAuth only (Let's Encrypt dropped
        # clientAuth from its 2025 hierarchy; nothing here is not TLS).
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # BR 7.1.2.10.5: a reserved CA/B Forum policy identifier; certmint
        # issues domain-validated certificates only.
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(DV_POLICY_OID, None)]),
            critical=False,
        )
    )


def intermediate_builder(
    subject: SubjectConfig,
    public_key: CertificateIssuerPublicKeyTypes,
    issuer_cert: x509.Certificate,
    serial: int,
    not_before: datetime,
    days: int,
    crl_url: str,
    ca_issuers_url: str,
) -> x509.CertificateBuilder:
    """A TLS subordinate CA per BR 7.1.2.6/7.1.2.10 (Let's Encrypt's E7/R13 shape)."""
    start, end = validity(not_before, days)
    builder = (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(issuer_cert.subject)
        .subject_name(ca_name(subject))
        .public_key(public_key)
        .not_valid_before(start)
        .not_valid_after(end)
        # BR 7.1.2.10.4: cA TRUE, critical; pathLen 0: it signs only leaves.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return _subordinate(builder, issuer_cert, crl_url, ca_issuers_url)


def cross_builder(
    subject_cert: x509.Certificate,
    issuer_cert: x509.Certificate,
    serial: int,
    not_before: datetime,
    days: int,
    crl_url: str,
    ca_issuers_url: str,
) -> x509.CertificateBuilder:
    """A cross-certificate (BR 7.1.2.2): ``subject_cert``'s subject, key, SKI
    and basic constraints, certified by another root. Same subject and key,
    so whatever ``subject_cert`` signed chains through either."""
    start, end = validity(not_before, days)
    constraints = subject_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    is_root = subject_cert.issuer == subject_cert.subject
    builder = (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(issuer_cert.subject)
        .subject_name(subject_cert.subject)
        .public_key(subject_cert.public_key())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(constraints, critical=True)
        .add_extension(_key_usage(digital_signature=not is_root), critical=True)
        .add_extension(_ski(subject_cert), critical=False)
    )
    return _subordinate(builder, issuer_cert, crl_url, ca_issuers_url)


def ca_crl_builder(
    issuer_cert: x509.Certificate,
    this_update: datetime,
    next_update_days: int,
    number: int,
    revoked: tuple[RevokedConfig, ...],
) -> x509.CertificateRevocationListBuilder:
    """A root's CRL of CA certificates (BR 7.2, RFC 5280 §5)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(this_update)
        .next_update(this_update + timedelta(days=next_update_days))
        # BR 7.2.2: cRLNumber and authorityKeyIdentifier, non-critical.
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer_cert)),
            critical=False,
        )
    )
    for entry in revoked:
        entry_builder = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at.replace(microsecond=0))
        )
        if entry.reason is not None:
            entry_builder = entry_builder.add_extension(
                x509.CRLReason(_REASONS[entry.reason]), critical=False
            )
        builder = builder.add_revoked_certificate(entry_builder.build())
    return builder


def urls_of(cert: x509.Certificate) -> tuple[str | None, str | None]:
    """(CRL distribution point URL, caIssuers URL) as the certificate carries them."""
    crl_url = ca_issuers = None
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        names = points[0].full_name or []
        crl_url = next(
            (n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)), None
        )
    except x509.ExtensionNotFound:
        pass
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ca_issuers = next(
            (
                d.access_location.value
                for d in access
                if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
                and isinstance(d.access_location, x509.UniformResourceIdentifier)
            ),
            None,
        )
    except x509.ExtensionNotFound:
        pass
    return crl_url, ca_issuers
