"""Values that cross the VA's door (DESIGN.md §2: frozen dataclasses only).

The RA hands the VA a ``ValidationRequest`` and gets back a ``ValidationResult``.
Failure is data: a result with ``valid=False`` and a ``Problem``, never an
exception, so the RA can store it on the challenge as RFC 8555 §7.1.5 asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from certmint.protocol.messages import MessageError, format_rfc3339, parse_rfc3339
from certmint.protocol.problems import Problem


@dataclass(frozen=True)
class VAConfig:
    """How the VA reaches the network.

    ``resolvers`` are ``"ip:port"``, ``"[v6]:port"`` or bare ``"ip"`` (port 53);
    empty means the system's /etc/resolv.conf. The ports exist so that tests and
    development setups can point the VA at unprivileged listeners; production
    keeps the RFC 8555 §8.3 / RFC 8737 §3 values 80 and 443.
    """

    resolvers: tuple[str, ...] = ()
    http01_port: int = 80
    https_port: int = 443
    tlsalpn01_port: int = 443
    # Loopback/private/reserved targets are refused unless True (tests, dev).
    allow_private_addresses: bool = False
    # Finer than the switch above: non-public networks (CIDR) the VA may still
    # connect to, e.g. ("127.0.0.0/8", "::1/128") for tests on loopback while
    # 10/8, 192.168/16, 169.254/16, 100.64/10 and the rest stay refused.
    allowed_private_networks: tuple[str, ...] = ()
    dns_timeout: float = 5.0
    connect_timeout: float = 5.0
    total_timeout: float = 15.0
    max_body_bytes: int = 8192
    max_redirects: int = 10
    user_agent: str = "certmint-va/0.1"
    # The issuer domain names CAA "issue"/"issuewild" properties must name
    # for this CA to issue (RFC 8659 §4.2; BR 3.2.2.8): CAConfig.caa_identities.
    caa_identities: tuple[str, ...] = ("certmint.invalid",)
    # BR 3.2.2.8 requires the check; off only for development setups.
    check_caa: bool = True


@dataclass(frozen=True)
class ValidationRequest:
    challenge_type: str  # "http-01", "dns-01", "tls-alpn-01"
    identifier_type: str  # "dns" or "ip" (RFC 8738)
    identifier_value: str
    token: str
    key_authorization: str
    # RFC 8657 §3 "accounturi": the account's URL, matched exactly; None only
    # for callers without an account (a CAA record naming one then refuses).
    account_uri: str | None = None
    # The authorization is for "*.<identifier_value>" (CAA "issuewild").
    wildcard: bool = False

    def to_json(self) -> dict[str, Any]:
        """The wire form a remote perspective receives (BR 3.2.2.9)."""
        return {
            "challengeType": self.challenge_type,
            "identifierType": self.identifier_type,
            "identifierValue": self.identifier_value,
            "token": self.token,
            "keyAuthorization": self.key_authorization,
            "accountUri": self.account_uri,
            "wildcard": self.wildcard,
        }

    @classmethod
    def from_json(cls, doc: Any) -> ValidationRequest:
        """Parse the wire form; every field is type-checked (``WireError``).
        Lengths are bounded here, content is the VA's to judge."""
        obj = _object(doc, "validation request")
        return cls(
            challenge_type=_text(obj, "challengeType", 64),
            identifier_type=_text(obj, "identifierType", 16),
            identifier_value=_text(obj, "identifierValue", 512),
            token=_text(obj, "token", 256),
            key_authorization=_text(obj, "keyAuthorization", 512),
            account_uri=_opt_text(obj, "accountUri", 2048),
            wildcard=_flag(obj, "wildcard"),
        )


@dataclass(frozen=True)
class ValidationRecord:
    """What the VA looked at for one hop; RFC 8555 leaves the shape open, so
    the JSON mirrors Boulder's field names for tools that already read them."""

    url: str | None
    hostname: str
    port: int  # 0 when no connection is made (dns-01)
    addresses_resolved: tuple[str, ...]
    address_used: str | None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "hostname": self.hostname,
            "addressesResolved": list(self.addresses_resolved),
        }
        if self.port:  # dns-01 has no port (0)
            doc["port"] = str(self.port)
        if self.url is not None:
            doc["url"] = self.url
        if self.address_used is not None:
            doc["addressUsed"] = self.address_used
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> ValidationRecord:
        obj = _object(doc, "validation record")
        port_text = _opt_text(obj, "port", 5)
        if port_text is not None and not port_text.isdigit():
            raise WireError("validation record port is not a number")
        resolved = obj.get("addressesResolved", [])
        if not isinstance(resolved, list) or not all(
            isinstance(a, str) and len(a) <= _MAX_TEXT for a in resolved
        ):
            raise WireError("addressesResolved is not a list of strings")
        return cls(
            url=_opt_text(obj, "url", _MAX_TEXT),
            hostname=_text(obj, "hostname", _MAX_TEXT),
            port=int(port_text) if port_text is not None else 0,
            addresses_resolved=tuple(resolved),
            address_used=_opt_text(obj, "addressUsed", _MAX_TEXT),
        )


@dataclass(frozen=True)
class PerspectiveOutcome:
    """What one remote perspective concluded (BR 3.2.2.9), recorded with the
    challenge whether or not the quorum was met."""

    region: str
    valid: bool
    problem_type: str | None = None  # short ACME name, e.g. "dns"
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"region": self.region, "valid": self.valid}
        if self.problem_type is not None:
            doc["problemType"] = self.problem_type
        if self.detail is not None:
            doc["detail"] = self.detail
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> PerspectiveOutcome:
        obj = _object(doc, "perspective outcome")
        return cls(
            region=_text(obj, "region", 64),
            valid=_flag(obj, "valid", required=True),
            problem_type=_opt_text(obj, "problemType", 64),
            detail=_opt_text(obj, "detail", _MAX_TEXT),
        )


@dataclass(frozen=True)
class ValidationResult:
    valid: bool
    problem: Problem | None
    records: tuple[ValidationRecord, ...] = ()
    # When CAA was found to permit issuance (None: not checked, e.g. an IP
    # identifier or a failed challenge); the RA re-checks at finalize when old.
    caa_checked_at: datetime | None = None
    # Every remote perspective's outcome under multi-perspective
    # corroboration (BR 3.2.2.9); empty for a single-perspective VA.
    perspectives: tuple[PerspectiveOutcome, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "problem": None if self.problem is None else self.problem.to_json(),
            "records": [r.to_json() for r in self.records],
            "caaCheckedAt": (
                None if self.caa_checked_at is None else format_rfc3339(self.caa_checked_at)
            ),
            "perspectives": [p.to_json() for p in self.perspectives],
        }

    @classmethod
    def from_json(cls, doc: Any) -> ValidationResult:
        """Parse a result from a remote perspective. A result must be
        coherent: valid without a problem, or invalid with one."""
        obj = _object(doc, "validation result")
        valid = _flag(obj, "valid", required=True)
        problem = _problem(obj.get("problem"))
        if valid == (problem is not None):
            raise WireError("a result is valid without a problem or invalid with one")
        records = _list(obj, "records", 32)
        perspectives = _list(obj, "perspectives", 32)
        checked_text = _opt_text(obj, "caaCheckedAt", 64)
        try:
            checked = None if checked_text is None else parse_rfc3339(checked_text)
        except MessageError as exc:
            raise WireError(str(exc)) from None
        return cls(
            valid=valid,
            problem=problem,
            records=tuple(ValidationRecord.from_json(r) for r in records),
            caa_checked_at=checked,
            perspectives=tuple(PerspectiveOutcome.from_json(p) for p in perspectives),
        )


class ValidationChecks(Protocol):
    """What every validator answers, local or remote: a challenge, and CAA
    alone (the RA's re-check at finalize)."""

    async def validate(self, request: ValidationRequest) -> ValidationResult: ...

    async def check_caa(
        self,
        identifier_type: str,
        identifier_value: str,
        *,
        challenge_type: str,
        account_uri: str | None,
        wildcard: bool,
    ) -> Problem | None: ...

    async def aclose(self) -> None: ...


class Validator(ValidationChecks, Protocol):
    """The VA surface the RA uses: a single ``ValidationAuthority`` or a
    ``MultiPerspectiveVA`` corroborating it (BR 3.2.2.9)."""

    @property
    def config(self) -> VAConfig: ...

    @property
    def supported_challenge_types(self) -> tuple[str, ...]: ...


# --- wire parsing: hostile until checked ------------------------------------

# Bound on any free text from the wire (details, URLs, host names).
_MAX_TEXT = 4096


class WireError(ValueError):
    """A wire document with a missing field or a field of the wrong type."""


def _object(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise WireError(f"{what} is not a JSON object")
    return doc


def _text(obj: dict[str, Any], name: str, limit: int) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise WireError(f"{name} is missing or not a string")
    if len(value) > limit:
        raise WireError(f"{name} is longer than {limit} characters")
    return value


def _opt_text(obj: dict[str, Any], name: str, limit: int) -> str | None:
    if obj.get(name) is None:
        return None
    return _text(obj, name, limit)


def _flag(obj: dict[str, Any], name: str, *, required: bool = False) -> bool:
    value = obj.get(name)
    if value is None and not required:
        return False
    if not isinstance(value, bool):
        raise WireError(f"{name} is not a boolean")
    return value


def _list(obj: dict[str, Any], name: str, limit: int) -> Sequence[Any]:
    value = obj.get(name, [])
    if not isinstance(value, list):
        raise WireError(f"{name} is not a list")
    if len(value) > limit:
        raise WireError(f"{name} has more than {limit} entries")
    return value


def _problem(doc: Any) -> Problem | None:
    if doc is None:
        return None
    obj = _object(doc, "problem")
    if not isinstance(obj.get("type"), str) or not isinstance(obj.get("detail"), str):
        raise WireError("problem has no string type and detail")
    if "status" in obj and not (isinstance(obj["status"], int) and 0 <= obj["status"] < 600):
        raise WireError("problem status is not an HTTP status")
    try:
        problem = Problem.from_json(obj)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"problem: {exc}") from None
    if len(problem.detail) > _MAX_TEXT or len(problem.type) > 128:
        raise WireError("problem type or detail too long")
    return problem
