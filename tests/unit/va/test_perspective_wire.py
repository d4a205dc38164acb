"""The primary <-> remote perspective wire (BR 3.2.2.9): MACs both ways, the
server's refusals as problem documents, the client's failures as data, and
the wire forms of the VA's values.

The perspective app runs in-process behind httpx's ASGI transport with a
fake VA injected through the ``Validator`` protocol; the client's network
failures (refused connection, silent server) use real loopback sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest

from certmint.ca.va.model import (
    PerspectiveOutcome,
    VAConfig,
    ValidationRecord,
    ValidationRequest,
    ValidationResult,
    WireError,
)
from certmint.ca.va.perspective_server import build_perspective_app
from certmint.ca.va.perspective_wire import (
    MAC_HEADER,
    MAX_BODY_BYTES,
    SecretError,
    load_secret,
    request_mac,
    response_mac,
)
from certmint.ca.va.remote import RemotePerspective
from certmint.protocol.problems import Problem, ProblemType
from certmint.testing.entropy import SeededEntropy
from certmint.testing.harness import free_port

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
NONCE = "A" * 22
REQUEST = ValidationRequest(
    challenge_type="http-01",
    identifier_type="dns",
    identifier_value="example.com",
    token="t" * 43,
    key_authorization="t" * 43 + "." + "k" * 43,
    account_uri="https://ca.test/acme/acct/1",
    wildcard=False,
)
RESULT = ValidationResult(
    valid=True,
    problem=None,
    records=(
        ValidationRecord(
            url="http://example.com/.well-known/acme-challenge/x",
            hostname="example.com",
            port=80,
            addresses_resolved=("192.0.2.1", "2001:db8::1"),
            address_used="192.0.2.1",
        ),
    ),
    caa_checked_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
)


class FakeVA:
    def __init__(self, result: ValidationResult = RESULT, caa: Problem | None = None) -> None:
        self.result = result
        self.caa = caa
        self.requests: list[ValidationRequest] = []
        self.caa_calls: list[tuple[str, str, str, str | None, bool]] = []

    @property
    def config(self) -> VAConfig:
        return VAConfig()

    @property
    def supported_challenge_types(self) -> tuple[str, ...]:
        return ("http-01",)

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        self.requests.append(request)
        return self.result

    async def check_caa(
        self,
        identifier_type: str,
        identifier_value: str,
        *,
        challenge_type: str,
        account_uri: str | None,
        wildcard: bool,
    ) -> Problem | None:
        self.caa_calls.append(
            (identifier_type, identifier_value, challenge_type, account_uri, wildcard)
        )
        return self.caa

    async def aclose(self) -> None:
        pass


def app_client(va: FakeVA, region: str = "r1") -> httpx.AsyncClient:
    app = build_perspective_app(va, region, SECRET)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r1")


def remote(
    va: FakeVA, *, region: str = "r1", secret: bytes = SECRET, served_region: str = "r1"
) -> RemotePerspective:
    app = build_perspective_app(va, served_region, SECRET)
    return RemotePerspective(
        region,
        "http://perspective.test",
        secret,
        5.0,
        entropy=SeededEntropy(7),
        transport=httpx.ASGITransport(app=app),
    )


def signed_post(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {MAC_HEADER: request_mac(secret, body), "Content-Type": "application/json"}


def body_of(doc: object) -> bytes:
    return json.dumps(doc).encode()


# --------------------------------------------------------------------------- server


@pytest.mark.anyio
async def test_validate_round_trip_and_response_mac() -> None:
    va = FakeVA()
    body = body_of({"nonce": NONCE, "request": REQUEST.to_json()})
    async with app_client(va) as client:
        response = await client.post("/v1/validate", content=body, headers=signed_post(body))
    assert response.status_code == 200
    assert response.headers[MAC_HEADER] == response_mac(SECRET, NONCE, response.content)
    doc = json.loads(response.content)
    assert doc["region"] == "r1"
    assert ValidationResult.from_json(doc["result"]) == RESULT
    assert va.requests == [REQUEST]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "mac_header",
    [
        lambda body: None,
        lambda body: b"",
        lambda body: b"not base64",
        lambda body: request_mac(OTHER_SECRET, body).encode(),  # another secret
        lambda body: response_mac(SECRET, NONCE, body).encode(),  # a response MAC
        lambda body: "\u00e9".encode(),  # not ASCII
    ],
)
async def test_missing_or_wrong_mac_is_401_problem(
    mac_header: Callable[[bytes], bytes | None],
) -> None:
    va = FakeVA()
    body = body_of({"nonce": NONCE, "request": REQUEST.to_json()})
    value = mac_header(body)
    headers = {} if value is None else {MAC_HEADER.encode(): value}
    async with app_client(va) as client:
        response = await client.post("/v1/validate", content=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:ietf:params:acme:error:unauthorized"
    assert MAC_HEADER not in response.headers
    assert va.requests == []


@pytest.mark.anyio
async def test_tampered_body_is_refused() -> None:
    va = FakeVA()
    body = body_of({"nonce": NONCE, "request": REQUEST.to_json()})
    tampered = body.replace(b"example.com", b"attacker.ex")
    async with app_client(va) as client:
        response = await client.post("/v1/validate", content=tampered, headers=signed_post(body))
    assert response.status_code == 401
    assert va.requests == []


@pytest.mark.anyio
async def test_oversize_body_is_refused_before_reading_it_all() -> None:
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    async with app_client(FakeVA()) as client:
        response = await client.post("/v1/validate", content=body, headers=signed_post(body))
    assert response.status_code == 413
    assert response.json()["type"] == "urn:ietf:params:acme:error:malformed"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "detail_part"),
    [
        (b"not json", "invalid JSON"),
        (b'{"nonce": "' + NONCE.encode() + b'", "nonce": "x"}', "more than once"),
        (b"[1, 2]", "not a JSON object"),
        (body_of({"request": REQUEST.to_json()}), "nonce"),
        (body_of({"nonce": "short", "request": REQUEST.to_json()}), "nonce"),
        (body_of({"nonce": NONCE}), "validation request is not a JSON object"),
        (
            body_of({"nonce": NONCE, "request": {**REQUEST.to_json(), "token": 5}}),
            "token is missing or not a string",
        ),
        (
            body_of({"nonce": NONCE, "request": {**REQUEST.to_json(), "wildcard": "yes"}}),
            "wildcard is not a boolean",
        ),
        (
            body_of(
                {"nonce": NONCE, "request": {**REQUEST.to_json(), "identifierValue": "a" * 600}}
            ),
            "longer than",
        ),
    ],
)
async def test_bad_json_or_fields_are_400_problems(body: bytes, detail_part: str) -> None:
    va = FakeVA()
    async with app_client(va) as client:
        response = await client.post("/v1/validate", content=body, headers=signed_post(body))
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == "urn:ietf:params:acme:error:malformed"
    assert detail_part in problem["detail"]
    assert va.requests == []


@pytest.mark.anyio
async def test_unknown_route_and_method_are_problems() -> None:
    async with app_client(FakeVA()) as client:
        missing = await client.get("/v1/nothing")
        wrong_method = await client.get("/v1/validate")
        health = await client.get("/v1/health")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert wrong_method.status_code == 405
    assert health.json() == {"status": "ok", "region": "r1"}


def test_short_secret_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError):
        build_perspective_app(FakeVA(), "r1", b"short")
    path = tmp_path / "secret"
    path.write_bytes(b"  " + b"x" * 31 + b"\n")
    with pytest.raises(SecretError, match="at least 32 bytes"):
        load_secret(path)
    path.write_bytes(b"x" * 32 + b"\n")
    assert load_secret(path) == b"x" * 32
    with pytest.raises(SecretError, match="cannot read"):
        load_secret(tmp_path / "missing")


# --------------------------------------------------------------------------- client


@pytest.mark.anyio
async def test_remote_perspective_round_trip() -> None:
    va = FakeVA()
    perspective = remote(va)
    try:
        assert await perspective.validate(REQUEST) == RESULT
    finally:
        await perspective.aclose()
    assert va.requests == [REQUEST]


@pytest.mark.anyio
async def test_remote_perspective_check_caa() -> None:
    refusal = Problem(ProblemType.CAA, "CAA record for example.com forbids issuance", 403)
    va = FakeVA(caa=refusal)
    perspective = remote(va)
    try:
        got = await perspective.check_caa(
            "dns", "example.com", challenge_type="dns-01", account_uri=None, wildcard=True
        )
    finally:
        await perspective.aclose()
    assert got == refusal
    assert va.caa_calls == [("dns", "example.com", "dns-01", None, True)]
    va.caa = None
    perspective = remote(va)
    try:
        assert (
            await perspective.check_caa(
                "dns", "example.com", challenge_type="dns-01", account_uri="u", wildcard=False
            )
            is None
        )
    finally:
        await perspective.aclose()


@pytest.mark.anyio
async def test_wrong_secret_is_a_failure_naming_the_region() -> None:
    va = FakeVA()
    perspective = remote(va, secret=OTHER_SECRET)
    try:
        result = await perspective.validate(REQUEST)
        caa = await perspective.check_caa(
            "dns", "example.com", challenge_type="dns-01", account_uri=None, wildcard=False
        )
    finally:
        await perspective.aclose()
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == "serverInternal"
    assert result.problem.detail == (
        "Remote perspective r1 answered HTTP 401: request MAC is missing or does not verify"
    )
    assert caa is not None and caa.type == "serverInternal"  # never "permitted"
    assert va.requests == []


def replaying_transport(recorded: list[httpx.Response]) -> httpx.MockTransport:
    """A man in the middle that answers every request with the first
    response it saw (body and MAC), recorded for another nonce."""

    async def handler(request: httpx.Request) -> httpx.Response:
        old = recorded[0]
        return httpx.Response(
            200, content=old.content, headers={MAC_HEADER: old.headers[MAC_HEADER]}
        )

    return httpx.MockTransport(handler)


@pytest.mark.anyio
async def test_replayed_response_for_another_nonce_is_refused() -> None:
    va = FakeVA()
    body = body_of({"nonce": NONCE, "request": REQUEST.to_json()})
    async with app_client(va) as client:
        recorded = await client.post("/v1/validate", content=body, headers=signed_post(body))
    assert recorded.status_code == 200
    perspective = RemotePerspective(
        "r1", "http://perspective.test", SECRET, 5.0, transport=replaying_transport([recorded])
    )
    try:
        result = await perspective.validate(REQUEST)
    finally:
        await perspective.aclose()
    assert not result.valid
    assert result.problem is not None
    assert (
        result.problem.detail == "Remote perspective r1 sent a response whose MAC does not verify"
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "detail_part"),
    [
        (b"not json", "invalid JSON"),
        (b'{"region": "r1", "result": {"valid": "yes"}}', "valid is not a boolean"),
        (b'{"region": "r1", "result": {"valid": true, "problem": {"type": "x", "detail": "y"}}}',
         "valid without a problem"),
        (b'{"region": "r2", "result": {"valid": true}}', "names another region"),
        (b'{"region": "r1", "result": {"valid": false, "problem": {"type": 1}}}',
         "no string type"),
    ],
)  # fmt: skip
async def test_unusable_signed_responses_are_failures(reply: bytes, detail_part: str) -> None:
    """Even correctly signed, a response must parse and be coherent."""

    async def handler(request: httpx.Request) -> httpx.Response:
        nonce = json.loads(request.content)["nonce"]
        return httpx.Response(
            200, content=reply, headers={MAC_HEADER: response_mac(SECRET, nonce, reply)}
        )

    perspective = RemotePerspective(
        "r1", "http://perspective.test", SECRET, 5.0, transport=httpx.MockTransport(handler)
    )
    try:
        result = await perspective.validate(REQUEST)
    finally:
        await perspective.aclose()
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == "serverInternal"
    assert result.problem.detail.startswith("Remote perspective r1 sent an unusable response")
    assert detail_part in result.problem.detail


@pytest.mark.anyio
async def test_oversize_response_is_a_failure() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b" " * (MAX_BODY_BYTES + 1))

    perspective = RemotePerspective(
        "r1", "http://perspective.test", SECRET, 5.0, transport=httpx.MockTransport(handler)
    )
    try:
        result = await perspective.validate(REQUEST)
    finally:
        await perspective.aclose()
    assert result.problem is not None
    assert "larger than" in result.problem.detail


@pytest.mark.anyio
async def test_a_perspective_does_not_speak_for_others() -> None:
    claimed = ValidationResult(
        valid=True, problem=None, perspectives=(PerspectiveOutcome("r9", True),)
    )
    perspective = remote(FakeVA(result=claimed))
    try:
        result = await perspective.validate(REQUEST)
    finally:
        await perspective.aclose()
    assert result.valid and result.perspectives == ()


@pytest.mark.anyio
async def test_refused_connection_is_a_connection_problem() -> None:
    port = free_port()  # nothing listens there
    perspective = RemotePerspective("r1", f"http://127.0.0.1:{port}", SECRET, 5.0)
    try:
        with anyio.fail_after(10):
            result = await perspective.validate(REQUEST)
    finally:
        await perspective.aclose()
    assert result.problem is not None
    assert result.problem.type == "connection"
    assert result.problem.detail == "Cannot reach remote perspective r1: ConnectError"


@pytest.mark.anyio
async def test_silent_perspective_times_out_as_connection_problem() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # accept, read nothing back, never answer

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    perspective = RemotePerspective("r1", f"http://127.0.0.1:{port}", SECRET, 0.2)
    try:
        with anyio.fail_after(10):
            result = await perspective.validate(REQUEST)
    finally:
        await perspective.aclose()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
    assert result.problem is not None
    assert result.problem.type == "connection"
    assert result.problem.detail == "Remote perspective r1 did not answer within 0.2 seconds"


# --------------------------------------------------------------------------- wire forms


def test_wire_forms_round_trip() -> None:
    assert ValidationRequest.from_json(REQUEST.to_json()) == REQUEST
    assert ValidationResult.from_json(RESULT.to_json()) == RESULT
    failed = ValidationResult(
        valid=False,
        problem=Problem(ProblemType.DNS, "SERVFAIL", 400),
        perspectives=(
            PerspectiveOutcome("primary", True),
            PerspectiveOutcome("r1", False, "dns", "SERVFAIL"),
        ),
    )
    assert ValidationResult.from_json(json.loads(json.dumps(failed.to_json()))) == failed
    outcome = PerspectiveOutcome("r1", False, "dns", "SERVFAIL")
    assert outcome.to_json() == {
        "region": "r1",
        "valid": False,
        "problemType": "dns",
        "detail": "SERVFAIL",
    }
    assert PerspectiveOutcome("r2", True).to_json() == {"region": "r2", "valid": True}


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"valid": 1},
        {"valid": False},
        {"valid": True, "records": {}},
        {"valid": True, "records": [{"hostname": 5}]},
        {"valid": True, "records": [{"hostname": "h", "port": "eighty"}]},
        {"valid": True, "records": [{"hostname": "h", "addressesResolved": [1]}]},
        {"valid": True, "caaCheckedAt": "yesterday"},
        {"valid": True, "perspectives": [{"region": "r", "valid": "no"}]},
        {"valid": True, "perspectives": [{"region": "r", "valid": True}] * 33},
        {"valid": False, "problem": {"type": "dns", "detail": "x", "status": "400"}},
    ],
)
def test_result_from_json_rejects_wrong_types(doc: object) -> None:
    with pytest.raises(WireError):
        ValidationResult.from_json(doc)
