"""A scripted ACME server behind ``httpx.MockTransport`` for the agent's unit tests.

Each path answers from a queue of scripted responses (the last one repeats);
every answer carries a fresh ``Replay-Nonce``, and every request is recorded
with its JWS decoded, so tests can check what the session signed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from certmint.client.session import AcmeSession
from certmint.protocol.jws import ParsedJWS, parse_jws
from certmint.protocol.problems import Problem

BASE = "https://ca.test"
DIRECTORY_URL = f"{BASE}/directory"
DIRECTORY = {
    "newNonce": f"{BASE}/new-nonce",
    "newAccount": f"{BASE}/new-account",
    "newOrder": f"{BASE}/new-order",
    "revokeCert": f"{BASE}/revoke-cert",
    "keyChange": f"{BASE}/key-change",
    "renewalInfo": f"{BASE}/renewal-info",
}

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


def problem(kind: str, detail: str, status: int = 400, **extra: Any) -> httpx.Response:
    doc = Problem(kind, detail, status).to_json() | extra
    return httpx.Response(
        status,
        content=json.dumps(doc).encode(),
        headers={"Content-Type": "application/problem+json"},
    )


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers or {})


@dataclass
class Seen:
    method: str
    url: str
    jws: ParsedJWS | None
    headers: httpx.Headers


@dataclass
class ScriptedCA:
    script: dict[str, list[Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    nonces_issued: int = 0
    directory: dict[str, str] = field(default_factory=lambda: dict(DIRECTORY))

    def on(self, path: str, *answers: Answer) -> None:
        self.script[path] = list(answers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        jws = parse_jws(body) if request.method == "POST" and body else None
        self.seen.append(Seen(request.method, str(request.url), jws, request.headers))
        path = request.url.path
        if path == "/directory":
            response = ok(self.directory)
        elif path == "/new-nonce":
            response = httpx.Response(200)
        else:
            queue = self.script.get(path)
            if not queue:
                response = problem("malformed", f"nothing scripted for {path}", 404)
            else:
                answer = queue.pop(0) if len(queue) > 1 else queue[0]
                response = answer(request) if callable(answer) else answer
        # A fresh copy each time: a repeated answer must not repeat its nonce.
        response = httpx.Response(
            response.status_code, headers=response.headers.copy(), stream=response.stream
        )
        self.nonces_issued += 1
        response.headers.setdefault("Replay-Nonce", f"nonce{self.nonces_issued}")
        return response

    def posts(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and httpx.URL(s.url).path == path]

    def session(self, **kwargs: Any) -> AcmeSession:
        http = httpx.Client(transport=httpx.MockTransport(self.handle))
        key = kwargs.pop("key", None) or ec.generate_private_key(ec.SECP256R1())
        return AcmeSession(DIRECTORY_URL, key, http=http, **kwargs)
