"""The VA's stub resolver against scripted DNS servers on 127.0.0.1: what it
does with truncation, stray and malformed datagrams, bad rcodes, CNAME chains
and silence. Each server answers from a script, so every case is exact."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

import anyio
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from certmint.ca.va.model import VAConfig
from certmint.ca.va.resolver import DnsLookupError, VAResolver

# Given the parsed query, the datagrams to send back (bytes, in order).
Script = Callable[[dns.message.Message], list[bytes]]


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    return "asyncio", {"use_uvloop": request.param == "uvloop"}


def answer(
    query: dns.message.Message, *records: str, rcode: dns.rcode.Rcode = dns.rcode.NOERROR
) -> bytes:
    """A reply to ``query`` with answer records given as zone-file text
    (``"owner ttl class type data"``)."""
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    for text in records:
        owner, ttl, rdclass, rdtype, data = text.split(maxsplit=4)
        reply.answer.append(dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, data))
    return reply.to_wire()


class _UdpScript(asyncio.DatagramProtocol):
    def __init__(self, script: Script, seen: list[str]) -> None:
        self._script = script
        self._seen = seen
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        self._seen.append(f"udp {dns.rdatatype.to_text(query.question[0].rdtype)}")
        assert self._transport is not None
        for datagram in self._script(query):
            self._transport.sendto(datagram, addr)


@asynccontextmanager
async def dns_server(
    udp: Script, tcp: Script | None = None
) -> AsyncIterator[tuple[str, list[str]]]:
    """("127.0.0.1:port", log of queries seen) for a UDP (+ TCP) script."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _UdpScript(udp, seen), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    tcp_server: asyncio.Server | None = None
    if tcp is not None:
        tcp_script = tcp

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                size = int.from_bytes(await reader.readexactly(2), "big")
                query = dns.message.from_wire(await reader.readexactly(size))
                seen.append(f"tcp {dns.rdatatype.to_text(query.question[0].rdtype)}")
                for wire in tcp_script(query):
                    writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
            finally:
                writer.close()

        tcp_server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        transport.close()
        if tcp_server is not None:
            tcp_server.close()
            await tcp_server.wait_closed()


def resolver(*servers: str, timeout: float = 1.0) -> VAResolver:
    return VAResolver(VAConfig(resolvers=servers, dns_timeout=timeout))


def a_only(query: dns.message.Message) -> list[bytes]:
    if query.question[0].rdtype == dns.rdatatype.A:
        return [answer(query, "example.com. 60 IN A 192.0.2.1")]
    return [answer(query)]  # NOERROR, no AAAA


async def lookup_problem(r: VAResolver, name: str = "example.com") -> str:
    with pytest.raises(DnsLookupError) as caught:
        with anyio.fail_after(5):
            await r.lookup_host(name)
    return caught.value.problem.detail


@pytest.mark.anyio
async def test_plain_answer() -> None:
    async with dns_server(a_only) as (where, seen):
        found = await resolver(where).lookup_host("example.com")
    assert (found.ipv6, found.ipv4) == ((), ("192.0.2.1",))
    assert sorted(seen) == ["udp A", "udp AAAA"]


@pytest.mark.anyio
async def test_truncated_udp_answer_is_retried_over_tcp() -> None:
    def truncated(query: dns.message.Message) -> list[bytes]:
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.TC
        return [reply.to_wire()]

    async with dns_server(truncated, tcp=a_only) as (where, seen):
        found = await resolver(where).lookup_host("example.com")
    assert found.ipv4 == ("192.0.2.1",)
    assert sorted(seen) == ["tcp A", "tcp AAAA", "udp A", "udp AAAA"]


@pytest.mark.anyio
async def test_stray_and_malformed_datagrams_are_ignored() -> None:
    def noisy(query: dns.message.Message) -> list[bytes]:
        other_id = dns.message.make_response(query)
        other_id.id = (query.id + 1) & 0xFFFF
        other_id.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "203.0.113.66"))
        other_question = dns.message.make_query("evil.example.", query.question[0].rdtype)
        other_question.id = query.id
        spoof = dns.message.make_response(other_question)
        spoof.answer.append(dns.rrset.from_text("evil.example.", 60, "IN", "A", "203.0.113.67"))
        return [b"\x00garbage", other_id.to_wire(), spoof.to_wire(), *a_only(query)]

    async with dns_server(noisy) as (where, _):
        found = await resolver(where).lookup_host("example.com")
    assert found.ipv4 == ("192.0.2.1",)


@pytest.mark.anyio
async def test_servfail_moves_on_to_the_next_nameserver() -> None:
    def servfail(query: dns.message.Message) -> list[bytes]:
        return [answer(query, rcode=dns.rcode.SERVFAIL)]

    async with dns_server(servfail) as (first, first_seen), dns_server(a_only) as (second, _):
        found = await resolver(first, second).lookup_host("example.com")
    assert found.ipv4 == ("192.0.2.1",)
    assert sorted(first_seen) == ["udp A", "udp AAAA"]


@pytest.mark.anyio
@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP])
async def test_only_bad_rcodes_is_servfail(rcode: dns.rcode.Rcode) -> None:
    async with dns_server(lambda q: [answer(q, rcode=rcode)]) as (where, _):
        detail = await lookup_problem(resolver(where))
    assert detail == (
        "DNS problem: SERVFAIL looking up A for example.com - "
        "the domain's nameservers may be malfunctioning"
    )


@pytest.mark.anyio
async def test_nxdomain_is_final() -> None:
    async with (
        dns_server(lambda q: [answer(q, rcode=dns.rcode.NXDOMAIN)]) as (first, _),
        dns_server(a_only) as (second, second_seen),
    ):
        detail = await lookup_problem(resolver(first, second))
    assert detail.startswith("DNS problem: NXDOMAIN looking up A for example.com")
    assert second_seen == []


@pytest.mark.anyio
async def test_cname_chain_in_the_answer_is_followed() -> None:
    def chain(query: dns.message.Message) -> list[bytes]:
        if query.question[0].rdtype != dns.rdatatype.A:
            return [answer(query, "example.com. 60 IN CNAME a.example.")]
        return [
            answer(
                query,
                "example.com. 60 IN CNAME a.example.",
                "a.example. 60 IN CNAME b.example.",
                "b.example. 60 IN A 192.0.2.9",
                "example.com. 60 IN A 203.0.113.1",  # not the chain's end: still taken
            )
        ]

    async with dns_server(chain) as (where, _):
        found = await resolver(where).lookup_host("example.com")
    # The owner name itself has an A record, so the chain is not walked for A.
    assert found.ipv4 == ("203.0.113.1",)
    assert found.ipv6 == ()


@pytest.mark.anyio
async def test_cname_only_chain_resolves_to_target() -> None:
    def chain(query: dns.message.Message) -> list[bytes]:
        if query.question[0].rdtype != dns.rdatatype.A:
            return [answer(query, "example.com. 60 IN CNAME a.example.")]
        return [
            answer(
                query,
                "example.com. 60 IN CNAME a.example.",
                "a.example. 60 IN CNAME b.example.",
                "b.example. 60 IN A 192.0.2.9",
            )
        ]

    async with dns_server(chain) as (where, _):
        found = await resolver(where).lookup_host("example.com")
    assert found.ipv4 == ("192.0.2.9",)


@pytest.mark.anyio
async def test_cname_loop_is_a_bad_answer() -> None:
    def loop(query: dns.message.Message) -> list[bytes]:
        return [
            answer(
                query,
                "example.com. 60 IN CNAME a.example.",
                "a.example. 60 IN CNAME example.com.",
            )
        ]

    async with dns_server(loop) as (where, _):
        detail = await lookup_problem(resolver(where))
    assert detail == (
        "DNS problem: CNAME chain too long or looping looking up A for example.com - "
        "check the domain's CNAME records"
    )


@pytest.mark.anyio
async def test_silence_times_out_within_the_lookup_deadline() -> None:
    async with dns_server(lambda q: []) as (where, _):
        started = anyio.current_time()
        # The 0.3 s lookup deadline ends it; the outer bound only stops a hang.
        with anyio.fail_after(10):
            detail = await lookup_problem(resolver(where, timeout=0.3))
        elapsed = anyio.current_time() - started
    assert detail == (
        "DNS problem: query timed out looking up A for example.com - "
        "check that the domain's nameservers answer"
    )
    assert elapsed > 0.25  # it waited for the deadline, not less


@pytest.mark.anyio
async def test_nothing_listening_is_a_timeout_not_a_refusal() -> None:
    # An ICMP "port unreachable" is spoofable; it must not end the wait early
    # with a different verdict than a silent server gets.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    detail = await lookup_problem(resolver(f"127.0.0.1:{port}", timeout=0.3))
    assert "query timed out looking up A for example.com" in detail


@pytest.mark.anyio
async def test_txt_values_joined_per_record() -> None:
    def txt(query: dns.message.Message) -> list[bytes]:
        return [answer(query, '_acme-challenge.example.com. 60 IN TXT "ab" "cd"')]

    async with dns_server(txt) as (where, _):
        values = await resolver(where).lookup_txt("_acme-challenge.example.com")
    assert values == ("abcd",)
