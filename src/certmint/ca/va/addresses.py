"""Which addresses the VA may connect to, and host-name syntax checks.

Validation traffic is steered by whoever controls DNS for the name being
validated, i.e. by the applicant. Letting it reach loopback, RFC 1918, link-local
or other non-public space would turn the VA into a probe of the CA's own
network (SSRF), so such targets are refused unless the operator explicitly
allows them (tests, development). Boulder does the same in bdns.
"""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 1035 §2.3.1 "preferred name syntax" (LDH labels), as A-labels: the RA
# has already converted IDNs (RFC 5891) before anything reaches the VA.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def parse_ip(text: str) -> IPAddress | None:
    """The address if ``text`` is an IP literal (brackets allowed), else None."""
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


def normalize_hostname(name: str) -> str | None:
    """Lower-cased name without the trailing dot, or None if it is not a
    syntactically valid DNS name (RFC 1035 §2.3.4: 253 octets, 63 per label)."""
    if not name or not name.isascii():
        return None
    host = name.lower().removesuffix(".")
    if not host or len(host) > 253:
        return None
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    # An all-numeric final label would make "1.2.3.4" look like a name.
    if labels[-1].isdigit():
        return None
    return host


def disallowed_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None if it is.

    IPv4-mapped IPv6 addresses are judged by the IPv4 address they carry, so
    ``::ffff:127.0.0.1`` cannot smuggle a loopback target past the check.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        # Shared address space (RFC 6598), documentation ranges and the like.
        return "a non-public address"
    return None


def address_refusal(text: str) -> str | None:
    """``disallowed_reason`` for an address in text form; non-addresses refused."""
    address = parse_ip(text)
    if address is None:
        return "not an IP address"
    return disallowed_reason(address)


def format_host_for_url(address: str) -> str:
    """``[v6]`` for IPv6 literals, unchanged otherwise (RFC 3986 §3.2.2)."""
    return f"[{address}]" if ":" in address else address
