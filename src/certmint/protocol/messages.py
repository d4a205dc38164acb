"""ACME message payloads and resources (RFC 8555 §7.1, §7.3, §7.4, §7.6).

Request payloads come from clients and are checked strictly for type; fields
we do not know are ignored (RFC 8555 §7.3: "servers MUST ignore" them).
Resource messages are rendered by the server and parsed by the agent; both
sides share these classes so the wire format lives in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from certmint.protocol.b64 import b64url_decode
from certmint.protocol.problems import Problem


class MessageError(ValueError):
    """A message with a missing field or a field of the wrong type."""


# RFC 3339 §5.6 date-time; "T"/"Z" may be lowercase (§5.6 NOTE).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def format_rfc3339(dt: datetime) -> str:
    """UTC, whole seconds, "Z" — the form Boulder and Pebble send."""
    if dt.tzinfo is None:
        raise ValueError("refusing to format a naive datetime")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime."""
    if not isinstance(text, str):
        raise MessageError("timestamp is not a string")
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise MessageError(f'"{text}" is not an RFC 3339 timestamp')
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    # A leap second (:60) has no datetime; the instant before it is close enough.
    second = min(second, 59)
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    if offset in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise MessageError(f'"{text}" has an invalid UTC offset')
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        dt = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise MessageError(f'"{text}" is not a valid date-time: {exc}') from None
    return dt.astimezone(UTC)


# --- field readers: None for absent or JSON null, MessageError for wrong types.


def _obj(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise MessageError(f"{what} is not a JSON object")
    return obj


def _opt_str(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise MessageError(f'field "{name}" must be a string')
    return value


def _req_str(obj: dict[str, Any], name: str) -> str:
    value = _opt_str(obj, name)
    if value is None:
        raise MessageError(f'field "{name}" is required')
    return value


def _opt_bool(obj: dict[str, Any], name: str) -> bool | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, bool):
        raise MessageError(f'field "{name}" must be true or false')
    return value


def _opt_str_list(obj: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MessageError(f'field "{name}" must be a list of strings')
    return tuple(value)


def _opt_dict(obj: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, dict):
        raise MessageError(f'field "{name}" must be a JSON object')
    return value


def _opt_time(obj: dict[str, Any], name: str) -> datetime | None:
    value = _opt_str(obj, name)
    return None if value is None else parse_rfc3339(value)


def _req_b64(obj: dict[str, Any], name: str) -> bytes:
    value = _req_str(obj, name)
    try:
        data = b64url_decode(value)
    except ValueError as exc:
        raise MessageError(f'field "{name}" is not valid base64url: {exc}') from None
    if not data:
        raise MessageError(f'field "{name}" is empty')
    return data


def _opt_problem(obj: dict[str, Any], name: str) -> Problem | None:
    value = _opt_dict(obj, name)
    if value is None:
        return None
    try:
        return Problem.from_json(value)
    except ValueError as exc:
        raise MessageError(f'field "{name}" is not a problem document: {exc}') from None


def _put(doc: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        doc[name] = value


def _time_or_none(value: datetime | None) -> str | None:
    return None if value is None else format_rfc3339(value)


# --- request payloads


@dataclass(frozen=True)
class Identifier:
    type: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}

    @classmethod
    def from_json(cls, obj: Any) -> Identifier:
        doc = _obj(obj, "identifier")
        return cls(type=_req_str(doc, "type"), value=_req_str(doc, "value"))


def _identifiers(obj: dict[str, Any], name: str) -> tuple[Identifier, ...]:
    value = obj.get(name)
    if not isinstance(value, list) or not value:
        raise MessageError(f'field "{name}" must be a non-empty list of identifiers')
    return tuple(Identifier.from_json(item) for item in value)


@dataclass(frozen=True)
class NewAccountRequest:
    """RFC 8555 §7.3."""

    contact: tuple[str, ...] | None
    terms_of_service_agreed: bool | None
    only_return_existing: bool
    external_account_binding: dict[str, Any] | None

    @classmethod
    def from_json(cls, obj: Any) -> NewAccountRequest:
        doc = _obj(obj, "newAccount payload")
        return cls(
            contact=_opt_str_list(doc, "contact"),
            terms_of_service_agreed=_opt_bool(doc, "termsOfServiceAgreed"),
            only_return_existing=bool(_opt_bool(doc, "onlyReturnExisting")),
            external_account_binding=_opt_dict(doc, "externalAccountBinding"),
        )


@dataclass(frozen=True)
class AccountUpdateRequest:
    """RFC 8555 §7.3.2 (contact update) and §7.3.6 (deactivation)."""

    contact: tuple[str, ...] | None
    status: str | None

    @classmethod
    def from_json(cls, obj: Any) -> AccountUpdateRequest:
        doc = _obj(obj, "account update payload")
        return cls(contact=_opt_str_list(doc, "contact"), status=_opt_str(doc, "status"))


@dataclass(frozen=True)
class NewOrderRequest:
    """RFC 8555 §7.4, plus ``profile`` (draft-ietf-acme-profiles) and
    ``replaces`` (RFC 9773, ARI)."""

    identifiers: tuple[Identifier, ...]
    not_before: datetime | None
    not_after: datetime | None
    profile: str | None
    replaces: str | None

    @classmethod
    def from_json(cls, obj: Any) -> NewOrderRequest:
        doc = _obj(obj, "newOrder payload")
        return cls(
            identifiers=_identifiers(doc, "identifiers"),
            not_before=_opt_time(doc, "notBefore"),
            not_after=_opt_time(doc, "notAfter"),
            profile=_opt_str(doc, "profile"),
            replaces=_opt_str(doc, "replaces"),
        )


@dataclass(frozen=True)
class FinalizeRequest:
    """RFC 8555 §7.4: ``csr`` is base64url DER."""

    csr_der: bytes

    @classmethod
    def from_json(cls, obj: Any) -> FinalizeRequest:
        return cls(csr_der=_req_b64(_obj(obj, "finalize payload"), "csr"))


@dataclass(frozen=True)
class RevocationRequest:
    """RFC 8555 §7.6."""

    certificate_der: bytes
    reason: int | None

    @classmethod
    def from_json(cls, obj: Any) -> RevocationRequest:
        doc = _obj(obj, "revokeCert payload")
        reason = doc.get("reason")
        # bool is an int subclass in Python; JSON true is not a reason code.
        if reason is not None and (not isinstance(reason, int) or isinstance(reason, bool)):
            raise MessageError('field "reason" must be an integer')
        return cls(certificate_der=_req_b64(doc, "certificate"), reason=reason)


@dataclass(frozen=True)
class KeyChangeInnerPayload:
    """RFC 8555 §7.3.5: the payload of the inner keyChange JWS."""

    account: str
    old_key: dict[str, Any]

    @classmethod
    def from_json(cls, obj: Any) -> KeyChangeInnerPayload:
        doc = _obj(obj, "keyChange payload")
        old_key = _opt_dict(doc, "oldKey")
        if old_key is None:
            raise MessageError('field "oldKey" is required')
        return cls(account=_req_str(doc, "account"), old_key=old_key)


# --- resources


@dataclass(frozen=True)
class DirectoryMsg:
    """RFC 8555 §7.1.1."""

    new_nonce: str
    new_account: str
    new_order: str
    revoke_cert: str
    key_change: str
    new_authz: str | None = None
    renewal_info: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "newNonce": self.new_nonce,
            "newAccount": self.new_account,
            "newOrder": self.new_order,
            "revokeCert": self.revoke_cert,
            "keyChange": self.key_change,
        }
        _put(doc, "newAuthz", self.new_authz)
        _put(doc, "renewalInfo", self.renewal_info)
        if self.meta:
            doc["meta"] = dict(self.meta)
        return doc

    @classmethod
    def from_json(cls, obj: Any) -> DirectoryMsg:
        doc = _obj(obj, "directory")
        return cls(
            new_nonce=_req_str(doc, "newNonce"),
            new_account=_req_str(doc, "newAccount"),
            new_order=_req_str(doc, "newOrder"),
            revoke_cert=_req_str(doc, "revokeCert"),
            key_change=_req_str(doc, "keyChange"),
            new_authz=_opt_str(doc, "newAuthz"),
            renewal_info=_opt_str(doc, "renewalInfo"),
            meta=_opt_dict(doc, "meta") or {},
        )


@dataclass(frozen=True)
class AccountMsg:
    """RFC 8555 §7.1.2."""

    status: str
    contact: tuple[str, ...] | None = None
    orders: str | None = None
    terms_of_service_agreed: bool | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": self.status}
        _put(doc, "contact", None if self.contact is None else list(self.contact))
        _put(doc, "orders", self.orders)
        _put(doc, "termsOfServiceAgreed", self.terms_of_service_agreed)
        return doc

    @classmethod
    def from_json(cls, obj: Any) -> AccountMsg:
        doc = _obj(obj, "account")
        return cls(
            status=_req_str(doc, "status"),
            contact=_opt_str_list(doc, "contact"),
            orders=_opt_str(doc, "orders"),
            terms_of_service_agreed=_opt_bool(doc, "termsOfServiceAgreed"),
        )


@dataclass(frozen=True)
class OrderMsg:
    """RFC 8555 §7.1.3 (``profile``: draft-ietf-acme-profiles; ``replaces``: ARI)."""

    status: str
    identifiers: tuple[Identifier, ...]
    authorizations: tuple[str, ...]
    finalize: str
    expires: datetime | None = None
    certificate: str | None = None
    error: Problem | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    profile: str | None = None
    replaces: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": self.status}
        _put(doc, "expires", _time_or_none(self.expires))
        doc["identifiers"] = [i.to_json() for i in self.identifiers]
        _put(doc, "notBefore", _time_or_none(self.not_before))
        _put(doc, "notAfter", _time_or_none(self.not_after))
        _put(doc, "profile", self.profile)
        _put(doc, "replaces", self.replaces)
        _put(doc, "error", None if self.error is None else self.error.to_json())
        doc["authorizations"] = list(self.authorizations)
        doc["finalize"] = self.finalize
        _put(doc, "certificate", self.certificate)
        return doc

    @classmethod
    def from_json(cls, obj: Any) -> OrderMsg:
        doc = _obj(obj, "order")
        authorizations = _opt_str_list(doc, "authorizations")
        if authorizations is None:
            raise MessageError('field "authorizations" is required')
        return cls(
            status=_req_str(doc, "status"),
            identifiers=_identifiers(doc, "identifiers"),
            authorizations=authorizations,
            finalize=_req_str(doc, "finalize"),
            expires=_opt_time(doc, "expires"),
            certificate=_opt_str(doc, "certificate"),
            error=_opt_problem(doc, "error"),
            not_before=_opt_time(doc, "notBefore"),
            not_after=_opt_time(doc, "notAfter"),
            profile=_opt_str(doc, "profile"),
            replaces=_opt_str(doc, "replaces"),
        )


@dataclass(frozen=True)
class ChallengeMsg:
    """RFC 8555 §7.1.5 and §8."""

    type: str
    url: str
    status: str
    token: str | None = None
    validated: datetime | None = None
    error: Problem | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type, "url": self.url, "status": self.status}
        _put(doc, "token", self.token)
        _put(doc, "validated", _time_or_none(self.validated))
        _put(doc, "error", None if self.error is None else self.error.to_json())
        return doc

    @classmethod
    def from_json(cls, obj: Any) -> ChallengeMsg:
        doc = _obj(obj, "challenge")
        return cls(
            type=_req_str(doc, "type"),
            url=_req_str(doc, "url"),
            status=_req_str(doc, "status"),
            token=_opt_str(doc, "token"),
            validated=_opt_time(doc, "validated"),
            error=_opt_problem(doc, "error"),
        )


@dataclass(frozen=True)
class AuthorizationMsg:
    """RFC 8555 §7.1.4. ``wildcard`` MUST be absent unless true."""

    identifier: Identifier
    status: str
    challenges: tuple[ChallengeMsg, ...]
    expires: datetime | None = None
    wildcard: bool = False

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"identifier": self.identifier.to_json(), "status": self.status}
        _put(doc, "expires", _time_or_none(self.expires))
        doc["challenges"] = [c.to_json() for c in self.challenges]
        if self.wildcard:
            doc["wildcard"] = True
        return doc

    @classmethod
    def from_json(cls, obj: Any) -> AuthorizationMsg:
        doc = _obj(obj, "authorization")
        raw_challenges = doc.get("challenges")
        if not isinstance(raw_challenges, list):
            raise MessageError('field "challenges" must be a list')
        if "identifier" not in doc:
            raise MessageError('field "identifier" is required')
        return cls(
            identifier=Identifier.from_json(doc["identifier"]),
            status=_req_str(doc, "status"),
            challenges=tuple(ChallengeMsg.from_json(c) for c in raw_challenges),
            expires=_opt_time(doc, "expires"),
            wildcard=bool(_opt_bool(doc, "wildcard")),
        )
