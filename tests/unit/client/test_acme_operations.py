"""AcmeClient against a scripted CA: payloads, polling cadence, chains, ARI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.client.acme import (
    AcmeClient,
    RenewalInfo,
    ari_cert_id,
    choose_chain,
)
from certmint.client.errors import AcmeProblemError, ClientError
from certmint.protocol.b64 import b64url_decode
from certmint.protocol.jwk import jwk_from_public_key
from certmint.protocol.jws import parse_jws, verify_hmac_jws, verify_jws
from certmint.protocol.messages import Identifier

from .scripted_ca import BASE, DIRECTORY, ScriptedCA, ok, problem

NOW = datetime(2026, 3, 1, tzinfo=UTC)


class FakeTime:
    """``sleep`` that only advances ``monotonic``; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def client_for(ca: ScriptedCA, kid: str | None = f"{BASE}/acct/1") -> tuple[AcmeClient, FakeTime]:
    fake = FakeTime()
    session = ca.session(kid=kid)
    return AcmeClient(session, sleep=fake.sleep, monotonic=fake.monotonic), fake


def order_doc(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "identifiers": [{"type": "dns", "value": "example.com"}],
        "authorizations": [f"{BASE}/authz/1"],
        "finalize": f"{BASE}/order/1/finalize",
        **extra,
    }


def authz_doc(status: str) -> dict[str, Any]:
    return {
        "status": status,
        "identifier": {"type": "dns", "value": "example.com"},
        "challenges": [
            {"type": "http-01", "url": f"{BASE}/chall/1", "status": status, "token": "tok"}
        ],
    }


# -- accounts --------------------------------------------------------------


def test_register_sends_terms_contact_and_eab_and_sets_kid() -> None:
    ca = ScriptedCA()
    ca.on("/new-account", ok({"status": "valid"}, 201, {"Location": "/acct/7"}))
    client, _ = client_for(ca, kid=None)
    hmac_key = b"0123456789abcdef0123456789abcdef"
    url, account = client.register(
        contact=["mailto:a@example.com"], agree_tos=True, eab=("kid-1", hmac_key)
    )
    assert url == f"{BASE}/acct/7" and account.status == "valid"
    assert client.session.kid == url
    (seen,) = ca.posts("/new-account")
    assert seen.jws is not None and seen.jws.jwk is not None and seen.jws.kid is None
    payload = seen.jws.payload_json()
    assert payload["termsOfServiceAgreed"] is True
    assert payload["contact"] == ["mailto:a@example.com"]
    inner = parse_jws(json.dumps(payload["externalAccountBinding"]).encode())
    verify_hmac_jws(inner, hmac_key)
    assert inner.kid == "kid-1" and inner.url == DIRECTORY["newAccount"]
    assert inner.payload_json() == jwk_from_public_key(client.session.key.public_key())


def test_register_without_location_is_an_error() -> None:
    ca = ScriptedCA()
    ca.on("/new-account", ok({"status": "valid"}, 201))
    client, _ = client_for(ca, kid=None)
    with pytest.raises(ClientError, match="no Location"):
        client.register(agree_tos=True)


def test_only_return_existing_and_no_terms() -> None:
    ca = ScriptedCA()
    ca.on("/new-account", ok({"status": "valid"}, 200, {"Location": f"{BASE}/acct/7"}))
    client, _ = client_for(ca, kid=None)
    client.register(agree_tos=False, only_return_existing=True)
    (seen,) = ca.posts("/new-account")
    assert seen.jws is not None
    assert seen.jws.payload_json() == {"onlyReturnExisting": True}


def test_account_operations_need_an_account() -> None:
    client, _ = client_for(ScriptedCA(), kid=None)
    with pytest.raises(ClientError, match="register first"):
        client.account()


def test_account_update_and_deactivate_payloads() -> None:
    ca = ScriptedCA()
    ca.on("/acct/1", ok({"status": "valid", "contact": ["mailto:b@example.com"]}))
    client, _ = client_for(ca)
    assert client.account().status == "valid"
    client.update_account(["mailto:b@example.com"])
    client.deactivate_account()
    payloads = [
        s.jws.payload_json() if s.jws and s.jws.payload else None for s in ca.posts("/acct/1")
    ]
    assert payloads == [None, {"contact": ["mailto:b@example.com"]}, {"status": "deactivated"}]


def test_key_change_signs_inner_with_new_key_and_swaps() -> None:
    ca = ScriptedCA()
    ca.on("/key-change", ok({"status": "valid"}))
    client, _ = client_for(ca)
    old_key = client.session.key
    new_key = ec.generate_private_key(ec.SECP384R1())
    client.key_change(new_key)
    assert client.session.key is new_key
    (seen,) = ca.posts("/key-change")
    assert seen.jws is not None and seen.jws.kid == f"{BASE}/acct/1"
    verify_jws(seen.jws, old_key.public_key())
    inner = parse_jws(seen.jws.payload)
    verify_jws(inner, new_key.public_key())
    assert inner.url == DIRECTORY["keyChange"] and inner.nonce is None
    assert inner.payload_json() == {
        "account": f"{BASE}/acct/1",
        "oldKey": jwk_from_public_key(old_key.public_key()),
    }


def test_key_change_refused_keeps_the_old_key() -> None:
    ca = ScriptedCA()
    ca.on("/key-change", problem("conflict", "key in use", 409))
    client, _ = client_for(ca)
    old_key = client.session.key
    with pytest.raises(AcmeProblemError):
        client.key_change(ec.generate_private_key(ec.SECP256R1()))
    assert client.session.key is old_key


# -- orders and polling ------------------------------------------------------


def test_new_order_payload_with_replaces_and_profile() -> None:
    ca = ScriptedCA()
    ca.on("/new-order", ok(order_doc("pending"), 201, {"Location": f"{BASE}/order/1"}))
    client, _ = client_for(ca)
    url, order = client.new_order(
        [Identifier("dns", "example.com")], replaces="aaa.bbb", profile="shortlived"
    )
    assert url == f"{BASE}/order/1" and order.status == "pending"
    (seen,) = ca.posts("/new-order")
    assert seen.jws is not None
    assert seen.jws.payload_json() == {
        "identifiers": [{"type": "dns", "value": "example.com"}],
        "replaces": "aaa.bbb",
        "profile": "shortlived",
    }


def test_polling_cadence_without_retry_after() -> None:
    ca = ScriptedCA()
    ca.on("/authz/1", *[ok(authz_doc("pending"))] * 6, ok(authz_doc("valid")))
    client, fake = client_for(ca)
    authz = client.poll_authorization(f"{BASE}/authz/1")
    assert authz.status == "valid"
    assert fake.sleeps == [0.05, 0.075, 0.1125, 0.16875, 0.253125, 0.379688]


def test_polling_backoff_is_capped_at_two_seconds() -> None:
    ca = ScriptedCA()
    ca.on("/authz/1", *[ok(authz_doc("pending"))] * 15, ok(authz_doc("invalid")))
    client, fake = client_for(ca)
    assert client.poll_authorization(f"{BASE}/authz/1").status == "invalid"
    assert max(fake.sleeps) == 2.0 and fake.sleeps[-3:] == [2.0, 2.0, 2.0]


def test_polling_honours_retry_after_capped_at_ten_seconds() -> None:
    ca = ScriptedCA()
    ca.on(
        "/order/1",
        ok(order_doc("processing"), headers={"Retry-After": "3"}),
        ok(order_doc("processing"), headers={"Retry-After": "3600"}),
        ok(order_doc("processing"), headers={"Retry-After": "0"}),
        ok(order_doc("processing")),
        ok(order_doc("valid", certificate=f"{BASE}/cert/1")),
    )
    client, fake = client_for(ca)
    order = client.poll_order(f"{BASE}/order/1")
    assert order.status == "valid"
    # 0 is raised to the first delay: a CA cannot make us spin.
    assert fake.sleeps == [3.0, 10.0, 0.05, 0.16875]


def test_polling_gives_up_at_the_timeout() -> None:
    ca = ScriptedCA()
    ca.on("/authz/1", ok(authz_doc("pending")))
    client, fake = client_for(ca)
    with pytest.raises(ClientError, match=r"authorization at .* is still pending after 5 s"):
        client.poll_authorization(f"{BASE}/authz/1", timeout=5)
    assert sum(fake.sleeps) == pytest.approx(5.0)
    assert len(ca.posts("/authz/1")) == len(fake.sleeps) + 1


def test_poll_order_stops_at_ready_or_when_told() -> None:
    ca = ScriptedCA()
    ca.on("/order/1", ok(order_doc("pending")), ok(order_doc("ready")))
    client, _ = client_for(ca)
    assert client.poll_order(f"{BASE}/order/1").status == "ready"
    # "until" may stop earlier than settled: here at the first pending look.
    ca.on("/order/2", ok(order_doc("pending")))
    assert client.poll_order(f"{BASE}/order/2", until=("pending",)).status == "pending"


def test_finalize_polls_processing_to_valid() -> None:
    ca = ScriptedCA()
    ca.on("/order/1/finalize", ok(order_doc("processing")))
    ca.on("/order/1", ok(order_doc("ready")))
    client, _ = client_for(ca)
    ready = client.get_order(f"{BASE}/order/1")
    ca.on(
        "/order/1",
        ok(order_doc("processing")),
        ok(order_doc("valid", certificate=f"{BASE}/cert/1")),
    )
    order = client.finalize(f"{BASE}/order/1", ready, b"\x30\x03csr")
    assert order.certificate == f"{BASE}/cert/1"
    (seen,) = ca.posts("/order/1/finalize")
    assert seen.jws is not None
    assert b64url_decode(seen.jws.payload_json()["csr"]) == b"\x30\x03csr"


def test_finalize_to_invalid_raises_the_orders_problem() -> None:
    ca = ScriptedCA()
    error = {"type": "urn:ietf:params:acme:error:badCSR", "detail": "key too weak", "status": 400}
    ca.on("/order/1/finalize", ok(order_doc("invalid", error=error)))
    ca.on("/order/1", ok(order_doc("ready")))
    client, _ = client_for(ca)
    with pytest.raises(AcmeProblemError, match="key too weak") as caught:
        client.finalize(f"{BASE}/order/1", client.get_order(f"{BASE}/order/1"), b"csr")
    assert caught.value.problem.type == "badCSR"


def test_challenge_and_authorization_payloads() -> None:
    ca = ScriptedCA()
    ca.on("/chall/1", ok({"type": "http-01", "url": f"{BASE}/chall/1", "status": "processing"}))
    ca.on("/authz/1", ok(authz_doc("deactivated")))
    client, _ = client_for(ca)
    assert client.answer_challenge(f"{BASE}/chall/1").status == "processing"
    assert client.deactivate_authorization(f"{BASE}/authz/1").status == "deactivated"
    assert ca.posts("/chall/1")[0].jws.payload_json() == {}  # type: ignore[union-attr]
    assert ca.posts("/authz/1")[0].jws.payload_json() == {"status": "deactivated"}  # type: ignore[union-attr]


def test_malformed_resource_is_a_client_error() -> None:
    ca = ScriptedCA()
    ca.on("/order/1", ok({"status": "valid"}))
    client, _ = client_for(ca)
    with pytest.raises(ClientError, match="malformed order"):
        client.get_order(f"{BASE}/order/1")


# -- certificates and chains ------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    serial: int = 1000,
    aki: bytes | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=90))
    )
    if aki is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(aki, None, None), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


@pytest.fixture
def two_chains() -> tuple[str, str]:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]
    leaf_key, inter_key, root_x, root_y = keys
    leaf = _cert("example.com", "Inter", leaf_key, inter_key)
    inter_by_x = _cert("Inter", "Root X", inter_key, root_x)
    inter_by_y = _cert("Inter", "Root Y", inter_key, root_y)
    return _pem(leaf, inter_by_x), _pem(leaf, inter_by_y)


def test_choose_chain_by_top_issuer_or_subject(two_chains: tuple[str, str]) -> None:
    default, alternate = two_chains
    assert choose_chain([default, alternate], "Root Y") == alternate
    assert choose_chain([default, alternate], "Root X") == default
    assert choose_chain([default, alternate], "Inter") == default  # subject CN
    assert choose_chain([default, alternate], "Nobody") == default
    assert choose_chain([default, alternate], None) == default


def test_download_follows_alternates_for_the_preferred_chain(two_chains: tuple[str, str]) -> None:
    default, alternate = two_chains
    ca = ScriptedCA()
    links = f'<{BASE}/directory>;rel="index", </cert/1/1>;rel="alternate"'
    # Junk around the PEM blocks is dropped; only certificates come back.
    ca.on(
        "/cert/1",
        httpx.Response(200, content=("junk\n" + default).encode(), headers={"Link": links}),
    )
    ca.on("/cert/1/1", httpx.Response(200, content=alternate.encode()))
    client, _ = client_for(ca)
    assert client.download_certificate(f"{BASE}/cert/1") == default
    assert client.download_certificate(f"{BASE}/cert/1", preferred_chain="Root Y") == alternate
    # The default matches: no alternate is fetched.
    before = len(ca.posts("/cert/1/1"))
    assert client.download_certificate(f"{BASE}/cert/1", preferred_chain="Root X") == default
    assert len(ca.posts("/cert/1/1")) == before
    # No match anywhere: the default.
    assert client.download_certificate(f"{BASE}/cert/1", preferred_chain="Root Z") == default
    seen = ca.posts("/cert/1")[0]
    assert seen.headers["Accept"] == "application/pem-certificate-chain"
    assert seen.jws is not None and seen.jws.is_post_as_get


def test_download_refuses_what_is_not_a_certificate() -> None:
    ca = ScriptedCA()
    ca.on("/cert/1", httpx.Response(200, content=b"<html>hello</html>"))
    client, _ = client_for(ca)
    with pytest.raises(ClientError, match="not a PEM chain"):
        client.download_certificate(f"{BASE}/cert/1")


def test_revoke_by_account_and_by_certificate_key() -> None:
    ca = ScriptedCA()
    ca.on("/revoke-cert", httpx.Response(200))
    client, _ = client_for(ca)
    cert_key = ec.generate_private_key(ec.SECP256R1())
    client.revoke(b"\x30\x01der", reason=4)
    client.revoke(b"\x30\x01der", cert_key=cert_key)
    by_account, by_key = (s.jws for s in ca.posts("/revoke-cert"))
    assert by_account is not None and by_key is not None
    assert by_account.kid == f"{BASE}/acct/1"
    assert by_account.payload_json()["reason"] == 4
    assert by_key.kid is None and by_key.jwk == jwk_from_public_key(cert_key.public_key())
    verify_jws(by_key, cert_key.public_key())
    assert b64url_decode(by_key.payload_json()["certificate"]) == b"\x30\x01der"


# -- renewal information (RFC 9773) -------------------------------------------


def rfc9773_example_cert() -> x509.Certificate:
    """RFC 9773 §4.1's example: AKI keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:
    7B:84:7B:A0:AE:2C:DE:01:C8:D4 and serial 0x87654321 (DER 00 87 65 43 21)."""
    key = ec.generate_private_key(ec.SECP256R1())
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    return _cert("example.com", "Example CA", key, key, serial=0x87654321, aki=aki)


def test_ari_cert_id_matches_rfc_9773_example() -> None:
    cert = rfc9773_example_cert()
    expected = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert ari_cert_id(cert) == expected
    assert ari_cert_id(cert.public_bytes(serialization.Encoding.DER)) == expected
    assert ari_cert_id(cert.public_bytes(serialization.Encoding.PEM).decode()) == expected


def test_ari_cert_id_serial_without_high_bit_has_no_padding() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("a", "b", key, key, serial=0x7F, aki=b"\x01\x02")
    assert ari_cert_id(cert) == "AQI.fw"


def test_ari_cert_id_needs_an_aki() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ClientError, match="Authority Key Identifier"):
        ari_cert_id(_cert("a", "b", key, key))


def test_renewal_info_window_and_retry_after() -> None:
    ca = ScriptedCA()
    ca.on(
        "/renewal-info/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
        ok(
            {
                "suggestedWindow": {"start": "2026-03-10T00:00:00Z", "end": "2026-03-12T00:00:00Z"},
                "explanationURL": "https://ca.test/why",
            },
            headers={"Retry-After": "21600"},
        ),
    )
    client, _ = client_for(ca)
    info = client.renewal_info(rfc9773_example_cert())
    assert info == RenewalInfo(
        start=datetime(2026, 3, 10, tzinfo=UTC),
        end=datetime(2026, 3, 12, tzinfo=UTC),
        explanation_url="https://ca.test/why",
        retry_after=21600.0,
    )
    (seen,) = [s for s in ca.seen if "renewal-info" in s.url]
    assert seen.method == "GET"


def test_renewal_info_with_inverted_window_is_refused() -> None:
    ca = ScriptedCA()
    ca.on(
        "/renewal-info/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
        ok({"suggestedWindow": {"start": "2026-03-12T00:00:00Z", "end": "2026-03-10T00:00:00Z"}}),
    )
    client, _ = client_for(ca)
    with pytest.raises(ClientError, match="ends before it starts"):
        client.renewal_info(rfc9773_example_cert())


def test_renewal_info_is_none_without_ari() -> None:
    directory = {k: v for k, v in DIRECTORY.items() if k != "renewalInfo"}
    client, _ = client_for(ScriptedCA(directory=directory))
    assert client.renewal_info(rfc9773_example_cert()) is None
