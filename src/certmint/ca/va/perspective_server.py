"""A remote VA perspective's HTTP API (BR 3.2.2.9 multi-perspective corroboration).

A perspective is a ``ValidationAuthority`` with its own resolver, run as a
separate process (``certmint-ca va-perspective``) from another network
vantage point; the primary asks it to repeat each validation and CAA check.
Routes, on plain HTTP (the shared-secret MACs of ``perspective_wire``
authenticate both directions; TLS adds nothing the MACs need)::

    POST /v1/validate    {"nonce", "request": ValidationRequest}  -> {"result": ValidationResult}
    POST /v1/check-caa   {"nonce", "identifierType", "identifierValue",
                          "challengeType", "accountUri", "wildcard"}  -> {"problem": Problem|null}
    GET  /v1/health      {"status": "ok", "region": ...}

Every request body is hostile until checked: size-capped, MAC-verified over
the raw bytes, parsed with ``strictjson``, then each field type-checked.
Failures are RFC 7807 problem documents (401 bad MAC, 400 bad JSON or
fields, 413 too big). Validation failures are not errors: they come back as
a 200 result carrying the VA's problem, like the primary's own VA.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from certmint.ca.request_body import read_limited
from certmint.ca.va.model import ValidationRequest, Validator, WireError
from certmint.ca.va.perspective_wire import (
    CHECK_CAA_PATH,
    HEALTH_PATH,
    MAC_HEADER,
    MAX_BODY_BYTES,
    NONCE_RE,
    VALIDATE_PATH,
    check_secret,
    mac_matches,
    request_mac,
    response_mac,
)
from certmint.protocol.problems import PROBLEM_CONTENT_TYPE, Problem, ProblemType
from certmint.protocol.strictjson import strict_json_loads

log = logging.getLogger(__name__)


class _Refused(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


def _problem_response(problem: Problem) -> Response:
    return Response(
        problem.to_json_text(), status_code=problem.status, media_type=PROBLEM_CONTENT_TYPE
    )


def build_perspective_app(va: Validator, region: str, secret: bytes) -> Starlette:
    """The perspective's ASGI app around ``va`` (which owns the network)."""
    check_secret(secret)

    async def authenticated_body(request: Request) -> tuple[str, dict[str, Any]]:
        """(nonce, document) of a request whose MAC verifies, else _Refused."""
        body = await read_limited(request, MAX_BODY_BYTES)
        if body is None:
            raise _Refused(
                Problem(ProblemType.MALFORMED, f"request body exceeds {MAX_BODY_BYTES} bytes", 413)
            )
        # Authenticate the exact bytes before parsing anything in them.
        if not mac_matches(request_mac(secret, body), request.headers.get(MAC_HEADER)):
            raise _Refused(
                Problem(ProblemType.UNAUTHORIZED, "request MAC is missing or does not verify", 401)
            )
        try:
            doc = strict_json_loads(body)
        except ValueError as exc:
            raise _Refused(Problem(ProblemType.MALFORMED, str(exc), 400)) from None
        if not isinstance(doc, dict):
            raise _Refused(Problem(ProblemType.MALFORMED, "body is not a JSON object", 400))
        nonce = doc.get("nonce")
        if not isinstance(nonce, str) or not NONCE_RE.fullmatch(nonce):
            raise _Refused(Problem(ProblemType.MALFORMED, "nonce is missing or not base64url", 400))
        return nonce, doc

    def signed(nonce: str, doc: dict[str, Any]) -> Response:
        body = json.dumps(doc, separators=(",", ":")).encode()
        return Response(
            body,
            media_type="application/json",
            headers={MAC_HEADER: response_mac(secret, nonce, body)},
        )

    async def validate(request: Request) -> Response:
        try:
            nonce, doc = await authenticated_body(request)
            validation = ValidationRequest.from_json(doc.get("request"))
        except _Refused as refused:
            return _problem_response(refused.problem)
        except WireError as exc:
            return _problem_response(Problem(ProblemType.MALFORMED, str(exc), 400))
        result = await va.validate(validation)
        log.info(
            "perspective %s %s %s valid=%s",
            region,
            validation.challenge_type,
            validation.identifier_value,
            result.valid,
        )
        return signed(nonce, {"region": region, "result": result.to_json()})

    async def check_caa(request: Request) -> Response:
        try:
            nonce, doc = await authenticated_body(request)
            args = _caa_arguments(doc)
        except _Refused as refused:
            return _problem_response(refused.problem)
        except WireError as exc:
            return _problem_response(Problem(ProblemType.MALFORMED, str(exc), 400))
        problem = await va.check_caa(
            args.identifier_type,
            args.identifier_value,
            challenge_type=args.challenge_type,
            account_uri=args.account_uri,
            wildcard=args.wildcard,
        )
        return signed(
            nonce, {"region": region, "problem": None if problem is None else problem.to_json()}
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "region": region})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = ProblemType.MALFORMED
        response = _problem_response(Problem(kind, str(exc.detail or ""), exc.status_code))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Never a traceback on the wire; the details go to the log.
        log.exception("perspective %s error on %s", region, request.url.path, exc_info=exc)
        return _problem_response(
            Problem(ProblemType.SERVER_INTERNAL, "internal error in the perspective", 500)
        )

    return Starlette(
        routes=[
            Route(VALIDATE_PATH, validate, methods=["POST"]),
            Route(CHECK_CAA_PATH, check_caa, methods=["POST"]),
            Route(HEALTH_PATH, health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )


def _caa_arguments(doc: dict[str, Any]) -> ValidationRequest:
    """The check-caa fields, carried in a ValidationRequest shape (the token
    and key authorization are unused by a CAA check)."""
    return ValidationRequest.from_json(
        {
            "challengeType": doc.get("challengeType"),
            "identifierType": doc.get("identifierType"),
            "identifierValue": doc.get("identifierValue"),
            "token": "",
            "keyAuthorization": "",
            "accountUri": doc.get("accountUri"),
            "wildcard": doc.get("wildcard"),
        }
    )
