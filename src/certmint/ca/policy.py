"""The policy authority (PA): which identifiers, keys, contacts, challenge
types, profiles and validity periods this CA accepts. Config only; no I/O."""

from __future__ import annotations

import functools
import ipaddress
import re
from datetime import datetime, timedelta

from publicsuffixlist import PublicSuffixList

from certmint.ca import errors
from certmint.ca.config import PolicyConfig, ProfileConfig
from certmint.ca.keypolicy import KeyPolicy
from certmint.protocol.identifiers import (
    IdentifierError,
    normalize_dns_identifier,
    normalize_ip_identifier,
)
from certmint.protocol.jwk import PublicKey
from certmint.protocol.messages import Identifier
from certmint.protocol.problems import Problem, ProblemType

# A deliberately plain address check: one "@", a non-empty local part without
# spaces or separators, and a dotted domain that normalises as a DNS name.
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=^_`{|}~-]{1,64}$")

# RFC 8738 §7: IP identifiers are validated by http-01 or tls-alpn-01 only;
# dns-01 has no name to put a TXT record under.
IP_CHALLENGE_TYPES = ("http-01", "tls-alpn-01")
# Wildcards need a DNS-based challenge (RFC 8555 §7.1.3, BR 3.2.2.6): dns-01
# (BR 3.2.2.4.7), dns-account-01 (BR 3.2.2.4.21, draft-ietf-acme-dns-account-
# label-02 §4) or dns-persist-01 with policy=wildcard (BR 3.2.2.4.22,
# draft-ietf-acme-dns-persist-00 §5).
WILDCARD_CHALLENGE_TYPES = ("dns-01", "dns-account-01", "dns-persist-01")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*rows: tuple[str, str]) -> tuple[tuple[_Network, str], ...]:
    return tuple((ipaddress.ip_network(cidr), what) for cidr, what in rows)


# The IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890), plus
# multicast and the class E space. Written out, not only left to the
# ``ipaddress`` properties, so the refusal names the range and its RFC, and so
# a change in Python's own tables cannot silently widen what we certify.
# Boulder refuses the same registries (iana.IsReservedAddr).
SPECIAL_PURPOSE_RANGES = _nets(
    ("0.0.0.0/8", "the 'this network' range (RFC 791)"),
    ("10.0.0.0/8", "a private range (RFC 1918)"),
    ("100.64.0.0/10", "the shared CGNAT range (RFC 6598)"),
    ("127.0.0.0/8", "the loopback range (RFC 1122)"),
    ("169.254.0.0/16", "the link-local range (RFC 3927)"),
    ("172.16.0.0/12", "a private range (RFC 1918)"),
    ("192.0.0.0/24", "the IETF protocol assignments range (RFC 6890)"),
    ("192.0.2.0/24", "a documentation range, TEST-NET-1 (RFC 5737)"),
    ("192.31.196.0/24", "the AS112-v4 range (RFC 7535)"),
    ("192.52.193.0/24", "the AMT range (RFC 7450)"),
    ("192.88.99.0/24", "the deprecated 6to4 relay anycast range (RFC 7526)"),
    ("192.168.0.0/16", "a private range (RFC 1918)"),
    ("192.175.48.0/24", "the AS112 direct delegation range (RFC 7534)"),
    ("198.18.0.0/15", "the benchmarking range (RFC 2544)"),
    ("198.51.100.0/24", "a documentation range, TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "a documentation range, TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "the multicast range (RFC 5771)"),
    # Most specific first: the broadcast address lies inside class E.
    ("255.255.255.255/32", "the limited broadcast address (RFC 8190)"),
    ("240.0.0.0/4", "the reserved class E range (RFC 1112)"),
    ("::/128", "the unspecified address (RFC 4291)"),
    ("::1/128", "the loopback address (RFC 4291)"),
    ("::ffff:0:0/96", "the IPv4-mapped range (RFC 4291)"),
    ("64:ff9b::/96", "the IPv4/IPv6 translation range (RFC 6052)"),
    ("64:ff9b:1::/48", "the local-use IPv4/IPv6 translation range (RFC 8215)"),
    ("100::/64", "the discard-only range (RFC 6666)"),
    ("2001::/23", "the IETF protocol assignments range (RFC 2928)"),
    ("2001:db8::/32", "a documentation range (RFC 3849)"),
    ("2002::/16", "the 6to4 range (RFC 3056)"),
    ("3fff::/20", "a documentation range (RFC 9637)"),
    ("5f00::/16", "the SRv6 SID range (RFC 9602)"),
    ("fc00::/7", "the unique-local range (RFC 4193)"),
    ("fe80::/10", "the link-local range (RFC 4291)"),
    ("fec0::/10", "the deprecated site-local range (RFC 3879)"),
    ("ff00::/8", "the multicast range (RFC 4291)"),
)

# Addresses no server can answer from, refused even when the operator allows
# private identifiers: unspecified, broadcast, multicast, and IPv4-mapped
# IPv6 (RFC 8738 §3: an IPv4 address is written as IPv4).
_NEVER_CERTIFIABLE = _nets(
    ("0.0.0.0/32", "the unspecified address (RFC 1122)"),
    ("255.255.255.255/32", "the limited broadcast address (RFC 8190)"),
    ("224.0.0.0/4", "the multicast range (RFC 5771)"),
    ("::/128", "the unspecified address (RFC 4291)"),
    ("::ffff:0:0/96", "the IPv4-mapped range (RFC 4291); write the IPv4 address instead"),
    ("ff00::/8", "the multicast range (RFC 4291)"),
)


def _range_reason(address: IPAddress, table: tuple[tuple[_Network, str], ...]) -> str | None:
    for network, what in table:
        if address.version == network.version and address in network:
            return what
    return None


def special_purpose_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None if it is."""
    found = _range_reason(address, SPECIAL_PURPOSE_RANGES)
    if found is not None:
        return found
    # Belt and braces: whatever Python's tables know and ours do not
    # (e.g. IPv6 space outside 2000::/3 that IANA has not allocated).
    if not address.is_global or address.is_reserved or address.is_multicast:
        return "a special-purpose or unallocated range"
    return None


# Reverse-mapping zones: names there describe addresses, and a certificate
# for an address is requested with an ip identifier (RFC 8738); Boulder's
# example policy blocks these zones too.
_REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")


@functools.lru_cache(maxsize=1)
def _public_suffix_list() -> PublicSuffixList:
    # BR 3.2.2.6: "a CA SHOULD consult the ICANN DOMAINS section only, not
    # the PRIVATE DOMAINS section" -- and Boulder's iana.ExtractSuffix does
    # exactly that. So "github.io" may be certified (its owner controls it);
    # "co.uk" may not. accept_unknown=False: a TLD absent from the list
    # yields no suffix at all, so we can tell "unlisted" from "listed".
    return PublicSuffixList(only_icann=True, accept_unknown=False)


def icann_public_suffix(name: str) -> str | None:
    """The ICANN-section public suffix of ``name`` (an A-label name), or
    None when its TLD is not on the Public Suffix List."""
    suffix = _public_suffix_list().publicsuffix(name)
    return suffix if isinstance(suffix, str) else None


class PolicyAuthority:
    def __init__(
        self,
        config: PolicyConfig,
        supported_challenges: tuple[str, ...],
        key_policy: KeyPolicy | None = None,
    ) -> None:
        self._config = config
        self._keys = key_policy if key_policy is not None else KeyPolicy.default()
        self._profiles = {p.name: p for p in config.profiles}
        if config.default_profile not in self._profiles:
            raise ValueError(f"default profile {config.default_profile!r} is not configured")
        self.challenge_types = tuple(
            t for t in config.enabled_challenges if t in supported_challenges
        )

    @property
    def profiles(self) -> tuple[ProfileConfig, ...]:
        return self._config.profiles

    # -- identifiers -----------------------------------------------------

    def check_order_identifiers(
        self, identifiers: tuple[Identifier, ...], profile: ProfileConfig
    ) -> tuple[tuple[str, str], ...]:
        """Normalise and vet every identifier; refuse the lot with one
        subproblem per bad identifier (RFC 8555 §6.7.1)."""
        problems: list[Problem] = []
        accepted: set[tuple[str, str]] = set()
        for ident in identifiers:
            try:
                self._check_profile_allows(ident.type, ident.value, profile)
                accepted.add(self._check_identifier(ident))
            except errors.AcmeError as exc:
                problems.append(
                    Problem(
                        type=exc.problem_type,
                        detail=exc.detail,
                        status=exc.status,
                        identifier=(ident.type, ident.value),
                    )
                )
        if problems:
            kinds = {p.type for p in problems}
            detail = (
                problems[0].detail
                if len(problems) == 1
                else f"{len(problems)} identifiers were refused; see subproblems"
            )
            if kinds == {ProblemType.UNSUPPORTED_IDENTIFIER}:
                raise errors.UnsupportedIdentifier(detail, subproblems=tuple(problems))
            raise errors.RejectedIdentifier(detail, subproblems=tuple(problems))
        self._check_name_count(len(accepted), profile)
        return tuple(sorted(accepted))

    def check_identifiers_fit_profile(
        self, identifiers: tuple[tuple[str, str], ...], profile: ProfileConfig
    ) -> None:
        """At finalize: the order's (already vetted) identifiers still fit
        its profile, which the operator may have narrowed since newOrder."""
        for id_type, value in identifiers:
            self._check_profile_allows(id_type, value, profile)
        self._check_name_count(len(identifiers), profile)

    def _check_name_count(self, count: int, profile: ProfileConfig) -> None:
        limit = min(self._config.max_names_per_order, profile.max_names)
        if count > limit:
            raise errors.RejectedIdentifier(
                f"order contains {count} identifiers; at most {limit} are allowed"
                + (f" by the {profile.name} profile" if limit == profile.max_names else "")
            )

    def _check_profile_allows(self, id_type: str, value: str, profile: ProfileConfig) -> None:
        """draft-ietf-acme-profiles: each profile lists the identifier types
        it certifies (Let's Encrypt: IP addresses only under shortlived)."""
        if id_type not in ("dns", "ip") or id_type in profile.identifier_types:
            return  # unknown types are refused as unsupported, below
        others = [p.name for p in self._config.profiles if id_type in p.identifier_types]
        advice = (
            "request the " + " or ".join(f'"{name}"' for name in others) + " profile"
            if others
            else "no profile here allows them"
        )
        raise errors.RejectedIdentifier(
            f'{value}: the "{profile.name}" profile does not allow {id_type} identifiers; {advice}'
        )

    def _check_identifier(self, ident: Identifier) -> tuple[str, str]:
        if ident.type == "dns":
            return ("dns", self._check_dns(ident.value))
        if ident.type == "ip":
            return ("ip", self._check_ip(ident.value))
        raise errors.UnsupportedIdentifier(
            f'identifier type {ident.type!r} is not supported (only "dns" and "ip")'
        )

    def _check_dns(self, value: str) -> str:
        try:
            # Label and name lengths (RFC 1035 §2.3.4), LDH syntax, IDNA2008
            # (RFC 5891) and the U-label to A-label conversion live there.
            name = normalize_dns_identifier(value, allow_wildcard=True)
        except IdentifierError as exc:
            raise errors.RejectedIdentifier(str(exc)) from None
        wildcard = name.startswith("*.")
        base = name.removeprefix("*.")
        if wildcard and not any(t in WILDCARD_CHALLENGE_TYPES for t in self.challenge_types):
            # Wildcards need a DNS-based challenge (BR 3.2.2.6, RFC 8555 §7.1.3).
            raise errors.RejectedIdentifier(
                f"{value}: wildcard names need a DNS-based challenge "
                f"({', '.join(WILDCARD_CHALLENGE_TYPES)}), and none is enabled here"
            )
        if any(base == z or base.endswith("." + z) for z in _REVERSE_ZONES):
            raise errors.RejectedIdentifier(
                f"{value}: names in reverse-mapping zones are not certified; "
                "ask for the address itself with an identifier of type ip (RFC 8738)"
            )
        self._check_public_suffix(value, base, wildcard)
        if base in self._config.blocked_names or self._under_blocked_suffix(base):
            raise errors.RejectedIdentifier(
                f"{value}: this CA's policy forbids issuing for this name"
            )
        return name

    def _check_public_suffix(self, value: str, base: str, wildcard: bool) -> None:
        """BR 3.2.2.6 and Boulder's policy: a name must end in an ICANN
        public suffix and must not be one, nor be a wildcard over one."""
        suffix = icann_public_suffix(base)
        if suffix is None:
            if self._config.allow_unlisted_tlds:
                return
            tld = base.rsplit(".", 1)[-1]
            raise errors.RejectedIdentifier(
                f'{value}: top-level domain "{tld}" is not on the Public Suffix List, '
                "so it is not a public name"
            )
        if suffix == base:
            what = "a wildcard over a public suffix" if wildcard else "a public suffix"
            raise errors.RejectedIdentifier(
                f'{value}: the name is {what} ("{suffix}" is registry-controlled); '
                "ask for a name registered under it"
            )

    def _check_ip(self, value: str) -> str:
        try:
            canonical = normalize_ip_identifier(value)
        except IdentifierError as exc:
            raise errors.RejectedIdentifier(str(exc)) from None
        if canonical != value:
            # RFC 8738 §3: the value MUST be the RFC 1123 §2.1 dotted quad or
            # the RFC 5952 §4 IPv6 text; Boulder refuses other spellings too.
            raise errors.RejectedIdentifier(
                f'"{value}" is not in canonical form (RFC 8738 §3); write it as "{canonical}"'
            )
        address = ipaddress.ip_address(canonical)
        never = _range_reason(address, _NEVER_CERTIFIABLE)
        if never is not None:
            raise errors.RejectedIdentifier(f"{value}: the address is in {never}")
        if not self._config.allow_private_ip_identifiers:
            reason = special_purpose_reason(address)
            if reason is not None:
                raise errors.RejectedIdentifier(
                    f"{value}: the address is in {reason}; only public addresses are certified"
                )
        if not any(t in IP_CHALLENGE_TYPES for t in self.challenge_types):
            raise errors.RejectedIdentifier(
                f"{value}: IP identifiers need http-01 or tls-alpn-01, and neither is enabled"
            )
        return canonical

    def _under_blocked_suffix(self, name: str) -> bool:
        return any(name == s or name.endswith("." + s) for s in self._config.blocked_suffixes)

    def challenge_types_for(
        self, identifier_value: str, wildcard: bool, identifier_type: str = "dns"
    ) -> tuple[str, ...]:
        if identifier_type == "ip":
            return tuple(t for t in self.challenge_types if t in IP_CHALLENGE_TYPES)
        if wildcard:
            return tuple(t for t in self.challenge_types if t in WILDCARD_CHALLENGE_TYPES)
        return self.challenge_types

    # -- keys ------------------------------------------------------------
    # Sizes, curves, weak and blocked keys: ca/keypolicy.py (issue 5).

    def check_certificate_key(self, key: object) -> None:
        self._keys.check_certificate_key(key)

    def check_account_key(self, key: PublicKey) -> None:
        self._keys.check_account_key(key)

    # -- contacts (RFC 8555 §7.3) ----------------------------------------

    def check_contacts(self, contacts: tuple[str, ...]) -> tuple[str, ...]:
        if len(contacts) > self._config.max_contacts:
            raise errors.InvalidContact(
                f"too many contacts ({len(contacts)}); at most {self._config.max_contacts}"
            )
        return tuple(self._check_contact(c) for c in contacts)

    @staticmethod
    def _check_contact(contact: str) -> str:
        scheme, sep, address = contact.partition(":")
        if not sep or scheme.lower() != "mailto":
            raise errors.UnsupportedContact(
                f"contact {contact!r} is not supported; only mailto: URIs are"
            )
        # RFC 6068 allows several addresses and header fields; an ACME
        # contact is exactly one address (Boulder refuses the rest too).
        if "?" in address or "," in address or "%" in address:
            raise errors.InvalidContact(f"contact {contact!r} must be a single plain address")
        local, at, domain = address.rpartition("@")
        if not at or not _EMAIL_LOCAL.match(local):
            raise errors.InvalidContact(f"contact {contact!r} is not a valid email address")
        try:
            normalize_dns_identifier(domain)
        except IdentifierError:
            raise errors.InvalidContact(
                f"contact {contact!r} does not have a valid domain"
            ) from None
        return f"mailto:{address}"

    # -- profiles and validity ------------------------------------------

    def profile(self, name: str | None) -> ProfileConfig:
        chosen = name or self._config.default_profile
        try:
            return self._profiles[chosen]
        except KeyError:
            known = ", ".join(sorted(self._profiles))
            raise errors.InvalidProfile(
                f"profile {chosen!r} is not offered; choose one of: {known}"
            ) from None

    def check_validity(
        self,
        not_before: datetime | None,
        not_after: datetime | None,
        profile: ProfileConfig,
        now: datetime,
    ) -> None:
        """RFC 8555 §7.4 lets clients ask for a validity window; honour it
        only inside the profile's limits."""
        if not_before is None and not_after is None:
            return
        start = not_before or now
        if not_before is not None:
            if not_before < now - timedelta(minutes=5):
                raise errors.Malformed("notBefore must not lie in the past")
            if not_before > now + self._config.max_not_before_ahead:
                days = self._config.max_not_before_ahead.days
                raise errors.Malformed(f"notBefore may be at most {days} days ahead")
        if not_after is not None:
            if not_after <= start:
                raise errors.Malformed("notAfter must be later than notBefore")
            # RFC 5280 §4.1.2.5 / BR 7.1.2.7: the validity period includes
            # both notBefore and notAfter, so a window of exactly the
            # profile's span would be one second longer than the profile.
            if not_after - start >= profile.validity:
                raise errors.Malformed(
                    f"requested validity exceeds the {profile.name} profile's "
                    f"{profile.validity.days} days"
                )
