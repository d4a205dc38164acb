"""CRL lint: pkilint's RFC 5280 and CA/B Forum CRL validations, in-process.

Every CRL is linted before the issuing key signs it (``signing.sign_crl``
builds a draft with a throwaway key and hands it here). The validator set is
the one ``lint_crl -t CRL -p BR`` runs (pkilint/bin/lint_crl.py): the RFC 5280
CRL profile (issuer, validity, extensions, entries) plus the CA/B Forum reason
code allowlist (BR 7.2.2) and validity period (BR 4.9.7: nextUpdate at most
ten days after thisUpdate). It is built once per process: building it walks
pkilint's whole registry, linting one CRL does not.

Findings of severity WARNING or worse refuse the CRL (``LintError``): the
issue wants "each CRL linted", and a warning on a CRL (say, an unexpected
extension) is as much a sign of a profile bug as an error. NOTICE and INFO
findings are not refusals.

Large CRLs: pkilint decodes with pyasn1, about 0.4 ms per entry (a shard of
60,000 entries took 22 s to lint, 1,000 entries 0.5 s), so a complete CRL of
a million entries would take minutes. Entries are all alike -- serial,
revocationDate, optionally a reasonCode -- so above ``FULL_LINT_MAX_ENTRIES``
pkilint sees the exact draft with its entry list cut down to the first
``SAMPLE_ENTRIES`` plus the first entry of every other shape (date encoding
and extension bytes), and every entry is checked here, in one pass over the
DER, against the rules that depend on the entry itself: a positive serial of
at most 20 octets, minimally encoded (RFC 5280 §4.1.2.2, §5.1.2.6); UTCTime
for dates before 2050 (§5.1.2.6 → §4.1.2.5.1); each serial listed once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certmint.ca.issuance.signing import LintError

# Above this many entries, pkilint lints a sample (see the module docstring).
FULL_LINT_MAX_ENTRIES = 2000
SAMPLE_ENTRIES = 500

_validator: Any = None
_validator_lock = threading.Lock()


def _build_validator() -> Any:
    # Imported here: pkilint is a [ca] dependency and its import is not free.
    from pkilint import pkix
    from pkilint.cabf import cabf_crl
    from pkilint.pkix import crl, extension, name

    crl_type = crl.CertificateRevocationListType.CRL
    return crl.create_pkix_crl_validator_container(
        [
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [
            crl.create_issuer_validator_container([]),
            crl.create_validity_validator_container(
                [cabf_crl.create_validity_period_validator(crl_type)]
            ),
            crl.create_extensions_validator_container([]),
            cabf_crl.CabfCrlReasonCodeAllowlistValidator(crl_type),
        ],
    )


def _crl_validator() -> Any:
    global _validator
    with _validator_lock:
        if _validator is None:
            _validator = _build_validator()
        return _validator


def crl_findings(der: bytes) -> tuple[str, ...]:
    """Every WARNING-or-worse finding on the DER CRL, as "SEVERITY code @ path"."""
    layout = _layout(der)
    own = _entry_findings(der, layout)
    if len(layout.entries) > FULL_LINT_MAX_ENTRIES:
        der = _sampled(der, layout)
    return own + _pkilint_findings(der)


def _pkilint_findings(der: bytes) -> tuple[str, ...]:
    from pkilint import loader
    from pkilint.validation import ValidationFindingSeverity

    document = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, "crl")
    results = _crl_validator().validate(document.root)
    findings: list[str] = []
    for result in results:
        for description in result.finding_descriptions:
            finding = description.finding
            if finding.severity <= ValidationFindingSeverity.WARNING:
                findings.append(f"{finding.severity.name} {finding.code} @ {result.node.path}")
    return tuple(findings)


def lint_crl(crl: x509.CertificateRevocationList) -> None:
    """The ``CrlLint`` hook for ``signing.sign_crl``: raise ``LintError`` on
    any WARNING-or-worse finding."""
    findings = crl_findings(crl.public_bytes(serialization.Encoding.DER))
    if findings:
        raise LintError("CRL", findings)


# -- a small DER walk over the CertificateList (RFC 5280 §5.1) ----------------


@dataclass(frozen=True)
class _Layout:
    tbs: tuple[int, int, int]  # (start of element, start of content, end)
    revoked: tuple[int, int, int] | None  # the revokedCertificates SEQUENCE
    entries: tuple[tuple[int, int], ...]  # (start, end) of each entry


def _tlv(data: bytes, offset: int, limit: int) -> tuple[int, int, int]:
    """(tag, start of content, end) of the element at ``offset``."""
    if offset + 2 > limit:
        raise ValueError("truncated DER")
    tag, first = data[offset], data[offset + 1]
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or position + count > limit:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    end = position + length
    if end > limit:
        raise ValueError("truncated DER")
    return tag, position, end


def _layout(der: bytes) -> _Layout:
    tag, content, end = _tlv(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise ValueError("not a DER CertificateList")
    tbs_tag, tbs_content, tbs_end = _tlv(der, content, end)
    if tbs_tag != 0x30:
        raise ValueError("no TBSCertList")
    # version?, signature, issuer, thisUpdate, nextUpdate?, revokedCertificates?,
    # [0] crlExtensions?: revokedCertificates is the SEQUENCE after the issuer.
    position, sequences = tbs_content, 0
    revoked: tuple[int, int, int] | None = None
    while position < tbs_end:
        element_tag, element_content, element_end = _tlv(der, position, tbs_end)
        if element_tag == 0x30:
            sequences += 1
            if sequences == 3:  # signature, issuer, then the entries
                revoked = (position, element_content, element_end)
        position = element_end
    entries: list[tuple[int, int]] = []
    if revoked is not None:
        position = revoked[1]
        while position < revoked[2]:
            _, _, entry_end = _tlv(der, position, revoked[2])
            entries.append((position, entry_end))
            position = entry_end
    return _Layout((content, tbs_content, tbs_end), revoked, tuple(entries))


def _entry_findings(der: bytes, layout: _Layout) -> tuple[str, ...]:
    """The per-entry rules, for every entry (see the module docstring)."""
    findings: list[str] = []
    seen: set[bytes] = set()
    for index, (start, end) in enumerate(layout.entries):
        where = f"revokedCertificates.{index}"
        _, content, entry_end = _tlv(der, start, end)
        serial_tag, serial_start, serial_end = _tlv(der, content, entry_end)
        serial = der[serial_start:serial_end]
        if serial_tag != 0x02 or not serial:
            findings.append(f"ERROR certmint.crl_entry_serial_not_integer @ {where}")
            continue
        if serial[0] & 0x80 or not any(serial):
            findings.append(f"ERROR certmint.crl_entry_serial_not_positive @ {where}")
        if len(serial) > 1 and serial[0] == 0 and not serial[1] & 0x80:
            findings.append(f"ERROR certmint.crl_entry_serial_not_minimal @ {where}")
        if len(serial.lstrip(b"\x00")) > 20:
            findings.append(f"ERROR certmint.crl_entry_serial_too_long @ {where}")
        if serial in seen:
            findings.append(f"ERROR certmint.crl_entry_serial_duplicate @ {where}")
        seen.add(serial)
        date_tag, date_start, _ = _tlv(der, serial_end, entry_end)
        if date_tag == 0x18 and der[date_start : date_start + 4] < b"2050":
            findings.append(f"ERROR certmint.crl_entry_date_not_utctime @ {where}")
        elif date_tag not in (0x17, 0x18):
            findings.append(f"ERROR certmint.crl_entry_date_not_time @ {where}")
        if len(findings) > 20:
            break  # enough to refuse; do not build a million-line message
    return tuple(findings)


def _sampled(der: bytes, layout: _Layout) -> bytes:
    """``der`` with only a sample of its entries: the first ``SAMPLE_ENTRIES``
    and the first of every other shape. Everything else stays byte-identical
    (the signature no longer matches; pkilint does not check it)."""
    assert layout.revoked is not None
    keep: list[tuple[int, int]] = []
    shapes: set[tuple[int, bytes]] = set()
    for index, (start, end) in enumerate(layout.entries):
        _, content, entry_end = _tlv(der, start, end)
        _, _, serial_end = _tlv(der, content, entry_end)
        date_tag, _, date_end = _tlv(der, serial_end, entry_end)
        shape = (date_tag, der[date_end:entry_end])  # the entry's extensions
        if index < SAMPLE_ENTRIES or shape not in shapes:
            keep.append((start, end))
        shapes.add(shape)
    body = b"".join(der[start:end] for start, end in keep)
    revoked_start, _, revoked_end = layout.revoked
    _, tbs_content, tbs_end = layout.tbs
    tbs_body = der[tbs_content:revoked_start] + _wrap(0x30, body) + der[revoked_end:tbs_end]
    outer_rest = der[tbs_end:]
    return _wrap(0x30, _wrap(0x30, tbs_body) + outer_rest)


def _wrap(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content
