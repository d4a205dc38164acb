"""The challenge test server: DNS answers (via dnspython queries), the
HTTP-01 and TLS-ALPN-01 responders, the management API and the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest
from cryptography import x509

from certmint.protocol.challenges import (
    ACME_TLS_ALPN_PROTOCOL,
    ID_PE_ACME_IDENTIFIER,
    tls_alpn01_extension_value,
)
from certmint.testing.challtestsrv import ChallengeTestServer

KEYAUTHZ = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


@pytest.fixture(scope="module")
def srv() -> Iterator[ChallengeTestServer]:
    server = ChallengeTestServer()
    with server.run_in_thread():
        yield server


@pytest.fixture
def mgmt(srv: ChallengeTestServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.management_port}", timeout=5) as client:
        yield client


def query(
    srv: ChallengeTestServer, name: str, rdtype: str, *, tcp: bool = False
) -> dns.message.Message:
    message = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(message, "127.0.0.1", port=srv.dns_port, timeout=2)
    return dns.query.udp(message, "127.0.0.1", port=srv.dns_port, timeout=2)


def answers(response: dns.message.Message, rdtype: str) -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return [rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset]


# -- DNS --


def test_default_a_for_any_name(srv: ChallengeTestServer) -> None:
    response = query(srv, "anything.example.", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert answers(response, "A") == ["127.0.0.1"]
    assert response.answer[0].name.to_text() == "anything.example."


def test_explicit_a_case_insensitive(srv: ChallengeTestServer) -> None:
    # RRsets go out shuffled (dnspython's default, like real servers): compare sorted.
    srv.add_a("Multi.Example.", ["192.0.2.1", "192.0.2.2"])
    try:
        assert sorted(answers(query(srv, "mULTI.example.", "A"), "A")) == ["192.0.2.1", "192.0.2.2"]
        assert sorted(answers(query(srv, "multi.example.", "A", tcp=True), "A")) == [
            "192.0.2.1",
            "192.0.2.2",
        ]
    finally:
        srv.clear_a("multi.example")
    assert answers(query(srv, "multi.example.", "A"), "A") == ["127.0.0.1"]


def test_aaaa_empty_then_default_then_explicit(srv: ChallengeTestServer) -> None:
    response = query(srv, "v6.example.", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []
    srv.set_default_ipv6("::1")
    try:
        assert answers(query(srv, "v6.example.", "AAAA"), "AAAA") == ["::1"]
        srv.add_aaaa("v6.example", ["2001:db8::5"])
        assert answers(query(srv, "v6.example.", "AAAA"), "AAAA") == ["2001:db8::5"]
    finally:
        srv.set_default_ipv6(None)
        srv.clear_aaaa("v6.example")


def test_txt_several_values_and_long_values(srv: ChallengeTestServer) -> None:
    host = "_acme-challenge.txt.example"
    srv.set_txt(host, "first")
    srv.set_txt(host + ".", "second")
    srv.set_txt(host, "x" * 300)  # longer than one character-string
    try:
        response = query(srv, host + ".", "TXT", tcp=True)
        values = sorted(b"".join(rd.strings).decode() for rrset in response.answer for rd in rrset)
        assert values == sorted(["first", "second", "x" * 300])
    finally:
        srv.clear_txt(host)
    assert query(srv, host + ".", "TXT").answer == []


def test_caa(srv: ChallengeTestServer) -> None:
    srv.add_caa("caa.example", [("issue", "certmint.test"), ("iodef", "mailto:a@b.example")])
    try:
        assert sorted(answers(query(srv, "caa.example.", "CAA"), "CAA")) == [
            '0 iodef "mailto:a@b.example"',
            '0 issue "certmint.test"',
        ]
    finally:
        srv.clear_caa("caa.example")
    assert query(srv, "caa.example.", "CAA").answer == []


def test_cname_presented_like_a_resolver(srv: ChallengeTestServer) -> None:
    srv.set_cname("alias.example", "hop.example")
    srv.set_cname("hop.example", "real.example")
    srv.add_a("real.example", ["192.0.2.9"])
    srv.set_txt("real.example", "via-cname")
    try:
        response = query(srv, "alias.example.", "A")
        assert answers(response, "CNAME") == ["hop.example.", "real.example."]
        assert answers(response, "A") == ["192.0.2.9"]
        assert answers(query(srv, "alias.example.", "TXT"), "TXT") == ['"via-cname"']
        assert answers(query(srv, "alias.example.", "CNAME"), "CNAME") == ["hop.example."]
    finally:
        for host in ("alias.example", "hop.example"):
            srv.clear_cname(host)
        srv.clear_a("real.example")
        srv.clear_txt("real.example")


def test_servfail(srv: ChallengeTestServer) -> None:
    srv.set_servfail("sick.example")
    try:
        assert query(srv, "sick.example.", "A").rcode() == dns.rcode.SERVFAIL
        assert query(srv, "sick.example.", "TXT").rcode() == dns.rcode.SERVFAIL
    finally:
        srv.clear_servfail("sick.example")
    assert query(srv, "sick.example.", "A").rcode() == dns.rcode.NOERROR


def test_nxdomain_without_defaults() -> None:
    server = ChallengeTestServer(
        http01_address=None, tlsalpn01_address=None, management_address=None, default_ipv4=None
    )
    with server.run_in_thread():
        assert query(server, "missing.example.", "A").rcode() == dns.rcode.NXDOMAIN
        server.add_a("present.example", ["192.0.2.3"])
        assert query(server, "present.example.", "A").rcode() == dns.rcode.NOERROR
        assert query(server, "present.example.", "TXT").rcode() == dns.rcode.NOERROR


def test_garbage_datagram_is_ignored(srv: ChallengeTestServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00\x01garbage", ("127.0.0.1", srv.dns_port))
    # The server is still answering afterwards.
    assert query(srv, "still.example.", "A").rcode() == dns.rcode.NOERROR


# -- HTTP-01 --


def test_http01_responder(srv: ChallengeTestServer) -> None:
    base = f"http://127.0.0.1:{srv.http01_port}/.well-known/acme-challenge/"
    srv.add_http01("tok1", "content-1")
    try:
        response = httpx.get(base + "tok1", timeout=5)
        assert (response.status_code, response.text) == (200, "content-1")
        assert httpx.get(base + "other", timeout=5).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{srv.http01_port}/", timeout=5).status_code == 404
    finally:
        srv.del_http01("tok1")
    assert httpx.get(base + "tok1", timeout=5).status_code == 404


# -- management API --


def test_health(mgmt: httpx.Client) -> None:
    assert mgmt.get("/health").status_code == 200


def test_management_dns_paths(srv: ChallengeTestServer, mgmt: httpx.Client) -> None:
    assert (
        mgmt.post("/add-a", json={"host": "m.example.", "addresses": ["192.0.2.44"]}).status_code
        == 200
    )
    assert answers(query(srv, "m.example.", "A"), "A") == ["192.0.2.44"]
    assert mgmt.post("/clear-a", json={"host": "m.example."}).status_code == 200
    assert (
        mgmt.post(
            "/add-aaaa", json={"host": "m.example", "addresses": ["2001:db8::44"]}
        ).status_code
        == 200
    )
    assert answers(query(srv, "m.example.", "AAAA"), "AAAA") == ["2001:db8::44"]
    assert mgmt.post("/clear-aaaa", json={"host": "m.example"}).status_code == 200
    assert (
        mgmt.post(
            "/set-txt", json={"host": "_acme-challenge.m.example.", "value": "v1"}
        ).status_code
        == 200
    )
    assert answers(query(srv, "_acme-challenge.m.example.", "TXT"), "TXT") == ['"v1"']
    assert mgmt.post("/clear-txt", json={"host": "_acme-challenge.m.example."}).status_code == 200
    policies = {"host": "m.example", "policies": [{"tag": "issue", "value": "ca.example"}]}
    assert mgmt.post("/add-caa", json=policies).status_code == 200
    assert answers(query(srv, "m.example.", "CAA"), "CAA") == ['0 issue "ca.example"']
    assert mgmt.post("/clear-caa", json={"host": "m.example"}).status_code == 200
    assert (
        mgmt.post("/set-cname", json={"host": "c.example", "target": "m.example"}).status_code
        == 200
    )
    assert answers(query(srv, "c.example.", "A"), "CNAME") == ["m.example."]
    assert mgmt.post("/clear-cname", json={"host": "c.example"}).status_code == 200
    assert mgmt.post("/set-servfail", json={"host": "m.example"}).status_code == 200
    assert query(srv, "m.example.", "A").rcode() == dns.rcode.SERVFAIL
    assert mgmt.post("/clear-servfail", json={"host": "m.example"}).status_code == 200
    assert mgmt.post("/set-default-ipv4", json={"ip": "192.0.2.200"}).status_code == 200
    assert answers(query(srv, "m.example.", "A"), "A") == ["192.0.2.200"]
    assert mgmt.post("/set-default-ipv4", json={"ip": "127.0.0.1"}).status_code == 200
    assert mgmt.post("/set-default-ipv6", json={"ip": "::1"}).status_code == 200
    assert answers(query(srv, "m.example.", "AAAA"), "AAAA") == ["::1"]
    assert mgmt.post("/set-default-ipv6", json={"ip": ""}).status_code == 200
    assert query(srv, "m.example.", "AAAA").answer == []
    history = mgmt.post("/dns-request-history", json={"host": "m.example."}).json()
    assert {"name": "m.example", "qtype": "CAA", "peer": "127.0.0.1"} in history


def test_management_http01_and_redirect(srv: ChallengeTestServer, mgmt: httpx.Client) -> None:
    base = f"http://127.0.0.1:{srv.http01_port}"
    assert mgmt.post("/add-http01", json={"token": "tok2", "content": "c2"}).status_code == 200
    assert httpx.get(f"{base}/.well-known/acme-challenge/tok2", timeout=5).text == "c2"
    assert mgmt.post("/del-http01", json={"token": "tok2"}).status_code == 200
    assert httpx.get(f"{base}/.well-known/acme-challenge/tok2", timeout=5).status_code == 404
    body = {"path": "/.well-known/acme-challenge/r", "targetURL": "http://elsewhere.example/x"}
    assert mgmt.post("/add-redirect", json=body).status_code == 200
    response = httpx.get(f"{base}/.well-known/acme-challenge/r", timeout=5)
    assert response.status_code == 302
    assert response.headers["location"] == "http://elsewhere.example/x"
    snake = {"path": "/s", "target_url": "http://snake.example/"}
    assert mgmt.post("/add-redirect", json=snake).status_code == 200
    assert httpx.get(f"{base}/s", timeout=5).headers["location"] == "http://snake.example/"
    for path in ("/.well-known/acme-challenge/r", "/s"):
        assert mgmt.post("/del-redirect", json={"path": path}).status_code == 200
    assert httpx.get(f"{base}/s", timeout=5).status_code == 404
    history = mgmt.post("/http-request-history", json={"host": "127.0.0.1"}).json()
    assert any(entry["path"] == "/s" for entry in history)


@pytest.mark.parametrize(
    ("path", "content", "fragment"),
    [
        ("/add-a", b"{not json", "invalid JSON"),
        ("/add-a", b"[1, 2]", "must be an object"),
        ("/add-a", b'{"host": "x.example"}', '"addresses"'),
        ("/add-a", b'{"host": "x.example", "addresses": ["not-an-ip"]}', "not-an-ip"),
        ("/set-txt", b'{"value": "v"}', 'missing field "host"'),
        ("/add-caa", b'{"host": "x.example", "policies": [{"tag": 1}]}', '"tag"'),
        ("/add-http01", b'{"token": 5, "content": "x"}', '"token"'),
    ],
)
def test_management_bad_requests(
    mgmt: httpx.Client, path: str, content: bytes, fragment: str
) -> None:
    response = mgmt.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert fragment in response.text
    assert response.text.count("\n") == 1  # one line


def test_management_unknown_path_and_method(mgmt: httpx.Client) -> None:
    assert mgmt.post("/no-such-thing", json={}).status_code == 404
    assert mgmt.get("/add-a").status_code == 405


# -- TLS-ALPN-01 --


def handshake(srv: ChallengeTestServer, sni: str) -> tuple[str | None, x509.Certificate]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([ACME_TLS_ALPN_PROTOCOL])
    with socket.create_connection(("127.0.0.1", srv.tlsalpn01_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return tls.selected_alpn_protocol(), x509.load_der_x509_certificate(der)


def test_tlsalpn01_responder(srv: ChallengeTestServer, mgmt: httpx.Client) -> None:
    body = {"host": "alpn.example", "content": KEYAUTHZ}
    assert mgmt.post("/add-tlsalpn01", json=body).status_code == 200
    alpn, cert = handshake(srv, "ALPN.example")
    assert alpn == ACME_TLS_ALPN_PROTOCOL
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["alpn.example"]
    extension = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert extension.critical
    assert extension.value.value == tls_alpn01_extension_value(KEYAUTHZ)  # type: ignore[attr-defined]
    # Unknown names get a certificate without the acmeIdentifier extension.
    _, fallback = handshake(srv, "other.example")
    with pytest.raises(x509.ExtensionNotFound):
        fallback.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert mgmt.post("/del-tlsalpn01", json={"host": "alpn.example"}).status_code == 200
    _, after = handshake(srv, "alpn.example")
    with pytest.raises(x509.ExtensionNotFound):
        after.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)


# -- CLI --


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_serves_and_stops_on_sigterm() -> None:
    ports = [free_port(socket.SOCK_DGRAM), free_port(), free_port(), free_port()]
    command = [
        sys.executable,
        "-c",
        "import sys; from certmint.testing.challtestsrv import main; sys.exit(main())",
        "--dns",
        f"127.0.0.1:{ports[0]}",
        "--http01",
        f"127.0.0.1:{ports[1]}",
        "--tlsalpn01",
        f"127.0.0.1:{ports[2]}",
        "--management",
        f"127.0.0.1:{ports[3]}",
        "--default-ipv4",
        "192.0.2.77",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        assert [line.split(":")[1].strip().split(" ")[0] for line in lines] == [
            "DNS",
            "HTTP-01",
            "TLS-ALPN-01",
            "management",
        ]
        assert f"127.0.0.1:{ports[3]}" in lines[3]
        response = dns.query.udp(
            dns.message.make_query("cli.example.", "A"), "127.0.0.1", port=ports[0], timeout=2
        )
        assert answers(response, "A") == ["192.0.2.77"]
        health = httpx.get(f"http://127.0.0.1:{ports[3]}/health", timeout=5)
        assert health.status_code == 200
        reply = httpx.post(
            f"http://127.0.0.1:{ports[3]}/add-http01",
            content=json.dumps({"token": "t", "content": "c"}),
            timeout=5,
        )
        assert reply.status_code == 200
        assert (
            httpx.get(f"http://127.0.0.1:{ports[1]}/.well-known/acme-challenge/t", timeout=5).text
            == "c"
        )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
