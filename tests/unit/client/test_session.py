"""AcmeSession: signing, the nonce pool, badNonce retries, problems, hostile answers."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import httpx
import pytest

from certmint.client.errors import AcmeProblemError, ClientError
from certmint.client.session import (
    MAX_RESPONSE_BYTES,
    AcmeSession,
    clean_text,
    parse_link_header,
    retry_after_seconds,
)
from certmint.protocol.jwk import jwk_from_public_key
from certmint.protocol.jws import verify_jws
from certmint.testing.clock import FakeClock

from .scripted_ca import BASE, ScriptedCA, ok, problem


def test_directory_is_fetched_once_and_its_nonce_is_pooled() -> None:
    ca = ScriptedCA()
    ca.on("/thing", ok({}))
    with ca.session() as session:
        assert session.directory.new_order == f"{BASE}/new-order"
        session.post(f"{BASE}/thing", {"a": 1})
        session.post(f"{BASE}/thing", {"a": 2})
        assert session.directory.new_account == f"{BASE}/new-account"
    methods = [(s.method, httpx.URL(s.url).path) for s in ca.seen]
    # The directory's nonce serves the first POST, each answer's the next:
    # newNonce is never needed.
    assert methods == [("GET", "/directory"), ("POST", "/thing"), ("POST", "/thing")]


def test_head_new_nonce_only_when_the_pool_is_empty() -> None:
    ca = ScriptedCA()
    ca.on("/thing", httpx.Response(200, json={}, headers={"Replay-Nonce": "not valid!"}))
    with ca.session() as session:
        session.post(f"{BASE}/thing", {})  # uses the directory's nonce
        session.post(f"{BASE}/thing", {})  # the answer's nonce was invalid → HEAD
    assert [s.method for s in ca.seen] == ["GET", "POST", "HEAD", "POST"]


def test_signs_with_jwk_until_kid_is_set_and_signatures_verify() -> None:
    ca = ScriptedCA()
    ca.on("/thing", ok({}))
    with ca.session() as session:
        session.post(f"{BASE}/thing", {"x": 1})
        session.kid = f"{BASE}/acct/1"
        session.post(f"{BASE}/thing", None)
        session.post(f"{BASE}/thing", {"x": 2}, use_jwk=True)
        key = session.key
    first, second, third = (s.jws for s in ca.posts("/thing"))
    assert first is not None and second is not None and third is not None
    assert first.jwk == jwk_from_public_key(key.public_key()) and first.kid is None
    assert second.kid == f"{BASE}/acct/1" and second.jwk is None and second.is_post_as_get
    assert third.jwk is not None and third.kid is None
    for jws in (first, second, third):
        verify_jws(jws, key.public_key())
        assert jws.url == f"{BASE}/thing"
    assert len({first.nonce, second.nonce, third.nonce}) == 3
    assert all(s.headers["Content-Type"] == "application/jose+json" for s in ca.posts("/thing"))


def test_bad_nonce_is_retried_with_the_nonce_from_the_error() -> None:
    ca = ScriptedCA()
    ca.on(
        "/thing",
        problem("badNonce", "stale"),
        problem("badNonce", "stale again"),
        ok({"done": True}),
    )
    with ca.session() as session:
        response = session.post(f"{BASE}/thing", {"x": 1})
        assert response.json() == {"done": True}
        assert session.bad_nonce_retries == 2
    posts = ca.posts("/thing")
    assert len(posts) == 3
    assert [s.method for s in ca.seen].count("HEAD") == 0
    # Each retry carries the nonce the refusal brought (nonce2 and nonce3:
    # the directory's answer was nonce1).
    assert [p.jws.nonce for p in posts if p.jws] == ["nonce1", "nonce2", "nonce3"]


def test_bad_nonce_retries_are_bounded() -> None:
    ca = ScriptedCA()
    ca.on("/thing", problem("badNonce", "never happy"))
    with ca.session(max_bad_nonce_retries=3) as session:
        with pytest.raises(AcmeProblemError) as caught:
            session.post(f"{BASE}/thing", {})
    assert caught.value.problem.type == "badNonce"
    assert len(ca.posts("/thing")) == 4


def test_problem_becomes_acme_problem_error_with_subproblems() -> None:
    ca = ScriptedCA()
    ca.on(
        "/new-order",
        problem(
            "rejectedIdentifier",
            "some names are refused",
            subproblems=[
                {
                    "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                    "detail": "no \x1b[31mred\x1b[0m names",
                    "identifier": {"type": "dns", "value": "bad.example"},
                },
                {
                    "type": "urn:ietf:params:acme:error:caa",
                    "detail": "CAA forbids",
                    "identifier": {"type": "dns", "value": "caa.example"},
                },
            ],
        ),
    )
    with ca.session() as session, pytest.raises(AcmeProblemError) as caught:
        session.post(f"{BASE}/new-order", {"identifiers": []})
    error = caught.value
    assert error.url == f"{BASE}/new-order"
    assert error.problem.type == "rejectedIdentifier"
    assert error.problem.status == 400
    assert [s.identifier for s in error.problem.subproblems] == [
        ("dns", "bad.example"),
        ("dns", "caa.example"),
    ]
    message = str(error)
    assert "bad.example: no  [31mred [0m names" in message
    assert "\x1b" not in message and "\n" not in message
    assert "caa.example: CAA forbids (caa)" in message


def test_problem_without_status_takes_the_http_status() -> None:
    ca = ScriptedCA()
    ca.on(
        "/thing",
        httpx.Response(
            403,
            json={"type": "urn:ietf:params:acme:error:unauthorized", "detail": "no"},
            headers={"Content-Type": "application/problem+json"},
        ),
    )
    with ca.session() as session, pytest.raises(AcmeProblemError) as caught:
        session.post(f"{BASE}/thing", {})
    assert caught.value.problem.status == 403
    assert str(caught.value) == "no (unauthorized)"


def test_non_problem_error_is_a_one_line_client_error() -> None:
    ca = ScriptedCA()
    ca.on("/thing", httpx.Response(502, text="<html>\n<h1>Bad gateway</h1>\n</html>"))
    with ca.session() as session, pytest.raises(ClientError) as caught:
        session.post(f"{BASE}/thing", {})
    assert not isinstance(caught.value, AcmeProblemError)
    assert str(caught.value) == f"ca.test answered HTTP 502 Bad Gateway to POST {BASE}/thing"


def test_network_error_names_the_host() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.Client(transport=httpx.MockTransport(refuse))
    from cryptography.hazmat.primitives.asymmetric import ec

    with AcmeSession(f"{BASE}/directory", ec.generate_private_key(ec.SECP256R1()), http=http) as s:
        with pytest.raises(ClientError, match=r"^could not reach ca\.test: connection refused$"):
            _ = s.directory


def test_errors_never_include_the_private_key() -> None:
    ca = ScriptedCA()
    ca.on("/thing", problem("malformed", "nope"))
    with ca.session() as session, pytest.raises(AcmeProblemError) as caught:
        session.post(f"{BASE}/thing", {})
    key = session.key
    d = key.private_numbers().private_value  # type: ignore[union-attr]
    assert str(d) not in repr(caught.value) and hex(d)[2:] not in repr(caught.value)


def test_oversized_responses_are_refused_even_when_compressed() -> None:
    bomb = gzip.compress(b"{" + b" " * (MAX_RESPONSE_BYTES + 10) + b"}")
    ca = ScriptedCA()
    ca.on("/thing", httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"}))
    with ca.session() as session, pytest.raises(ClientError, match="more than"):
        session.post(f"{BASE}/thing", {})


def test_compressed_answers_are_decoded_once() -> None:
    ca = ScriptedCA()
    ca.on(
        "/thing",
        httpx.Response(
            200, content=gzip.compress(b'{"a":1}'), headers={"Content-Encoding": "gzip"}
        ),
    )
    with ca.session() as session:
        assert session.json(session.post(f"{BASE}/thing", {})) == {"a": 1}


def test_invalid_directory_is_a_client_error() -> None:
    ca = ScriptedCA(directory={"newNonce": "x"})
    with ca.session() as session, pytest.raises(ClientError, match="not an ACME directory"):
        _ = session.directory


def test_duplicate_keys_in_json_are_refused() -> None:
    ca = ScriptedCA()
    ca.on("/thing", httpx.Response(200, content=b'{"status":"valid","status":"invalid"}'))
    with ca.session() as session, pytest.raises(ClientError, match="invalid JSON"):
        session.json(session.post(f"{BASE}/thing", {}))


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    request = httpx.Request("GET", BASE)
    seconds = httpx.Response(200, headers={"Retry-After": "7"}, request=request)
    date = httpx.Response(
        200, headers={"Retry-After": "Thu, 01 Jan 2026 12:00:30 GMT"}, request=request
    )
    past = httpx.Response(
        200, headers={"Retry-After": "Thu, 01 Jan 2026 11:00:00 GMT"}, request=request
    )
    junk = httpx.Response(200, headers={"Retry-After": "soon"}, request=request)
    assert retry_after_seconds(seconds, now) == 7.0
    assert retry_after_seconds(date, now) == 30.0
    assert retry_after_seconds(past, now) == 0.0
    assert retry_after_seconds(junk, now) is None
    assert retry_after_seconds(httpx.Response(200, request=request), now) is None


def test_session_retry_after_uses_the_injected_clock() -> None:
    ca = ScriptedCA()
    clock = FakeClock(datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC))
    response = httpx.Response(
        200,
        headers={"Retry-After": "Thu, 01 Jan 2026 12:00:05 GMT"},
        request=httpx.Request("GET", BASE),
    )
    with ca.session(clock=clock) as session:
        assert session.retry_after(response) == 5.0


def test_parse_link_header_keeps_every_alternate() -> None:
    links = parse_link_header(
        [
            '<https://ca.test/dir>;rel="index", <https://ca.test/cert/1/1>;rel="alternate"',
            '<https://ca.test/cert/1/2>; rel="alternate up"; title="a, b"',
        ]
    )
    assert links == [
        ("https://ca.test/dir", frozenset({"index"})),
        ("https://ca.test/cert/1/1", frozenset({"alternate"})),
        ("https://ca.test/cert/1/2", frozenset({"alternate", "up"})),
    ]


def test_clean_text_flattens_and_caps() -> None:
    assert clean_text("a\nb\x1b[2Jc\u2028d") == "a b [2Jc d"
    assert clean_text("x" * 50, 10) == "x" * 9 + "…"


def test_ca_bundle_path_that_cannot_be_read_is_a_client_error(tmp_path: object) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(ClientError, match="cannot read the CA bundle"):
        AcmeSession(BASE, ec.generate_private_key(ec.SECP256R1()), verify="/nonexistent/ca.pem")


def test_redirects_are_reported_not_followed() -> None:
    ca = ScriptedCA()
    ca.on("/thing", httpx.Response(301, headers={"Location": "http://elsewhere.test/thing"}))
    with ca.session() as session, pytest.raises(ClientError, match="HTTP 301"):
        session.post(f"{BASE}/thing", {})
    assert len(ca.posts("/thing")) == 1
