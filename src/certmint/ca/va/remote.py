"""The primary's client for one remote VA perspective (BR 3.2.2.9).

``RemotePerspective`` asks a ``certmint-ca va-perspective`` process to
repeat a validation or a CAA check. Like the VA itself it never raises for
anything the network or the remote can cause: a timeout, a refused
connection, a non-200 answer, a response whose MAC does not verify, or a
body that does not parse all become a failed result naming the region —
a failure the quorum counts, never an agreement.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from certmint.ca.va.model import ValidationRequest, ValidationResult, WireError
from certmint.ca.va.perspective_wire import (
    CHECK_CAA_PATH,
    MAC_HEADER,
    MAX_BODY_BYTES,
    NONCE_BYTES,
    VALIDATE_PATH,
    check_secret,
    mac_matches,
    request_mac,
    response_mac,
)
from certmint.protocol.b64 import b64url_encode
from certmint.protocol.problems import Problem, ProblemType
from certmint.protocol.strictjson import strict_json_loads
from certmint.runtime import Entropy, SystemEntropy

log = logging.getLogger(__name__)

# Text a remote sends back unauthenticated (an error body) is shown only
# this far, printable characters only.
_ECHO_LIMIT = 200


class _RemoteFailure(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


class RemotePerspective:
    """One remote perspective: ``region`` labels it in problems and records."""

    def __init__(
        self,
        region: str,
        base_url: str,
        secret: bytes,
        timeout: float,
        *,
        entropy: Entropy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        check_secret(secret)
        if timeout <= 0:
            raise ValueError("a remote perspective's timeout must be positive")
        self.region = region
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._secret = secret
        # Nonces bind each response to its request; they need the OS CSPRNG.
        self._entropy = entropy if entropy is not None else SystemEntropy()
        # One pooled client per perspective: validations reuse its connections.
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment between CA and VA
            headers={"User-Agent": "certmint-va-primary/0.1"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        try:
            doc = await self._call(VALIDATE_PATH, {"request": request.to_json()})
            try:
                result = ValidationResult.from_json(doc.get("result"))
            except WireError as exc:
                raise self._unreadable(str(exc)) from None
        except _RemoteFailure as failure:
            return ValidationResult(valid=False, problem=failure.problem)
        # A perspective speaks for itself only: drop anything it claims
        # about other perspectives.
        return ValidationResult(
            valid=result.valid,
            problem=result.problem,
            records=result.records,
            caa_checked_at=result.caa_checked_at,
        )

    async def check_caa(
        self,
        identifier_type: str,
        identifier_value: str,
        *,
        challenge_type: str,
        account_uri: str | None,
        wildcard: bool,
    ) -> Problem | None:
        """None when this perspective finds issuance permitted; else its
        problem, or one saying why it could not answer."""
        payload = {
            "identifierType": identifier_type,
            "identifierValue": identifier_value,
            "challengeType": challenge_type,
            "accountUri": account_uri,
            "wildcard": wildcard,
        }
        try:
            doc = await self._call(CHECK_CAA_PATH, payload)
            raw = doc.get("problem")
            if raw is None:
                return None
            try:
                # The result parser checks a problem document's fields.
                parsed = ValidationResult.from_json({"valid": False, "problem": raw})
            except WireError as exc:
                raise self._unreadable(str(exc)) from None
            return parsed.problem
        except _RemoteFailure as failure:
            return failure.problem

    async def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        nonce = b64url_encode(self._entropy.token_bytes(NONCE_BYTES))
        body = json.dumps({"nonce": nonce, **payload}, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            MAC_HEADER: request_mac(self._secret, body),
        }
        try:
            # One deadline for the whole exchange: httpx's timeouts bound
            # each phase, this bounds their sum.
            async with asyncio.timeout(self.timeout):
                status, reply, mac = await self._post(path, body, headers)
        except TimeoutError:
            raise _RemoteFailure(
                Problem(
                    ProblemType.CONNECTION,
                    f"Remote perspective {self.region} did not answer within "
                    f"{self.timeout:g} seconds",
                    400,
                )
            ) from None
        except httpx.HTTPError as exc:
            log.info("remote perspective %s: %r", self.region, exc)
            raise _RemoteFailure(
                Problem(
                    ProblemType.CONNECTION,
                    f"Cannot reach remote perspective {self.region}: {type(exc).__name__}",
                    400,
                )
            ) from None
        except Exception:  # a bug, not the network: still a failure, never a raise
            log.exception("remote perspective %s: exchange failed", self.region)
            raise _RemoteFailure(
                Problem(
                    ProblemType.SERVER_INTERNAL,
                    f"Remote perspective {self.region} failed inside the CA",
                    500,
                )
            ) from None
        if reply is None:
            raise self._unreadable(f"response larger than {MAX_BODY_BYTES} bytes")
        if status != 200:
            raise _RemoteFailure(
                Problem(
                    ProblemType.SERVER_INTERNAL,
                    f"Remote perspective {self.region} answered HTTP {status}"
                    f"{_error_detail(reply)}",
                    500,
                )
            )
        if not mac_matches(response_mac(self._secret, nonce, reply), mac):
            raise _RemoteFailure(
                Problem(
                    ProblemType.SERVER_INTERNAL,
                    f"Remote perspective {self.region} sent a response whose MAC does not verify",
                    500,
                )
            )
        try:
            doc = strict_json_loads(reply)
        except ValueError as exc:
            raise self._unreadable(str(exc)) from None
        if not isinstance(doc, dict):
            raise self._unreadable("not a JSON object")
        if doc.get("region") != self.region:
            # The secret is shared by all perspectives: a mix-up in the
            # configuration must not let one region answer for another.
            raise self._unreadable("it names another region")
        return doc

    async def _post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes | None, str | None]:
        """(status, body or None if over the cap, MAC header)."""
        async with self._client.stream("POST", path, content=body, headers=headers) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return response.status_code, None, None
                chunks.append(chunk)
            return response.status_code, b"".join(chunks), response.headers.get(MAC_HEADER)

    def _unreadable(self, why: str) -> _RemoteFailure:
        return _RemoteFailure(
            Problem(
                ProblemType.SERVER_INTERNAL,
                f"Remote perspective {self.region} sent an unusable response: {_printable(why)}",
                500,
            )
        )


def _error_detail(reply: bytes) -> str:
    """ ": <detail>" from an (unauthenticated) problem document, bounded."""
    try:
        doc = strict_json_loads(reply)
    except ValueError:
        return ""
    detail = doc.get("detail") if isinstance(doc, dict) else None
    return f": {_printable(detail)}" if isinstance(detail, str) and detail else ""


def _printable(text: str) -> str:
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:_ECHO_LIMIT])
    return shown + ("..." if len(text) > _ECHO_LIMIT else "")
