"""Lint before sign for subscriber certificates (issue 5).

``signing.sign_certificate`` builds every certificate with a throwaway key
of the issuing key's shape and hands that draft to a lint hook before the
issuing key signs anything. For subscriber certificates the hook is
``SubscriberLinter.hook(expectation)``; it runs

- pkilint's CA/Browser Forum TLS Baseline Requirements validators for a
  DV final certificate (BR 7.1.2.7), in-process, exactly as
  ``lint_cabf_serverauth_cert lint --type DV-FINAL-CERTIFICATE`` does,
  including its finding filters; and
- certmint's own checks, which pkilint cannot make because it does not know
  the order: the SANs are exactly the order's identifiers, the validity fits
  the profile and lies inside the issuer's, the subject key passes the key
  policy (BR 6.1.1.3, 6.1.5), the subject is the profile's, and the issuer
  name and authorityKeyIdentifier are the issuer's (RFC 5280 §4.1.2.4,
  §4.2.1.1, BR 7.1.2.11.1).

A FATAL, ERROR or WARNING finding refuses the certificate (``LintError``
with the finding codes, logged on ``certmint.ca.issuance``); NOTICE and
INFO findings are logged only.

Why the throwaway signature cannot change the outcome: pkilint's serverauth
validators for a subscriber certificate never verify a signature (that needs
the issuer's certificate as a second document, which only
``lint_pkix_signer_signee_cert_chain`` loads; the one signature check in the
certificate validators, ``AuthorityKeyIdentifierPresenceValidator``, runs
only for self-issued CA certificates). They do check the signature
*algorithm* fields (BR 7.1.3.2), and the draft carries the issuer's exact
algorithm: ``sign_certificate`` signs it with a key of the same family and
size and the signer's own hash, so the draft's TBS is byte for byte the one
the issuing key then signs. ``tests/unit/issuance/test_lint.py`` checks that
the draft and the final certificate lint identically.

Waivers: pkilint reports names and addresses that are not public
(``cabf.internal_domain_name``, ``cabf.internal_ip_address``) as errors. A
private or test CA allows them on purpose, and the PA already decided which
identifiers are acceptable (``PolicyConfig.allow_unlisted_tlds``,
``allow_private_ip_identifiers``), so ``LintWaivers.for_deployment`` waives
exactly those codes, in exactly the extensions the operator's choice
explains: SANs for the policy flags, AIA/CRL URLs when the CA's own URLs are
not public (an operator choice made once at start-up, logged there as a
warning, not a per-certificate finding).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certmint.ca import errors
from certmint.ca.config import PolicyConfig
from certmint.ca.issuance.signing import CertificateLint, LintError
from certmint.ca.keypolicy import KeyPolicy
from certmint.ca.policy import icann_public_suffix

log = logging.getLogger("certmint.ca.issuance")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# How a check reports a finding: (code, message).
_Report = Callable[[str, str], None]

REFUSING = frozenset({"FATAL", "ERROR", "WARNING"})

INTERNAL_NAME = "cabf.internal_domain_name"
INTERNAL_ADDRESS = "cabf.internal_ip_address"

# Where in the certificate a pkilint finding sits (its node path names the
# decoded extension).
_IN_SAN = ".subjectAltName."
_IN_CA_URLS = (".authorityInfoAccessSyntax.", ".cRLDistributionPoints.")


@dataclass(frozen=True)
class LintFinding:
    """One finding, from pkilint or from certmint's own checks."""

    severity: str  # FATAL | ERROR | WARNING | NOTICE | INFO
    code: str
    message: str | None = None
    node: str | None = None
    waived: bool = False

    def __str__(self) -> str:
        where = f" at {self.node}" if self.node else ""
        what = f": {self.message}" if self.message else ""
        waived = " (waived by policy)" if self.waived else ""
        return f"{self.severity} {self.code}{where}{what}{waived}"

    @property
    def refuses(self) -> bool:
        return self.severity in REFUSING and not self.waived


@dataclass(frozen=True)
class LintWaivers:
    """Which non-public-name findings the deployment accepts (see module doc)."""

    internal_names: bool = False  # dNSName SANs outside the Public Suffix List
    internal_addresses: bool = False  # iPAddress SANs in special-purpose ranges
    internal_ca_urls: bool = False  # the CA's own AIA/CRL URLs

    @classmethod
    def for_deployment(cls, policy: PolicyConfig, ca_urls: Sequence[str]) -> LintWaivers:
        private_urls = sorted({url for url in ca_urls if not is_public_url(url)})
        if private_urls:
            log.warning(
                "certificates will carry non-public CA URLs (%s); a publicly-trusted "
                "CA must publish them under a public name (--management-base-url)",
                ", ".join(private_urls),
            )
        return cls(
            internal_names=policy.allow_unlisted_tlds,
            internal_addresses=policy.allow_private_ip_identifiers,
            internal_ca_urls=bool(private_urls),
        )

    @classmethod
    def everything_internal(cls) -> LintWaivers:
        """For a CA built without a policy (unit tests, tools): the PA, not
        the CA, decides which names are public."""
        return cls(internal_names=True, internal_addresses=True, internal_ca_urls=True)

    def waives(self, code: str, node: str) -> bool:
        if code == INTERNAL_NAME and _IN_SAN in node:
            return self.internal_names
        if code == INTERNAL_ADDRESS and _IN_SAN in node:
            return self.internal_addresses
        if code in (INTERNAL_NAME, INTERNAL_ADDRESS) and any(p in node for p in _IN_CA_URLS):
            return self.internal_ca_urls
        return False


def is_public_url(url: str) -> bool:
    """Whether ``url``'s host is a public name or a global unicast address."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        suffix = icann_public_suffix(host.lower())
        return suffix is not None and suffix != host.lower()
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class IssuanceExpectation:
    """What the certificate about to be signed must be, from the order and profile."""

    issuer: x509.Certificate
    dns_names: frozenset[str]  # lowercase A-labels, "*." kept
    ip_addresses: frozenset[IPAddress]
    # The profile's whole validity period (notAfter - notBefore + 1 s).
    max_validity: timedelta
    common_name: str | None = None
    profile: str = ""

    @classmethod
    def of(
        cls,
        *,
        issuer: x509.Certificate,
        dns_names: Iterable[str],
        ip_addresses: Iterable[str],
        max_validity: timedelta,
        common_name: str | None = None,
        profile: str = "",
    ) -> IssuanceExpectation:
        return cls(
            issuer=issuer,
            dns_names=frozenset(name.lower() for name in dns_names),
            ip_addresses=frozenset(ipaddress.ip_address(a) for a in ip_addresses),
            max_validity=max_validity,
            common_name=common_name,
            profile=profile,
        )


class PkilintTls:
    """pkilint's CA/B Forum TLS BR validators for one certificate type,
    built once per process and type (~0.2-0.3 s each) and shared by the
    subscriber lint, the OCSP responder certificate and the ceremony.

    pkilint's validators are plain Python objects walked by one document at
    a time; nothing documents them as safe for concurrent use, so one lock
    serialises ``validate``. Linting is pure Python, so under the GIL a
    validator per thread would buy no parallelism, only a slower start per
    thread (measured: docs/architecture.md, "Profiles and lint before sign")."""

    _instances: ClassVar[dict[str, PkilintTls]] = {}
    _instances_lock = threading.Lock()

    def __init__(self, certificate_type: str) -> None:
        from pkilint import finding_filter, loader
        from pkilint.cabf import serverauth
        from pkilint.cabf.serverauth import serverauth_constants
        from pkilint.pkix import certificate

        # Given, not detected, as ``lint_cabf_serverauth_cert --type`` does.
        kind = serverauth_constants.CertificateType[certificate_type]
        self._validator = certificate.create_pkix_certificate_validator_container(
            serverauth.create_decoding_validators(), serverauth.create_validators(kind)
        )
        # As the CLI does without --report-all: drop PKIX findings that the
        # CA/B Forum rules supersede.
        self._filters = serverauth.create_serverauth_finding_filters(kind)
        self._filter_results = finding_filter.filter_results
        self._loader = loader.RFC5280CertificateDocumentLoader()
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, certificate_type: str = "DV_FINAL_CERTIFICATE") -> PkilintTls:
        with cls._instances_lock:
            instance = cls._instances.get(certificate_type)
            if instance is None:
                instance = cls._instances[certificate_type] = PkilintTls(certificate_type)
            return instance

    def findings(self, der: bytes, waivers: LintWaivers | None = None) -> list[LintFinding]:
        try:
            document = self._loader.load_der_document(der, "draft")
        except ValueError as exc:
            return [LintFinding("FATAL", "certmint.undecodable_certificate", str(exc))]
        with self._lock:
            results: Any = self._validator.validate(document.root)
            results, _ = self._filter_results(self._filters, results)
        found: list[LintFinding] = []
        for result in results:
            node = str(result.node.path)
            for description in result.finding_descriptions:
                code = str(description.finding.code)
                found.append(
                    LintFinding(
                        severity=str(description.finding.severity),
                        code=code,
                        message=description.message,
                        node=node,
                        waived=waivers is not None and waivers.waives(code, node),
                    )
                )
        return found


class SubscriberLinter:
    """The lint hook for subscriber certificates (see the module docstring)."""

    def __init__(self, key_policy: KeyPolicy, waivers: LintWaivers | None = None) -> None:
        self._keys = key_policy
        self._waivers = waivers if waivers is not None else LintWaivers()

    @classmethod
    def for_unit_use(cls) -> SubscriberLinter:
        """Default key policy, names left to the PA (``everything_internal``)."""
        return cls(KeyPolicy.default(), LintWaivers.everything_internal())

    @staticmethod
    def warm_up() -> None:
        """Build pkilint's validators now rather than on the first issuance."""
        PkilintTls.shared()

    def findings(self, cert: x509.Certificate, expected: IssuanceExpectation) -> list[LintFinding]:
        der = cert.public_bytes(serialization.Encoding.DER)
        found = PkilintTls.shared().findings(der, self._waivers)
        found.extend(self._own_findings(cert, expected))
        return found

    def check(self, cert: x509.Certificate, expected: IssuanceExpectation) -> None:
        """Raise ``LintError`` (after logging every finding) unless clean."""
        found = self.findings(cert, expected)
        refusing = [f for f in found if f.refuses]
        names = ", ".join(sorted(expected.dns_names | {str(a) for a in expected.ip_addresses}))
        for finding in found:
            if not finding.refuses:
                level = logging.DEBUG if finding.waived else logging.INFO
                log.log(level, "lint of the certificate for %s: %s", names, finding)
        if refusing:
            log.error(
                "lint refused the %scertificate for %s (serial %x); nothing was signed:\n  %s",
                f"{expected.profile} " if expected.profile else "",
                names,
                cert.serial_number,
                "\n  ".join(str(f) for f in refusing),
            )
            raise LintError("subscriber certificate", tuple(f.code for f in refusing))

    def hook(self, expected: IssuanceExpectation) -> CertificateLint:
        """The callable ``sign_certificate`` wants, bound to this issuance."""

        def lint(draft: x509.Certificate) -> None:
            self.check(draft, expected)

        return lint

    # -- certmint's own checks ------------------------------------------------

    def _own_findings(
        self, cert: x509.Certificate, expected: IssuanceExpectation
    ) -> list[LintFinding]:
        found: list[LintFinding] = []

        def error(code: str, message: str) -> None:
            found.append(LintFinding("ERROR", f"certmint.{code}", message))

        _check_names(cert, expected, error)
        _check_subject(cert, expected, error)
        _check_validity(cert, expected, error)
        _check_issuer(cert, expected.issuer, error)
        try:
            self._keys.check_certificate_key(cert.public_key())
        except errors.AcmeError as exc:  # BadPublicKey
            error("subject_key_not_allowed", exc.detail)
        return found


def _check_names(cert: x509.Certificate, expected: IssuanceExpectation, error: _Report) -> None:
    # The certificate names exactly what the order's authorizations cover:
    # no more (mis-issuance), no fewer (the subscriber asked for them).
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        error("san_missing", "no subjectAltName extension (BR 7.1.2.7.12)")
        return
    dns = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    ips = set(san.get_values_for_type(x509.IPAddress))
    if dns != expected.dns_names or ips != expected.ip_addresses:
        extra = sorted(dns - expected.dns_names) + sorted(
            str(a) for a in ips - expected.ip_addresses
        )
        missing = sorted(expected.dns_names - dns) + sorted(
            str(a) for a in expected.ip_addresses - ips
        )
        error(
            "san_mismatch",
            f"SANs differ from the order's identifiers: extra {extra}, missing {missing}",
        )


def _check_subject(cert: x509.Certificate, expected: IssuanceExpectation, error: _Report) -> None:
    attributes = list(cert.subject)
    if expected.common_name is None:
        if attributes:
            error(
                "subject_not_empty",
                f"the profile has no subject, got {cert.subject.rfc4514_string()}",
            )
        return
    values = [a.value for a in attributes]
    if len(attributes) != 1 or values != [expected.common_name]:
        error(
            "subject_mismatch",
            f"expected CN={expected.common_name}, got {cert.subject.rfc4514_string()}",
        )


def _check_validity(cert: x509.Certificate, expected: IssuanceExpectation, error: _Report) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    # RFC 5280 §4.1.2.5 / BR 7.1.2.7: the period includes both ends.
    period = end - start + timedelta(seconds=1)
    if period > expected.max_validity:
        error(
            "validity_exceeds_profile",
            f"validity {period} exceeds the {expected.profile or 'allowed'} profile's "
            f"{expected.max_validity}",
        )
    issuer = expected.issuer
    if start < issuer.not_valid_before_utc or end > issuer.not_valid_after_utc:
        error(
            "validity_outside_issuer",
            f"{start:%Y-%m-%dT%H:%M:%SZ}..{end:%Y-%m-%dT%H:%M:%SZ} is not inside the "
            f"issuer's {issuer.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}.."
            f"{issuer.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        )


def _check_issuer(cert: x509.Certificate, issuer: x509.Certificate, error: _Report) -> None:
    # RFC 5280 §4.1.2.4: the issuer field is the issuer's subject, octet for
    # octet (path building compares them).
    if cert.issuer.public_bytes() != issuer.subject.public_bytes():
        error("issuer_name_mismatch", "the issuer name is not the issuer's subject")
    # RFC 5280 §4.2.1.1 / BR 7.1.2.11.1: keyIdentifier = the issuer's SKI.
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        error("aki_mismatch", "authorityKeyIdentifier or the issuer's SKI is missing")
        return
    if aki.key_identifier != ski.digest:
        error("aki_mismatch", "authorityKeyIdentifier is not the issuer's subjectKeyIdentifier")
