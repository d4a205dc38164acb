from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from certmint.protocol.b64 import b64url_encode
from certmint.protocol.messages import (
    AccountMsg,
    AccountUpdateRequest,
    AuthorizationMsg,
    ChallengeMsg,
    DirectoryMsg,
    FinalizeRequest,
    Identifier,
    KeyChangeInnerPayload,
    MessageError,
    NewAccountRequest,
    NewOrderRequest,
    OrderMsg,
    RevocationRequest,
    format_rfc3339,
    parse_rfc3339,
)
from certmint.protocol.problems import Problem

T = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- RFC 3339


def test_format_rfc3339() -> None:
    assert format_rfc3339(T) == "2030-01-02T03:04:05Z"
    assert format_rfc3339(T.replace(microsecond=999_999)) == "2030-01-02T03:04:05Z"
    plus_two = timezone(timedelta(hours=2))
    assert format_rfc3339(datetime(2030, 1, 2, 5, 4, 5, tzinfo=plus_two)) == "2030-01-02T03:04:05Z"
    with pytest.raises(ValueError):
        format_rfc3339(datetime(2030, 1, 1))  # naive


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-02T03:04:05Z", T),
        ("2030-01-02t03:04:05z", T),
        ("2030-01-02T05:04:05+02:00", T),
        ("2030-01-02T00:04:05-03:00", T),
        ("2030-01-02T03:04:05.123Z", T.replace(microsecond=123_000)),
        ("2030-01-02T03:04:05.1234567891Z", T.replace(microsecond=123_456)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    "text",
    [
        "2030-01-02 03:04:05Z",
        "2030-01-02T03:04:05",  # no offset
        "2030-01-02",
        "2030-13-02T03:04:05Z",
        "2030-02-30T03:04:05Z",
        "2030-01-02T03:04:05+24:00",
        "2030-01-02T03:04:05Z ",
        "",
    ],
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(MessageError):
        parse_rfc3339(text)


# --- request payloads


def test_new_account_request() -> None:
    msg = NewAccountRequest.from_json(
        {
            "contact": ["mailto:a@example.com"],
            "termsOfServiceAgreed": True,
            "externalAccountBinding": {"protected": "x", "payload": "y", "signature": "z"},
            "unknownField": [1, 2, 3],
        }
    )
    assert msg.contact == ("mailto:a@example.com",)
    assert msg.terms_of_service_agreed is True
    assert msg.only_return_existing is False
    assert msg.external_account_binding == {"protected": "x", "payload": "y", "signature": "z"}
    empty = NewAccountRequest.from_json({"onlyReturnExisting": True})
    assert empty == NewAccountRequest(None, None, True, None)


@pytest.mark.parametrize(
    ("cls", "obj"),
    [
        (NewAccountRequest, []),
        (NewAccountRequest, {"contact": "mailto:a@example.com"}),
        (NewAccountRequest, {"contact": [1]}),
        (NewAccountRequest, {"termsOfServiceAgreed": "yes"}),
        (NewAccountRequest, {"termsOfServiceAgreed": 1}),
        (NewAccountRequest, {"onlyReturnExisting": 1}),
        (NewAccountRequest, {"externalAccountBinding": "jws"}),
        (AccountUpdateRequest, {"status": 1}),
        (AccountUpdateRequest, {"contact": {}}),
        (NewOrderRequest, {}),
        (NewOrderRequest, {"identifiers": []}),
        (NewOrderRequest, {"identifiers": {"type": "dns", "value": "a.example"}}),
        (NewOrderRequest, {"identifiers": [{"type": "dns"}]}),
        (NewOrderRequest, {"identifiers": [{"type": "dns", "value": 5}]}),
        (NewOrderRequest, {"identifiers": ["a.example"]}),
        (NewOrderRequest, {"identifiers": [{"type": "dns", "value": "a"}], "notBefore": "soon"}),
        (NewOrderRequest, {"identifiers": [{"type": "dns", "value": "a"}], "profile": 3}),
        (NewOrderRequest, {"identifiers": [{"type": "dns", "value": "a"}], "replaces": 3}),
        (FinalizeRequest, {}),
        (FinalizeRequest, {"csr": ""}),
        (FinalizeRequest, {"csr": "MIIB="}),
        (FinalizeRequest, {"csr": "MII+"}),
        (FinalizeRequest, {"csr": 5}),
        (RevocationRequest, {"certificate": "AQID", "reason": "1"}),
        (RevocationRequest, {"certificate": "AQID", "reason": True}),
        (RevocationRequest, {"reason": 1}),
        (KeyChangeInnerPayload, {"account": "u"}),
        (KeyChangeInnerPayload, {"account": 1, "oldKey": {}}),
        (KeyChangeInnerPayload, {"account": "u", "oldKey": "k"}),
        (Identifier, {"type": "dns"}),
        (Identifier, "dns:a.example"),
    ],
)
def test_request_payloads_reject_wrong_types(cls: Any, obj: Any) -> None:
    with pytest.raises(MessageError):
        cls.from_json(obj)


def test_account_update_request() -> None:
    assert AccountUpdateRequest.from_json({"status": "deactivated"}) == AccountUpdateRequest(
        None, "deactivated"
    )
    assert AccountUpdateRequest.from_json({"contact": []}).contact == ()


def test_new_order_request() -> None:
    msg = NewOrderRequest.from_json(
        {
            "identifiers": [
                {"type": "dns", "value": "a.example"},
                {"type": "dns", "value": "*.a.example"},
            ],
            "notBefore": "2030-01-02T03:04:05Z",
            "profile": "shortlived",
            "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
        }
    )
    assert msg.identifiers == (Identifier("dns", "a.example"), Identifier("dns", "*.a.example"))
    assert msg.not_before == T
    assert msg.not_after is None
    assert msg.profile == "shortlived"
    assert msg.replaces == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_finalize_and_revocation_requests() -> None:
    assert FinalizeRequest.from_json({"csr": b64url_encode(b"\x30\x00")}).csr_der == b"\x30\x00"
    rev = RevocationRequest.from_json({"certificate": b64url_encode(b"\x30\x01\x00"), "reason": 4})
    assert rev == RevocationRequest(b"\x30\x01\x00", 4)
    assert RevocationRequest.from_json({"certificate": "AQID"}).reason is None


def test_key_change_inner_payload() -> None:
    msg = KeyChangeInnerPayload.from_json({"account": "https://ca/acct/1", "oldKey": {"kty": "EC"}})
    assert msg == KeyChangeInnerPayload("https://ca/acct/1", {"kty": "EC"})


# --- resources


def _round_trip(msg: Any) -> dict[str, Any]:
    doc = msg.to_json()
    assert type(msg).from_json(doc) == msg
    return doc  # type: ignore[no-any-return]


def test_directory() -> None:
    d = DirectoryMsg("n", "a", "o", "r", "k", meta={"termsOfService": "https://tos"})
    assert _round_trip(d) == {
        "newNonce": "n",
        "newAccount": "a",
        "newOrder": "o",
        "revokeCert": "r",
        "keyChange": "k",
        "meta": {"termsOfService": "https://tos"},
    }
    full = DirectoryMsg("n", "a", "o", "r", "k", new_authz="z", renewal_info="ri")
    doc = _round_trip(full)
    assert doc["renewalInfo"] == "ri"
    assert "meta" not in doc
    with pytest.raises(MessageError):
        DirectoryMsg.from_json({"newNonce": "n"})


def test_account_msg() -> None:
    assert _round_trip(AccountMsg("valid")) == {"status": "valid"}
    acct = AccountMsg("valid", ("mailto:a@example.com",), "https://ca/orders/1", True)
    assert _round_trip(acct) == {
        "status": "valid",
        "contact": ["mailto:a@example.com"],
        "orders": "https://ca/orders/1",
        "termsOfServiceAgreed": True,
    }


def test_order_msg() -> None:
    order = OrderMsg(
        status="invalid",
        identifiers=(Identifier("dns", "a.example"),),
        authorizations=("https://ca/authz/1",),
        finalize="https://ca/order/1/finalize",
        expires=T,
        error=Problem("unauthorized", "no", 403),
        not_after=T + timedelta(days=1),
        profile="classic",
    )
    doc = _round_trip(order)
    assert doc["expires"] == "2030-01-02T03:04:05Z"
    assert doc["notAfter"] == "2030-01-03T03:04:05Z"
    assert doc["error"]["type"] == "urn:ietf:params:acme:error:unauthorized"
    assert "certificate" not in doc and "notBefore" not in doc and "replaces" not in doc
    with pytest.raises(MessageError):
        OrderMsg.from_json({"status": "pending", "identifiers": [], "finalize": "f"})


def test_authorization_and_challenge_msgs() -> None:
    chall = ChallengeMsg("http-01", "https://ca/chall/1", "valid", token="tok", validated=T)
    pending = ChallengeMsg("dns-01", "https://ca/chall/2", "pending", token="tok")
    authz = AuthorizationMsg(
        identifier=Identifier("dns", "a.example"),
        status="valid",
        challenges=(chall, pending),
        expires=T,
        wildcard=True,
    )
    doc = _round_trip(authz)
    assert doc["wildcard"] is True
    assert doc["challenges"][0] == {
        "type": "http-01",
        "url": "https://ca/chall/1",
        "status": "valid",
        "token": "tok",
        "validated": "2030-01-02T03:04:05Z",
    }
    plain = AuthorizationMsg(Identifier("dns", "b.example"), "pending", ())
    # RFC 8555 §7.1.4: "wildcard" MUST be absent unless true.
    assert "wildcard" not in _round_trip(plain)
    failed = ChallengeMsg("http-01", "u", "invalid", error=Problem("connection", "refused"))
    assert _round_trip(failed)["error"]["detail"] == "refused"
    with pytest.raises(MessageError):
        AuthorizationMsg.from_json({"status": "pending", "challenges": []})
    with pytest.raises(MessageError):
        ChallengeMsg.from_json({"type": "http-01", "url": "u"})
