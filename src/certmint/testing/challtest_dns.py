"""The challenge test server's DNS side: a mock zone and UDP/TCP listeners.

Like pebble-challtestsrv, every name "exists": A queries fall back to a
default IPv4 address so a CA under test can reach the test HTTP server for any
name. CNAMEs are presented the way a recursive resolver would (the CNAME plus
the target's records), so the VA's CNAME handling is exercised for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CAA
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

log = logging.getLogger(__name__)

MAX_CNAME_HOPS = 8
TCP_IDLE_DEADLINE = 10.0
_IN = dns.rdataclass.IN


def canonical(name: str) -> str:
    """Names are matched case-insensitively and stored without the root dot."""
    return name.strip().lower().rstrip(".")


@dataclass(frozen=True)
class CAAPolicy:
    tag: str
    value: str
    flags: int = 0


@dataclass(frozen=True)
class DnsQueryRecord:
    name: str
    qtype: str
    peer: str


class MockZone:
    """Thread-safe record store: tests mutate it from their own thread."""

    def __init__(self, default_ipv4: str | None, default_ipv6: str | None) -> None:
        self._lock = threading.Lock()
        self.default_ipv4 = default_ipv4
        self.default_ipv6 = default_ipv6
        self._a: dict[str, list[str]] = {}
        # One-shot A answers, served to the next A query only (DNS rebinding).
        self._a_once: dict[str, list[str]] = {}
        self._aaaa: dict[str, list[str]] = {}
        self._txt: dict[str, list[str]] = {}
        self._caa: dict[str, list[CAAPolicy]] = {}
        self._cname: dict[str, str] = {}
        self._servfail: set[str] = set()
        self.history: deque[DnsQueryRecord] = deque(maxlen=1000)

    # -- mutations (the management API and in-process tests call these) --

    def set_default_ipv4(self, ip: str | None) -> None:
        with self._lock:
            self.default_ipv4 = str(ipaddress.IPv4Address(ip)) if ip else None

    def set_default_ipv6(self, ip: str | None) -> None:
        with self._lock:
            self.default_ipv6 = str(ipaddress.IPv6Address(ip)) if ip else None

    def add_a(self, host: str, addresses: list[str]) -> None:
        checked = [str(ipaddress.IPv4Address(a)) for a in addresses]
        with self._lock:
            self._a.setdefault(canonical(host), []).extend(checked)

    def clear_a(self, host: str) -> None:
        with self._lock:
            self._a.pop(canonical(host), None)
            self._a_once.pop(canonical(host), None)

    def add_a_once(self, host: str, addresses: list[str]) -> None:
        """Answer the next A query for ``host`` with ``addresses``, and later
        ones as usual: a rebinding attacker's name, whose answer changes
        between a validator's check and a second lookup it should not make."""
        checked = [str(ipaddress.IPv4Address(a)) for a in addresses]
        with self._lock:
            self._a_once[canonical(host)] = checked

    def add_aaaa(self, host: str, addresses: list[str]) -> None:
        checked = [str(ipaddress.IPv6Address(a)) for a in addresses]
        with self._lock:
            self._aaaa.setdefault(canonical(host), []).extend(checked)

    def clear_aaaa(self, host: str) -> None:
        with self._lock:
            self._aaaa.pop(canonical(host), None)

    def add_caa(self, host: str, policies: list[CAAPolicy]) -> None:
        with self._lock:
            self._caa.setdefault(canonical(host), []).extend(policies)

    def clear_caa(self, host: str) -> None:
        with self._lock:
            self._caa.pop(canonical(host), None)

    def set_txt(self, host: str, value: str) -> None:
        """Adds a value (pebble-challtestsrv's set-txt also appends)."""
        with self._lock:
            values = self._txt.setdefault(canonical(host), [])
            if value not in values:
                values.append(value)

    def clear_txt(self, host: str) -> None:
        with self._lock:
            self._txt.pop(canonical(host), None)

    def set_cname(self, host: str, target: str) -> None:
        with self._lock:
            self._cname[canonical(host)] = canonical(target)

    def clear_cname(self, host: str) -> None:
        with self._lock:
            self._cname.pop(canonical(host), None)

    def set_servfail(self, host: str) -> None:
        with self._lock:
            self._servfail.add(canonical(host))

    def clear_servfail(self, host: str) -> None:
        with self._lock:
            self._servfail.discard(canonical(host))

    # -- answering --

    def _rdatas(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[dns.rdata.Rdata]:
        if rdtype == dns.rdatatype.A:
            once = self._a_once.pop(name, None)  # under self._lock (see answer)
            addresses = (
                once or self._a.get(name) or ([self.default_ipv4] if self.default_ipv4 else [])
            )
            return [_rdata(dns.rdtypes.IN.A.A, rdtype, a) for a in addresses]
        if rdtype == dns.rdatatype.AAAA:
            addresses = self._aaaa.get(name) or ([self.default_ipv6] if self.default_ipv6 else [])
            return [_rdata(dns.rdtypes.IN.AAAA.AAAA, rdtype, a) for a in addresses]
        if rdtype == dns.rdatatype.TXT:
            # RFC 1035 §3.3.14: character-strings are at most 255 octets each.
            return [
                _rdata(dns.rdtypes.ANY.TXT.TXT, rdtype, _split_255(v.encode()))
                for v in self._txt.get(name, [])
            ]
        if rdtype == dns.rdatatype.CAA:
            return [
                _rdata(dns.rdtypes.ANY.CAA.CAA, rdtype, p.flags, p.tag.encode(), p.value.encode())
                for p in self._caa.get(name, [])
            ]
        return []

    def _exists(self, name: str) -> bool:
        if self.default_ipv4 or self.default_ipv6:
            return True
        stores: tuple[dict[str, list[str]] | dict[str, list[CAAPolicy]] | dict[str, str], ...]
        stores = (self._a, self._a_once, self._aaaa, self._txt, self._caa, self._cname)
        return any(name in store for store in stores)

    def answer(self, query: dns.message.Message, peer: str = "?") -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1 or query.opcode() != 0:
            response.set_rcode(dns.rcode.FORMERR if query.opcode() == 0 else dns.rcode.NOTIMP)
            return response
        question = query.question[0]
        rdtype = dns.rdatatype.RdataType(question.rdtype)
        first = canonical(question.name.to_text())
        self.history.append(DnsQueryRecord(first, dns.rdatatype.to_text(rdtype), peer))
        if question.rdclass != _IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        with self._lock:
            owner, current = question.name, first
            for _ in range(MAX_CNAME_HOPS + 1):
                if current in self._servfail:
                    response.answer.clear()
                    response.set_rcode(dns.rcode.SERVFAIL)
                    return response
                target = self._cname.get(current)
                if target is not None and rdtype != dns.rdatatype.CNAME:
                    cname = _rdata(
                        dns.rdtypes.ANY.CNAME.CNAME, dns.rdatatype.CNAME, dns.name.from_text(target)
                    )
                    response.answer.append(dns.rrset.from_rdata(owner, 0, cname))
                    owner, current = dns.name.from_text(target), target
                    continue
                if target is not None:  # a CNAME query for a name that has one
                    cname = _rdata(
                        dns.rdtypes.ANY.CNAME.CNAME, dns.rdatatype.CNAME, dns.name.from_text(target)
                    )
                    response.answer.append(dns.rrset.from_rdata(owner, 0, cname))
                    break
                rdatas = self._rdatas(current, rdtype)
                if rdatas:
                    response.answer.append(dns.rrset.from_rdata_list(owner, 0, rdatas))
                break
            if not response.answer and not self._exists(first):
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response


def _rdata(cls: Any, rdtype: dns.rdatatype.RdataType, *fields: Any) -> dns.rdata.Rdata:
    # dnspython's rdata constructors are untyped; keep the cast in one place.
    return cast(dns.rdata.Rdata, cls(_IN, rdtype, *fields))


def _split_255(data: bytes) -> list[bytes]:
    return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, zone: MockZone) -> None:
        self._zone = zone
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        wire = _respond(self._zone, data, str(addr[0]), tcp=False)
        if wire is not None and self._transport is not None:
            self._transport.sendto(wire, addr)


def _respond(zone: MockZone, data: bytes, peer: str, *, tcp: bool) -> bytes | None:
    try:
        query = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError):
        return None  # not worth answering: the sender is not speaking DNS
    response = zone.answer(query, peer)
    if tcp:
        return response.to_wire(max_size=65535)
    limit = max(512, query.payload) if query.edns >= 0 else 512
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        # RFC 1035 §4.2.1: set TC and let the client retry over TCP.
        response.answer.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


async def _serve_tcp(
    zone: MockZone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    peer = writer.get_extra_info("peername")
    peer_text = str(peer[0]) if isinstance(peer, tuple) else "?"
    try:
        while True:
            async with asyncio.timeout(TCP_IDLE_DEADLINE):
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(length)
            wire = _respond(zone, data, peer_text, tcp=True)
            if wire is None:
                return
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        return
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


class DnsListener:
    """UDP and TCP on the same port (RFC 7766: TCP support is mandatory)."""

    def __init__(self, zone: MockZone) -> None:
        self._zone = zone
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        # With port 0 the UDP port may already be taken for TCP: retry a bit.
        for attempt in range(20):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self._zone), local_addr=(host, port)
            )
            chosen = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(
                    lambda r, w: _serve_tcp(self._zone, r, w), host, chosen
                )
            except OSError:
                transport.close()
                if port != 0 or attempt == 19:
                    raise
                continue
            self._udp = transport
            self.port = chosen
            return

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
