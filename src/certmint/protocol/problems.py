"""ACME problem documents (RFC 8555 §6.7, RFC 7807)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ACME_ERROR_NS = "urn:ietf:params:acme:error:"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class ProblemType:
    """The short names of RFC 8555 §6.7 (and later drafts) error types."""

    ACCOUNT_DOES_NOT_EXIST = "accountDoesNotExist"
    ALREADY_REPLACED = "alreadyReplaced"  # RFC 9773 §5
    ALREADY_REVOKED = "alreadyRevoked"
    BAD_CSR = "badCSR"
    BAD_NONCE = "badNonce"
    BAD_PUBLIC_KEY = "badPublicKey"
    BAD_REVOCATION_REASON = "badRevocationReason"
    BAD_SIGNATURE_ALGORITHM = "badSignatureAlgorithm"
    CAA = "caa"
    COMPOUND = "compound"
    CONNECTION = "connection"
    DNS = "dns"
    EXTERNAL_ACCOUNT_REQUIRED = "externalAccountRequired"
    INCORRECT_RESPONSE = "incorrectResponse"
    INVALID_CONTACT = "invalidContact"
    INVALID_PROFILE = "invalidProfile"  # draft-ietf-acme-profiles
    MALFORMED = "malformed"
    ORDER_NOT_READY = "orderNotReady"
    RATE_LIMITED = "rateLimited"
    REJECTED_IDENTIFIER = "rejectedIdentifier"
    SERVER_INTERNAL = "serverInternal"
    TLS = "tls"
    UNAUTHORIZED = "unauthorized"
    UNSUPPORTED_CONTACT = "unsupportedContact"
    UNSUPPORTED_IDENTIFIER = "unsupportedIdentifier"
    USER_ACTION_REQUIRED = "userActionRequired"
    # Not in RFC 8555's table, but the status a client needs for 404/405.
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Problem:
    """One RFC 7807 problem document; ``type`` is the short ACME name."""

    type: str
    detail: str
    status: int = 400
    identifier: tuple[str, str] | None = None  # (type, value) for subproblems
    subproblems: tuple[Problem, ...] = field(default_factory=tuple)
    algorithms: tuple[str, ...] = ()  # badSignatureAlgorithm (RFC 8555 §6.2)

    @property
    def type_urn(self) -> str:
        return ACME_ERROR_NS + self.type

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type_urn, "detail": self.detail}
        if self.status:
            doc["status"] = self.status
        if self.identifier is not None:
            doc["identifier"] = {"type": self.identifier[0], "value": self.identifier[1]}
        if self.subproblems:
            doc["subproblems"] = [sp.to_json() for sp in self.subproblems]
        if self.algorithms:
            doc["algorithms"] = list(self.algorithms)
        return doc

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, doc: Any) -> Problem:
        if not isinstance(doc, dict):
            raise ValueError("problem document is not a JSON object")
        raw_type = doc.get("type", "about:blank")
        if not isinstance(raw_type, str):
            raise ValueError("problem type is not a string")
        short = raw_type.removeprefix(ACME_ERROR_NS)
        detail = doc.get("detail", "")
        status = doc.get("status", 0)
        ident = doc.get("identifier")
        identifier = None
        if isinstance(ident, dict):
            identifier = (str(ident.get("type", "")), str(ident.get("value", "")))
        subs = doc.get("subproblems") or []
        algs = doc.get("algorithms") or []
        return cls(
            type=short,
            detail=detail if isinstance(detail, str) else str(detail),
            status=status if isinstance(status, int) else 0,
            identifier=identifier,
            subproblems=tuple(cls.from_json(s) for s in subs if isinstance(s, dict)),
            algorithms=tuple(a for a in algs if isinstance(a, str)),
        )

    @classmethod
    def from_json_text(cls, text: str) -> Problem:
        return cls.from_json(json.loads(text))
