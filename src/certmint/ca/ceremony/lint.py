"""Lint hooks for the ceremony: pkilint's CA/B Forum validators, in-process.

Every CA certificate is linted with pkilint's TLS Baseline Requirements
validators for its certificate type, given, not detected (the same choice
``lint_cabf_serverauth_cert --type`` makes):

- a root: ``ROOT_CA`` (BR 7.1.2.1);
- an intermediate certmint operates: ``INTERNAL_UNCONSTRAINED_TLS_CA``
  (BR 7.1.2.6, the subordinate CA being the CA's own, i.e. "affiliated");
- a cross-certificate of an intermediate: ``INTERNAL_SUBSCRIBER_ISSUING_CROSS_CA``
  and of a root: ``INTERNAL_CROSS_CA`` (BR 7.1.2.2).

The CA CRL a root signs is linted as ``lint_crl -t ARL -p BR`` does: RFC
5280's CRL profile, BR 7.2.2's reason codes for CA certificates and BR 4.9.7's
twelve-month validity.

Findings of severity WARNING and worse refuse (``LintError``); NOTICE and
INFO findings are accepted and recorded in the audit log. The ones the
ceremony's certificates carry are ``pkix.subject_key_identifier_method_1_identified``
(INFO: the SKI is RFC 5280's method 1, as intended) and, on roots,
``cabf.ca_certificate_no_digital_signature_bit`` (NOTICE: a root that signs
no OCSP responses needs no digitalSignature, BR 7.1.2.10.7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certmint.ca.issuance.lint import PkilintTls
from certmint.ca.issuance.signing import LintError

REFUSING = ("FATAL", "ERROR", "WARNING")

ROOT = "ROOT_CA"
INTERMEDIATE = "INTERNAL_UNCONSTRAINED_TLS_CA"
CROSS_OF_INTERMEDIATE = "INTERNAL_SUBSCRIBER_ISSUING_CROSS_CA"
CROSS_OF_ROOT = "INTERNAL_CROSS_CA"


def _results_findings(results: Any) -> list[tuple[str, str]]:
    """(severity, "SEVERITY code @ path: message") for every finding."""
    out: list[tuple[str, str]] = []
    for result in results:
        for description in result.finding_descriptions:
            severity = str(description.finding.severity.name)
            text = f"{severity} {description.finding.code} @ {result.node.path}"
            if description.message:
                text += f": {description.message}"
            out.append((severity, text))
    return out


def certificate_findings(cert: x509.Certificate, certificate_type: str) -> list[tuple[str, str]]:
    """pkilint's CA/B Forum TLS findings on ``cert`` as ``certificate_type``,
    as (severity, "SEVERITY code @ path: message")."""
    der = cert.public_bytes(serialization.Encoding.DER)
    out: list[tuple[str, str]] = []
    for finding in PkilintTls.shared(certificate_type).findings(der):
        text = f"{finding.severity} {finding.code} @ {finding.node}"
        if finding.message:
            text += f": {finding.message}"
        out.append((finding.severity, text))
    return out


def ca_crl_findings(crl: x509.CertificateRevocationList) -> list[tuple[str, str]]:
    """``lint_crl -t ARL -p BR``'s findings on a CRL covering CA certificates."""
    from pkilint import loader, pkix
    from pkilint.cabf import cabf_crl
    from pkilint.pkix import crl as pkix_crl
    from pkilint.pkix import extension, name

    crl_type = pkix_crl.CertificateRevocationListType.ARL
    validator = pkix_crl.create_pkix_crl_validator_container(
        [
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [
            pkix_crl.create_issuer_validator_container([]),
            pkix_crl.create_validity_validator_container(
                [cabf_crl.create_validity_period_validator(crl_type)]
            ),
            pkix_crl.create_extensions_validator_container([]),
            cabf_crl.CabfCrlReasonCodeAllowlistValidator(crl_type),
        ],
    )
    document = loader.RFC5280CertificateListDocumentLoader().load_der_document(
        crl.public_bytes(serialization.Encoding.DER), "crl"
    )
    return _results_findings(validator.validate(document.root))


@dataclass
class LintRecord:
    """A lint hook that refuses on WARNING or worse and remembers what it accepted."""

    what: str
    accepted: list[str] = field(default_factory=list)

    def _judge(self, findings: list[tuple[str, str]]) -> None:
        refused = tuple(text for severity, text in findings if severity in REFUSING)
        if refused:
            raise LintError(self.what, refused)
        self.accepted = [text for _, text in findings]

    def certificate(self, certificate_type: str) -> Any:
        def lint(cert: x509.Certificate) -> None:
            self._judge(certificate_findings(cert, certificate_type))

        return lint

    def crl(self, crl: x509.CertificateRevocationList) -> None:
        self._judge(ca_crl_findings(crl))
