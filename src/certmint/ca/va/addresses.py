"""Which addresses the VA may connect to, and host-name syntax checks.

Validation traffic is steered by whoever controls DNS for the name being
validated, i.e. by the applicant. Letting it reach loopback, RFC 1918, link-local
or other non-public space would turn the VA into a probe of the CA's own
network (SSRF), so such targets are refused unless the operator explicitly
allows them (tests, development). Boulder does the same in bdns.

``AddressPolicy`` is the one place that decision is made for every hop of
every challenge: all of them (http-01 and its redirects, tls-alpn-01) dial
only what it lets through, from the one lookup they made (no DNS rebinding
between the check and the connect).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # resolver.py imports this module: no import cycle at runtime
    from certmint.ca.va.model import VAConfig
    from certmint.ca.va.resolver import DialPlan

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def parse_networks(specs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings as networks; ValueError names the bad one (host bits set
    included: "127.0.0.1/8" is a typo for a network, so it is refused)."""
    networks: list[IPNetwork] = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"allowed private network {spec!r} is not a network: {exc}") from None
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses the VA may connect to.

    Public unicast addresses always; non-public ones (``disallowed_reason``)
    only with ``allow_all_private`` or when inside one of ``allowed_networks``,
    so tests can allow loopback while 10/8, 192.168/16, 169.254/16, 100.64/10
    and the rest stay refused.
    """

    allow_all_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def for_config(cls, config: VAConfig) -> AddressPolicy:
        return cls(
            allow_all_private=config.allow_private_addresses,
            allowed_networks=parse_networks(config.allowed_private_networks),
        )

    def refusal(self, text: str) -> str | None:
        """Why the VA must not connect to ``text``, or None when it may."""
        address = parse_ip(text)
        if address is None:
            return "not an IP address"
        reason = disallowed_reason(address)
        if reason is None or self.allow_all_private:
            return None
        # An IPv4-mapped IPv6 address is judged as the IPv4 address it carries.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed_networks):
            return None
        return reason

    def restrict(self, plan: DialPlan, host: str) -> DialPlan:
        """``plan`` (resolved with every address allowed) cut down to what
        this policy lets the VA dial: the first permitted IPv6 address, then
        the first permitted IPv4 one (Boulder's order); refused addresses are
        dropped, as Boulder's bdns drops them. When none is left, ``refusal``
        says which address was refused and what to fix."""
        allowed = [a for a in plan.resolved if self.refusal(a) is None]
        v6 = [a for a in allowed if ":" in a]
        v4 = [a for a in allowed if ":" not in a]
        if v6 or v4:
            return replace(plan, candidates=(*v6[:1], *v4[:1]), refusal=None)
        first = plan.resolved[0]
        reason = self.refusal(first)
        if parse_ip(host) is not None:
            refusal = f"{host} is {reason}; the CA only connects to public addresses"
        else:
            refusal = (
                f"{host} resolves to {first}, which is {reason}; the CA only connects "
                f"to public addresses (check the A and AAAA records of {host})"
            )
        return replace(plan, candidates=(), refusal=refusal)
