"""Asynchronous DNS for the VA, via dnspython's ``dns.asyncresolver``.

Every failure becomes a ``DnsLookupError`` carrying a ``dns`` problem whose
detail tells the applicant what to fix, worded like Boulder's so that people
searching for the message find the existing advice. CNAME chains in answers
are followed by dnspython; truncated UDP answers are retried over TCP by it too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from certmint.ca.va.addresses import address_refusal, parse_ip
from certmint.ca.va.model import VAConfig
from certmint.protocol.problems import Problem, ProblemType


class DnsLookupError(Exception):
    """Internal to the VA: always caught and turned into a result's problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


@dataclass(frozen=True)
class HostAddresses:
    ipv6: tuple[str, ...]
    ipv4: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.ipv6 + self.ipv4


def dns_problem(detail: str) -> Problem:
    return Problem(type=ProblemType.DNS, detail=detail, status=400)


def parse_nameserver(spec: str) -> tuple[str, int]:
    """``"ip"``, ``"ip:port"`` or ``"[v6]:port"`` → (ip, port)."""
    text = spec.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if sep else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""  # bare IPv4 or bare IPv6
    if parse_ip(host) is None:
        raise ValueError(f"resolver {spec!r} is not an IP address")
    port = int(port_text) if port_text else 53
    if not 0 < port < 65536:
        raise ValueError(f"resolver {spec!r} has an invalid port")
    return host, port


def build_resolver(config: VAConfig) -> dns.asyncresolver.Resolver:
    if config.resolvers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port)
            for host, port in (parse_nameserver(s) for s in config.resolvers)
        ]
    else:
        resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
    resolver.timeout = config.dns_timeout
    resolver.lifetime = config.dns_timeout
    resolver.cache = None  # answers are trusted once, for this validation only
    return resolver


class VAResolver:
    def __init__(self, config: VAConfig) -> None:
        self._resolver = build_resolver(config)

    async def _resolve(self, name: str, rdtype: str) -> dns.resolver.Answer:
        try:
            qname = dns.name.from_text(name)  # absolute: search lists never apply
            answer = await self._resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            raise DnsLookupError(
                dns_problem(
                    f"DNS problem: NXDOMAIN looking up {rdtype} for {name} - "
                    "check that a DNS record exists for this domain"
                )
            ) from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsLookupError(
                dns_problem(
                    f"DNS problem: SERVFAIL looking up {rdtype} for {name} - "
                    "the domain's nameservers may be malfunctioning"
                )
            ) from exc
        except (dns.exception.Timeout, TimeoutError) as exc:
            raise DnsLookupError(
                dns_problem(
                    f"DNS problem: query timed out looking up {rdtype} for {name} - "
                    "check that the domain's nameservers answer"
                )
            ) from exc
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise DnsLookupError(
                dns_problem(f"DNS problem: lookup of {rdtype} for {name} failed")
            ) from exc
        return answer

    async def _query(self, name: str, rdtype: str) -> list[str]:
        """Texts of the ``rdtype`` records for ``name``; [] when none exist."""
        answer = await self._resolve(name, rdtype)
        if answer.rrset is None:
            return []
        return [rdata.to_text() for rdata in answer.rrset]

    async def lookup_host(self, name: str) -> HostAddresses:
        """A and AAAA for ``name``, queried concurrently.

        One family failing is tolerated when the other answers (Boulder does
        the same): many names have a broken AAAA setup but a working A.
        """
        results = await asyncio.gather(
            self._query(name, "AAAA"), self._query(name, "A"), return_exceptions=True
        )
        aaaa, a = results
        for outcome in results:
            if isinstance(outcome, BaseException) and not isinstance(outcome, DnsLookupError):
                raise outcome
        ipv6 = tuple(aaaa) if isinstance(aaaa, list) else ()
        ipv4 = tuple(a) if isinstance(a, list) else ()
        if not ipv6 and not ipv4:
            # Prefer reporting the A failure: that is the record people set.
            for outcome in (a, aaaa):
                if isinstance(outcome, DnsLookupError):
                    raise outcome
            raise DnsLookupError(dns_problem(f"No valid IP addresses found for {name}"))
        return HostAddresses(ipv6=ipv6, ipv4=ipv4)

    async def lookup_txt(self, name: str) -> tuple[str, ...]:
        """TXT values of ``name``, each rdata's character strings joined
        (RFC 7208 §3.3 style), decoded leniently: they are compared, not shown."""
        answer = await self._resolve(name, "TXT")
        if answer.rrset is None:
            return ()
        values: list[str] = []
        for rdata in answer.rrset:
            strings = getattr(rdata, "strings", ())
            values.append(b"".join(strings).decode("utf-8", "replace"))
        return tuple(values)


@dataclass(frozen=True)
class DialPlan:
    """Everything resolved for a host, and the addresses to try in order."""

    resolved: tuple[str, ...]
    candidates: tuple[str, ...]
    refusal: str | None = None  # why ``candidates`` is empty, if it is


async def plan_dial(
    resolver: VAResolver, host: str, *, allow_private: bool
) -> DialPlan | DnsLookupError:
    """Resolve ``host`` (unless it is an IP literal) and choose what to dial.

    Boulder's order: the first IPv6 address, then, only if connecting to it
    fails, the first IPv4 address. Non-public addresses are dropped unless
    ``allow_private``; ``refusal`` then says why nothing is left to dial.
    """
    literal = parse_ip(host)
    v6: tuple[str, ...]
    v4: tuple[str, ...]
    if literal is not None:
        v6, v4 = ((str(literal),), ()) if literal.version == 6 else ((), (str(literal),))
    else:
        try:
            found = await resolver.lookup_host(host)
        except DnsLookupError as exc:
            return exc
        v6, v4 = found.ipv6, found.ipv4
    resolved = v6 + v4
    if not allow_private:
        v6 = tuple(a for a in v6 if address_refusal(a) is None)
        v4 = tuple(a for a in v4 if address_refusal(a) is None)
        if not v6 and not v4:
            first = resolved[0]
            return DialPlan(
                resolved=resolved,
                candidates=(),
                refusal=(
                    f"{host} resolves to {first}, which is {address_refusal(first)}; "
                    "the CA only connects to public addresses"
                ),
            )
    return DialPlan(resolved=resolved, candidates=(*v6[:1], *v4[:1]))
