"""Identifier normalisation: DNS names (RFC 8555 §7.1.4, §9.7.7) and IPs (RFC 8738).

Every name that reaches policy, storage or a certificate passes through here
first, so one name has one spelling: lowercase A-labels (IDNA2008, RFC 5890),
no trailing dot. Errors name the identifier and say what to change.
"""

from __future__ import annotations

import ipaddress
import re

import idna

MAX_NAME_OCTETS = 253  # RFC 1035 §2.3.4, without the trailing dot
MAX_LABEL_OCTETS = 63  # RFC 1035 §2.3.4
_LDH_LABEL = re.compile(r"[a-z0-9-]+")
_ACE_PREFIX = "xn--"


class IdentifierError(ValueError):
    """An identifier we cannot accept; the message names it and says why."""


def _fail(value: str, reason: str) -> IdentifierError:
    return IdentifierError(f'"{value}" is not a valid DNS name: {reason}')


def _check_a_label(original: str, label: str) -> None:
    # RFC 5891 §5.4: an A-label must decode to a valid U-label whose encoding
    # is exactly this A-label; otherwise it is a fake "xn--" label.
    try:
        ulabel = idna.ulabel(label)
        roundtrip = idna.alabel(ulabel).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise _fail(original, f'label "{label}" is not a valid IDNA A-label ({exc})') from None
    if roundtrip != label:
        raise _fail(original, f'label "{label}" is not a canonical IDNA A-label')


def _check_label(original: str, label: str) -> None:
    if not label:
        raise _fail(original, "it contains an empty label (two dots in a row or a leading dot)")
    if len(label) > MAX_LABEL_OCTETS:
        raise _fail(original, f'label "{label}" is longer than {MAX_LABEL_OCTETS} characters')
    if _LDH_LABEL.fullmatch(label) is None:
        raise _fail(
            original,
            f'label "{label}" may contain only letters, digits and hyphens',
        )
    if label.startswith("-") or label.endswith("-"):
        raise _fail(original, f'label "{label}" must not start or end with a hyphen')
    if label[2:4] == "--":
        if not label.startswith(_ACE_PREFIX):
            # RFC 5891 §4.2.3.1: "??--" is reserved for future ACE prefixes.
            raise _fail(original, f'label "{label}" has "--" in the third and fourth positions')
        _check_a_label(original, label)


def _to_ascii(original: str, name: str) -> str:
    if name.isascii():
        return name.lower()
    try:
        # UTS #46 mapping (case folding, width folding), non-transitional, then
        # the IDNA2008 validity rules.
        return idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise _fail(original, f"it cannot be converted to IDNA2008 ({exc})") from None


def normalize_dns_identifier(value: str, *, allow_wildcard: bool = False) -> str:
    """Return the canonical spelling of a DNS identifier, or raise ``IdentifierError``."""
    if not isinstance(value, str):
        raise IdentifierError("DNS identifier value is not a string")
    if not value:
        raise IdentifierError("DNS identifier is empty")
    name = value
    wildcard = False
    if name.startswith("*."):
        if not allow_wildcard:
            raise _fail(value, "wildcards are not allowed here")
        wildcard = True
        name = name[2:]
    if "*" in name:
        raise _fail(value, 'a wildcard "*" is allowed only as the whole leftmost label')
    if name.endswith(".") or name.endswith("\u3002"):
        raise _fail(value, "remove the trailing dot")
    if _is_ip_literal(name):
        raise _fail(value, "it is an IP address; use an identifier of type ip")

    name = _to_ascii(value, name)
    if name.endswith("."):  # a mapped full-width dot, e.g. U+FF0E
        raise _fail(value, "remove the trailing dot")
    labels = name.split(".")
    for label in labels:
        _check_label(value, label)
    if len(labels) < 2:
        raise _fail(value, "it has a single label; use a fully qualified domain name")
    if labels[-1].isdigit():
        raise _fail(value, f'top-level label "{labels[-1]}" is all-numeric')
    full = ("*." if wildcard else "") + name
    if len(full) > MAX_NAME_OCTETS:
        raise _fail(value, f"it is longer than {MAX_NAME_OCTETS} octets")
    return full


def _is_ip_literal(text: str) -> bool:
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def normalize_ip_identifier(value: str) -> str:
    """RFC 8738 §3 canonical text: dotted quad, or RFC 5952 for IPv6."""
    if not isinstance(value, str) or not value:
        raise IdentifierError("IP identifier is empty or not a string")
    # Python accepts IPv6 zone ids ("fe80::1%eth0"); they are host-local and
    # meaningless in a certificate.
    if "%" in value or value != value.strip():
        raise IdentifierError(f'"{value}" is not a valid IP address')
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise IdentifierError(f'"{value}" is not a valid IP address') from None
    return str(address)
