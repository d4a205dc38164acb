"""Asynchronous DNS for the VA: a small stub resolver over dnspython's wire code.

Every failure becomes a ``DnsLookupError`` carrying a ``dns`` problem whose
detail tells the applicant what to fix, worded like Boulder's so that people
searching for the message find the existing advice.

Why not ``dns.asyncresolver.Resolver``: its general machinery (resolution
state objects, a datagram transport per query, one task per record type)
cost about as much CPU as the whole http-01 fetch, once per validation, on the
event loop that also serves the web front end. A VA lookup needs far less:
the configured recursive resolvers in order, no cache (answers are trusted
once, for this validation only), no search list. So we build queries by
hand (a fixed 12-byte header and one question: cheaper than
``dns.message.make_query``), parse answers with ``dns.message.from_wire`` and
``Message.resolve_chaining`` (the same parser and CNAME-chain walk the
Resolver uses), and do the socket part ourselves: one connected UDP socket
per query and nameserver, with a TCP retry (``dns.asyncquery.tcp``) for a
truncated answer (RFC 1035 §4.2.1, RFC 7766 §5).

Queries carry EDNS (RFC 6891) with a 1232-octet UDP payload (the DNS Flag
Day 2020 value: no IP fragmentation) and no DO bit: answers come back
without RRSIGs, since validation is the resolver's job. EDNS is also what
lets a validating resolver say why it failed: an RFC 8914 Extended DNS Error
in a SERVFAIL ("DNSSEC Bogus", "Signature Expired", ...) goes into the
problem detail, so an applicant whose signatures are broken is told to look
at DNSSEC rather than at their nameservers in general.

DNSSEC: the VA does not validate; it is pointed at a validating resolver
(``--dns-resolver``, e.g. Unbound) and trusts its verdict. Such a resolver
answers SERVFAIL for Bogus data (RFC 4035 §5.5), which maps to a ``dns``
problem like any failed lookup, so a validation failure never becomes an
answer, an empty RRset or, for CAA, permission (RFC 8659 §3).

Failure mapping, as dnspython's Resolver did it:
- a response that does not parse or answers another question is ignored, as
  is an ICMP "port unreachable" (both are spoofable; an unconnected socket
  would not even see the latter), and the wait goes on;
- NXDOMAIN is final (``NXDOMAIN`` detail); YXDOMAIN is final ("failed");
- a CNAME chain that loops or is too long is final (it is the domain's data);
- any other rcode, a malformed answer section (data for an NXDOMAIN), a
  socket error or a bad TCP retry take that nameserver
  out for this lookup and the next one is asked; none left → ``SERVFAIL``;
- the whole lookup has ``dns_timeout``; when it runs out → ``timed out``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from dataclasses import dataclass

import dns.asyncquery
import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.resolver

from certmint.ca.va.addresses import address_refusal, parse_ip
from certmint.ca.va.model import VAConfig
from certmint.protocol.problems import Problem, ProblemType

Nameserver = tuple[str, int]  # (IP address, port)
# Enough for any answer to our EDNS payload size and for a server that
# ignores that limit.
_MAX_DATAGRAM = 65535
# RFC 6891 §6.2.5 requestor's UDP payload size; 1232 is DNS Flag Day 2020's
# recommendation (fits the IPv6 minimum MTU, so answers are not fragmented).
EDNS_PAYLOAD = 1232
# The OPT pseudo-RR (RFC 6891 §6.1.2): root owner, TYPE 41, CLASS = payload
# size, TTL = extended RCODE 0, version 0, flags 0 (no DO), no options.
_OPT_RR = b"\0" + struct.pack("!HHIH", 41, EDNS_PAYLOAD, 0, 0)
# RFC 8914 §4 INFO-CODEs 1-12 all say DNSSEC validation failed (unsupported
# algorithm or digest, bogus, indeterminate, expired or not-yet-valid
# signatures, missing DNSKEY/RRSIG/NSEC, no zone key bit).
_DNSSEC_EDE_CODES = frozenset(range(1, 13))
# Bounds what the resolver's EXTRA-TEXT may add to a problem detail.
_EDE_TEXT_LIMIT = 200


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


class NxDomainError(DnsLookupError):
    """The name does not exist: final for an address lookup, but only "no
    records here" for a CAA lookup (RFC 8659 §3 climbs past it)."""


def _nxdomain(rdtype: str, name: str) -> DnsLookupError:
    return NxDomainError(
        dns_problem(
            f"DNS problem: NXDOMAIN looking up {rdtype} for {name} - "
            "check that a DNS record exists for this domain"
        )
    )


@dataclass(frozen=True)
class ExtendedError:
    """An RFC 8914 Extended DNS Error the resolver attached to a failure."""

    code: int  # INFO-CODE
    text: str  # as dnspython renders it: "EDE 6 (DNSSEC Bogus): <EXTRA-TEXT>"

    @property
    def is_dnssec(self) -> bool:
        return self.code in _DNSSEC_EDE_CODES


def extended_error(message: dns.message.Message) -> ExtendedError | None:
    """The first Extended DNS Error of ``message`` (a DNSSEC one if any),
    rendered printable and bounded: it ends up in a problem detail."""
    found = message.extended_errors()
    if not found:
        return None
    option = next((o for o in found if int(o.code) in _DNSSEC_EDE_CODES), found[0])
    text = option.to_text()
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:_EDE_TEXT_LIMIT])
    return ExtendedError(int(option.code), shown + ("..." if len(text) > _EDE_TEXT_LIMIT else ""))


def _servfail(rdtype: str, name: str, extended: ExtendedError | None = None) -> DnsLookupError:
    """Boulder's wording, plus the resolver's Extended DNS Error when it gave
    one; a DNSSEC failure names DNSSEC as the thing to fix."""
    advice = "the domain's nameservers may be malfunctioning"
    if extended is not None and extended.is_dnssec:
        advice = "DNSSEC validation failed: check the domain's DS and DNSKEY records and signatures"
    if extended is not None:
        advice += f" (resolver: {extended.text})"
    return DnsLookupError(
        dns_problem(f"DNS problem: SERVFAIL looking up {rdtype} for {name} - {advice}")
    )


def _timed_out(rdtype: str, name: str) -> DnsLookupError:
    return DnsLookupError(
        dns_problem(
            f"DNS problem: query timed out looking up {rdtype} for {name} - "
            "check that the domain's nameservers answer"
        )
    )


def _cname_chain(rdtype: str, name: str) -> DnsLookupError:
    return DnsLookupError(
        dns_problem(
            f"DNS problem: CNAME chain too long or looping looking up {rdtype} for {name} - "
            "check the domain's CNAME records"
        )
    )


def _failed(rdtype: str, name: str) -> DnsLookupError:
    return DnsLookupError(dns_problem(f"DNS problem: lookup of {rdtype} for {name} failed"))


def parse_nameserver(spec: str) -> Nameserver:
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


def configured_nameservers(config: VAConfig) -> tuple[Nameserver, ...]:
    """The resolvers to ask, in order: the configured ones, else /etc/resolv.conf."""
    if config.resolvers:
        return tuple(parse_nameserver(spec) for spec in config.resolvers)
    system = dns.resolver.Resolver()  # reads /etc/resolv.conf once, at start-up
    found: list[Nameserver] = []
    for entry in system.nameservers:
        if isinstance(entry, dns.nameserver.Do53Nameserver):
            found.append((entry.address, entry.port))
        elif isinstance(entry, str) and parse_ip(entry) is not None:
            found.append((entry, system.nameserver_ports.get(entry, system.port)))
    return tuple(found)


# Names as the VA passes them (lower-case LDH labels, "_" for _acme-challenge):
# encoded by hand; anything else goes through dnspython's full name parser.
_PLAIN_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")
# RFC 1035 §4.1.1 header flags.
_QR, _RD = 0x8000, 0x0100
# dnspython's is_response accepts these without a question section.
_QUESTIONLESS_RCODES = frozenset(
    {dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED}
)


def _name_wire(name: str) -> bytes:
    """``name`` as an absolute name in wire form (RFC 1035 §3.1), or ValueError
    / ``dns.exception.DNSException`` when it is not a valid name."""
    if len(name) <= 253 and _PLAIN_NAME.fullmatch(name):
        labels = name.encode("ascii").split(b".")
        return b"".join(bytes((len(label),)) + label for label in labels) + b"\0"
    return dns.name.from_text(name).to_wire() or b""


@dataclass(frozen=True)
class _Query:
    """One question, with the random ID it goes out under.

    Built by hand rather than with ``dns.message.make_query``: that plus
    ``to_wire`` cost more than parsing the answer. The layout is RFC 1035
    §4.1: header (ID, RD set because the configured servers are recursive
    resolvers, one question, one additional record), then QNAME, QTYPE,
    QCLASS=IN, then the OPT record (RFC 6891 §6.1.1).
    """

    name: str
    rdtype: dns.rdatatype.RdataType
    id: int
    question: bytes  # the question section as sent

    @classmethod
    def build(cls, name: str, name_wire: bytes, rdtype: str) -> _Query:
        kind = dns.rdatatype.from_text(rdtype)
        # dnspython's query-ID source, as make_query uses (RFC 5452 §9.2).
        return cls(name, kind, dns.entropy.random_16(), name_wire + struct.pack("!HH", kind, 1))

    @property
    def wire(self) -> bytes:
        return struct.pack("!HHHHHH", self.id, _RD, 1, 0, 0, 1) + self.question + _OPT_RR

    def is_answered_by(self, wire: bytes) -> bool:
        """Whether a datagram claims to answer this query (the checks of
        dnspython's ``Message.is_response``, done on the raw bytes so that
        strays cost no parsing). Names compare case-insensitively (RFC 4343)."""
        if len(wire) < 12:
            return False
        reply_id, flags, count = struct.unpack_from("!HHH", wire)
        if reply_id != self.id or not flags & _QR or (flags >> 11) & 0xF != 0:
            return False  # not a response, or not to this ID, or not a QUERY
        if count == 0:
            return (flags & 0xF) in _QUESTIONLESS_RCODES
        end = 12 + len(self.question)
        return (
            count == 1
            and wire[12 : end - 4].lower() == self.question[:-4].lower()
            and wire[end - 4 : end] == self.question[-4:]
        )

    def as_message(self) -> dns.message.QueryMessage:
        """The same query as a dnspython message, for the TCP retry."""
        message = dns.message.make_query(self.name, self.rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        message.id = self.id
        return message


@dataclass
class _Reply:
    message: dns.message.QueryMessage
    truncated: bool


def _parse_reply(wire: bytes) -> _Reply | None:
    """A datagram as a message, or None when it does not parse (ignored)."""
    truncated = False
    try:
        message = dns.message.from_wire(wire, raise_on_truncation=True)
    except dns.message.Truncated as exc:
        message, truncated = exc.message(), True  # type: ignore[no-untyped-call]
    except Exception:
        # Hostile bytes can break the parser in many ways; like dnspython's
        # ignore_errors, a datagram that does not parse is not an answer.
        return None
    if not isinstance(message, dns.message.QueryMessage):
        return None  # another opcode: not an answer to our query
    return _Reply(message, truncated)


async def _exchange_udp(server: Nameserver, query: _Query, deadline: float) -> _Reply | None:
    """Send ``query`` from a fresh socket and wait for its reply until
    ``deadline``; None if none came. Raises ``OSError`` if the socket fails.

    A fresh socket per query gets a fresh kernel-chosen source port, which
    with the random query ID is the classic defence against off-path answer
    spoofing (RFC 5452 §4, §9.2); ``connect`` makes the kernel drop datagrams
    from any other address.
    """
    host, port = server
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((host, port))
        await loop.sock_sendall(sock, query.wire)
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    try:
                        wire = await loop.sock_recv(sock, _MAX_DATAGRAM)
                    except ConnectionRefusedError:
                        continue  # ICMP is spoofable; wait for a real answer
                    if query.is_answered_by(wire) and (reply := _parse_reply(wire)) is not None:
                        return reply
        except TimeoutError:
            return None


class _BadServer(Exception):
    """This nameserver gave no usable answer; ask the next one."""

    def __init__(self, extended: ExtendedError | None = None) -> None:
        super().__init__()
        self.extended = extended


def _answer_rdatas(
    message: dns.message.QueryMessage, rdtype: str, name: str
) -> list[dns.rdata.Rdata]:
    """The records answering the question, CNAME chain followed (bounded by
    dnspython's MAX_CHAIN). A chain that loops or runs too long is the
    domain's data, not a broken server, so it is final and says so; any other
    malformed answer raises ``_BadServer``."""
    try:
        chain = message.resolve_chaining()
    except dns.message.ChainTooLong as exc:
        raise _cname_chain(rdtype, name) from exc
    except dns.exception.DNSException as exc:  # AnswerForNXDOMAIN, FormError
        raise _BadServer from exc
    return list(chain.answer) if chain.answer is not None else []


class VAResolver:
    def __init__(self, config: VAConfig) -> None:
        self._nameservers = configured_nameservers(config)
        self._timeout = config.dns_timeout

    @property
    def nameservers(self) -> tuple[Nameserver, ...]:
        return self._nameservers

    async def _lookup(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """The ``rdtype`` records of ``name``; [] when the name exists without
        any. Raises ``DnsLookupError``."""
        try:
            # Absolute: search lists never apply.
            query = _Query.build(name, _name_wire(name), rdtype)
        except (dns.exception.DNSException, ValueError) as exc:
            raise _failed(rdtype, name) from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        extended: ExtendedError | None = None
        for server in self._nameservers:
            if loop.time() >= deadline:
                break
            try:
                return await self._ask(server, query, deadline, rdtype, name)
            except _BadServer as exc:
                extended = exc.extended or extended
            except OSError:
                pass
            # dnspython's Resolver: take this one out, ask the next.
        if loop.time() >= deadline:
            raise _timed_out(rdtype, name)
        raise _servfail(rdtype, name, extended)

    async def _ask(
        self,
        server: Nameserver,
        query: _Query,
        deadline: float,
        rdtype: str,
        name: str,
    ) -> list[dns.rdata.Rdata]:
        """One nameserver's answer; ``_BadServer`` or ``OSError`` when the next
        nameserver should be asked; ``DnsLookupError`` when the answer is final."""
        reply = await _exchange_udp(server, query, deadline)
        if reply is None:
            # The lookup's whole lifetime went to this server, as it did with
            # dnspython's Resolver (timeout == lifetime).
            raise _timed_out(rdtype, name)
        message = reply.message
        if reply.truncated:
            # RFC 7766 §5: a truncated UDP answer is retried over TCP.
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise _timed_out(rdtype, name)
            try:
                over_tcp = await dns.asyncquery.tcp(
                    query.as_message(), server[0], timeout=remaining, port=server[1]
                )
            except dns.exception.Timeout as exc:
                raise _timed_out(rdtype, name) from exc
            except (EOFError, dns.exception.DNSException) as exc:
                raise _BadServer from exc
            if over_tcp.flags & dns.flags.TC or not isinstance(over_tcp, dns.message.QueryMessage):
                raise _BadServer  # truncation over TCP is no good
            message = over_tcp
        rcode = message.rcode()
        if rcode == dns.rcode.NOERROR:
            return _answer_rdatas(message, rdtype, name)
        if rcode == dns.rcode.NXDOMAIN:
            _answer_rdatas(message, rdtype, name)  # an NXDOMAIN carrying the answer is malformed
            raise _nxdomain(rdtype, name)
        if rcode == dns.rcode.YXDOMAIN:
            raise _failed(rdtype, name)
        # SERVFAIL (a validating resolver's answer for Bogus data, RFC 4035
        # §5.5), REFUSED, NOTIMP, FORMERR, ...: never an answer.
        raise _BadServer(extended_error(message))

    async def lookup_host(self, name: str) -> HostAddresses:
        """A and AAAA for ``name``, queried concurrently.

        One family failing is tolerated when the other answers (Boulder does
        the same): many names have a broken AAAA setup but a working A.
        """
        results = await asyncio.gather(
            self._lookup(name, "AAAA"), self._lookup(name, "A"), return_exceptions=True
        )
        aaaa, a = results
        for outcome in results:
            if isinstance(outcome, BaseException) and not isinstance(outcome, DnsLookupError):
                raise outcome
        ipv6 = tuple(r.to_text() for r in aaaa) if isinstance(aaaa, list) else ()
        ipv4 = tuple(r.to_text() for r in a) if isinstance(a, list) else ()
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
        values: list[str] = []
        for rdata in await self._lookup(name, "TXT"):
            strings = getattr(rdata, "strings", ())
            values.append(b"".join(strings).decode("utf-8", "replace"))
        return tuple(values)

    async def lookup_caa(self, name: str) -> tuple[CAARecord, ...]:
        """The CAA RRset at ``name`` (CNAMEs followed, as for any type: RFC
        8659 §3); empty when the name has none or does not exist (Boulder's
        bdns does the same). SERVFAIL and timeouts raise ``DnsLookupError``:
        a CA MUST NOT treat a failed lookup as permission (RFC 8659 §3)."""
        try:
            rdatas = await self._lookup(name, "CAA")
        except NxDomainError:
            return ()
        records: list[CAARecord] = []
        for rdata in rdatas:
            tag = getattr(rdata, "tag", b"")
            value = getattr(rdata, "value", b"")
            records.append(
                CAARecord(
                    flags=int(getattr(rdata, "flags", 0)),
                    # Tags are ASCII alphanumerics (RFC 8659 §4.1); anything
                    # else is an unknown tag, never one we recognise.
                    tag=tag.decode("ascii", "replace"),
                    # Values are compared against ASCII grammars; a non-ASCII
                    # octet becomes U+FFFD and so fails every grammar.
                    value=value.decode("ascii", "replace"),
                )
            )
        return tuple(records)


@dataclass(frozen=True)
class CAARecord:
    """One CAA resource record (RFC 8659 §4.1), as text."""

    flags: int
    tag: str
    value: str


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
