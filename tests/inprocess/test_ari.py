"""ACME Renewal Information (RFC 9773) in-process: the renewalInfo resource,
operator windows through the management API, and newOrder's ``replaces``
through finalize to the replaced certificate's ``ReplacedBy``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from acme.client import _renewal_info_path_component
from cryptography import x509

from certmint.ca.ari import RETRY_AFTER_SECONDS, cert_id_of, encode_cert_id
from certmint.protocol.b64 import b64url_encode
from certmint.protocol.messages import parse_rfc3339
from certmint.testing.acme_client import RawAcmeClient, make_csr

from .conftest import BASE_URL, START, CAEnv, issue, problem_type
from .flows import certificate_count, serial_of, validate_order

pytestmark = pytest.mark.anyio
DAY = timedelta(days=1)


async def _leaf(client: RawAcmeClient, order: dict[str, Any]) -> x509.Certificate:
    response = await client.get(order["certificate"])
    assert response.status_code == 200, response.text
    return x509.load_pem_x509_certificates(response.content)[0]


async def _issued(
    env: CAEnv, client: RawAcmeClient, names: list[str]
) -> tuple[dict[str, Any], x509.Certificate, str]:
    order = await issue(env, client, names)
    leaf = await _leaf(client, order)
    return order, leaf, cert_id_of(leaf)


async def _renewal_info(env: CAEnv, cert_id: str) -> httpx.Response:
    directory = (await env.http.get("/directory")).json()
    return await env.http.get(f"{directory['renewalInfo']}/{cert_id}")


def _mgmt(env: CAEnv) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.server.management_app), base_url="http://mgmt.test"
    )


async def _status(env: CAEnv, serial: str) -> dict[str, Any]:
    async with _mgmt(env) as mgmt:
        response = await mgmt.get(f"/cert-status-by-serial/{serial}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _window(response: httpx.Response) -> tuple[datetime, datetime]:
    window = response.json()["suggestedWindow"]
    return parse_rfc3339(window["start"]), parse_rfc3339(window["end"])


def _order_id(order: dict[str, Any]) -> str:
    return str(order["url"]).rsplit("/", 1)[1]


# --- the renewalInfo resource (§4) -------------------------------------------


async def test_directory_names_renewal_info(env: CAEnv) -> None:
    body = (await env.http.get("/directory")).json()
    assert body["renewalInfo"] == f"{BASE_URL}/acme/renewal-info"


async def test_renewal_info_default_window_is_a_third_before_expiry(env: CAEnv) -> None:
    client = await env.client()
    _, leaf, cert_id = await _issued(env, client, ["ari.example.com"])
    # Our certificate id agrees with certbot's own (acme library) encoding.
    assert cert_id == _renewal_info_path_component(leaf)

    response = await _renewal_info(env, cert_id)  # plain GET, no JWS (§4.1)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    start, end = _window(response)
    lifetime = leaf.not_valid_after_utc + timedelta(seconds=1) - leaf.not_valid_before_utc
    ideal = leaf.not_valid_after_utc - lifetime / 3
    assert start < ideal < end
    assert abs((end - start) - lifetime / 50) <= timedelta(seconds=2)
    assert leaf.not_valid_before_utc < start and end < leaf.not_valid_after_utc


async def test_renewal_info_refuses_malformed_and_unknown_ids(env: CAEnv) -> None:
    client = await env.client()
    _, leaf, cert_id = await _issued(env, client, ["ids.example.com"])
    aki, _ = cert_id.split(".")
    other_serial = encode_cert_id(b"\x00", leaf.serial_number).split(".")[1]
    no_high_zero = b64url_encode((0x87654321).to_bytes(4, "big"))  # §4.1: needs 00 first
    not_minimal = b64url_encode(bytes([0, 1]))
    zero_aki = b64url_encode(bytes([0]))
    cases = {
        "nodot": 400,
        f"{cert_id}.extra": 400,
        f"{aki}=.{cert_id.split('.')[1]}": 400,  # padding is not allowed
        f"{aki}.{no_high_zero}": 400,  # a negative INTEGER
        f"{aki}.{not_minimal}": 400,  # not minimal DER
        f"{aki}.{b64url_encode((12345).to_bytes(2, 'big'))}": 404,  # no such serial
        f"{b64url_encode(b'someone-else')}.{cert_id.split('.')[1]}": 404,  # not our AKI
        f"{zero_aki}.{other_serial}": 404,
    }
    for path, status in cases.items():
        response = await _renewal_info(env, path)
        assert response.status_code == status, (path, response.text)
        assert problem_type(response) == "malformed", path


async def test_renewal_info_takes_only_get(env: CAEnv) -> None:
    client = await env.client()
    _, _, cert_id = await _issued(env, client, ["get.example.com"])
    response = await env.http.post(f"/acme/renewal-info/{cert_id}")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert (await env.http.head(f"/acme/renewal-info/{cert_id}")).status_code == 200


async def test_revoked_certificate_gets_a_window_in_the_past(env: CAEnv) -> None:
    client = await env.client()
    _, leaf, cert_id = await _issued(env, client, ["revoked.example.com"])
    from cryptography.hazmat.primitives.serialization import Encoding

    der = leaf.public_bytes(Encoding.DER)
    revoked = await client.post(client.dir["revokeCert"], {"certificate": b64url_encode(der)})
    assert revoked.status_code == 200, revoked.text
    start, end = _window(await _renewal_info(env, cert_id))
    assert start < end < env.clock.now()


# --- operator windows (management API) ----------------------------------------


async def test_operator_window_overrides_default_and_can_be_cleared(env: CAEnv) -> None:
    client = await env.client()
    order, _, cert_id = await _issued(env, client, ["override.example.com"])
    serial = serial_of(order)
    default = _window(await _renewal_info(env, cert_id))
    wanted = {"start": "2026-11-02T00:00:00Z", "end": "2026-11-02T06:00:00Z"}
    async with _mgmt(env) as mgmt:
        response = await mgmt.post(f"/renewal-info/{serial}", json=wanted)
        assert response.status_code == 200, response.text
        assert response.json()["RenewalWindow"] == {**wanted, "source": "operator"}
    assert (await _renewal_info(env, cert_id)).json()["suggestedWindow"] == wanted
    # Durable: a freshly opened SA reads the same window.
    record = env.server.sa.get_certificate(serial)
    assert record is not None and record.ari_window_start == parse_rfc3339(wanted["start"])
    async with _mgmt(env) as mgmt:
        assert (await mgmt.delete(f"/renewal-info/{serial}")).status_code == 200
    assert _window(await _renewal_info(env, cert_id)) == default
    assert (await _status(env, serial))["RenewalWindow"]["source"] == "default"


async def test_operator_window_refuses_bad_requests(env: CAEnv) -> None:
    client = await env.client()
    order, _, _ = await _issued(env, client, ["badwindow.example.com"])
    serial = serial_of(order)
    async with _mgmt(env) as mgmt:
        bad_bodies: list[bytes] = [
            b"not json",
            b"[]",
            b'{"start": "2026-11-02T00:00:00Z"}',
            b'{"start": "2026-11-02T06:00:00Z", "end": "2026-11-02T00:00:00Z"}',
            b'{"start": "yesterday", "end": "2026-11-02T00:00:00Z"}',
            b'{"start": "2026-11-02T00:00:00Z", "end": "2026-11-03T00:00:00Z", "x": 1}',
        ]
        for body in bad_bodies:
            response = await mgmt.post(f"/renewal-info/{serial}", content=body)
            assert response.status_code == 400, body
        huge = b'{"start": "' + b"2" * 5000 + b'"}'
        assert (await mgmt.post(f"/renewal-info/{serial}", content=huge)).status_code == 413
        ok = {"start": "2026-11-02T00:00:00Z", "end": "2026-11-03T00:00:00Z"}
        assert (await mgmt.post("/renewal-info/abcdef", json=ok)).status_code == 404
        assert (await mgmt.post("/renewal-info/not-hex", json=ok)).status_code == 404
        assert (await mgmt.get(f"/renewal-info/{serial}")).status_code == 405
    assert (await _status(env, serial))["RenewalWindow"]["source"] == "default"


# --- replaces (§5) -------------------------------------------------------------


async def test_renewal_with_replaces_marks_the_old_certificate(env: CAEnv) -> None:
    client = await env.client()
    old_order, _, cert_id = await _issued(env, client, ["renew.example.com"])
    old_serial = serial_of(old_order)
    status = await _status(env, old_serial)
    assert status["ReplacedBy"] is None and status["RenewalWindow"]["source"] == "default"

    env.clock.advance((60 * DAY).total_seconds())
    order, order_url = await validate_order(env, client, ["renew.example.com"], replaces=cert_id)
    assert order["replaces"] == cert_id
    csr, _ = make_csr(["renew.example.com"])
    final = await client.finalize(order, csr)
    assert final.status_code == 200, final.text
    assert final.json()["replaces"] == cert_id and final.json()["status"] == "valid"
    new_id = order_url.rsplit("/", 1)[1]
    assert (await _status(env, old_serial))["ReplacedBy"] == new_id
    assert (await _status(env, serial_of(final.json())))["ReplacedBy"] is None

    again = await client.new_order(["renew.example.com"], replaces=cert_id)
    assert again.status_code == 409, again.text
    assert problem_type(again) == "alreadyReplaced"


async def test_replaces_must_name_our_certificate_of_this_account(env: CAEnv) -> None:
    owner, stranger = await env.client(), await env.client()
    _, leaf, cert_id = await _issued(env, owner, ["mine.example.com", "www.mine.example.com"])
    aki = cert_id.split(".")[0]
    unknown = f"{aki}.{b64url_encode((4242).to_bytes(2, 'big'))}"
    cases: list[tuple[RawAcmeClient, list[str], Any, int, str]] = [
        (stranger, ["mine.example.com"], cert_id, 403, "unauthorized"),
        (owner, ["other.example.com"], cert_id, 400, "malformed"),  # no shared name
        (owner, ["mine.example.com"], "garbage", 400, "malformed"),
        (owner, ["mine.example.com"], 7, 400, "malformed"),
        (owner, ["mine.example.com"], unknown, 400, "malformed"),
        (owner, ["mine.example.com"], f"{b64url_encode(b'x')}.{cert_id.split('.')[1]}", 400,
         "malformed"),
    ]  # fmt: skip
    for client, names, replaces, status, ptype in cases:
        response = await client.new_order(names, replaces=replaces)
        assert response.status_code == status, (replaces, response.text)
        assert problem_type(response) == ptype
    # Sharing one identifier is enough (§5: correspondence beyond that is policy).
    response = await owner.new_order(["www.mine.example.com", "new.example.com"], replaces=cert_id)
    assert response.status_code == 201, response.text
    assert response.json()["replaces"] == cert_id
    assert cert_id == _renewal_info_path_component(leaf)


async def test_replaces_skips_order_reuse(env: CAEnv) -> None:
    """A plain repeated newOrder reuses the pending order; one that says it
    replaces a certificate must get its own order carrying ``replaces``."""
    client = await env.client()
    _, _, cert_id = await _issued(env, client, ["reuse.example.com"])
    plain = await client.new_order(["reuse.example.com"])
    replacing = await client.new_order(["reuse.example.com"], replaces=cert_id)
    assert replacing.status_code == 201
    assert replacing.headers["Location"] != plain.headers["Location"]
    assert "replaces" not in plain.json()


async def test_second_replacing_order_is_refused_at_finalize(env: CAEnv) -> None:
    client = await env.client()
    old_order, _, cert_id = await _issued(env, client, ["twice.example.com"])
    first, _ = await validate_order(env, client, ["twice.example.com"], replaces=cert_id)
    second, second_url = await validate_order(
        env, client, ["twice.example.com"], replaces=cert_id
    )
    csr, _ = make_csr(["twice.example.com"])
    assert (await client.finalize(first, csr)).status_code == 200
    before = certificate_count(env)
    refused = await client.finalize(second, csr)
    assert refused.status_code == 409 and problem_type(refused) == "alreadyReplaced"
    assert certificate_count(env) == before  # nothing signed
    assert (await client.get(second_url)).json()["status"] == "ready"
    assert (await _status(env, serial_of(old_order)))["ReplacedBy"] is not None


async def test_lost_replacement_race_fails_the_order_and_issues_nothing(
    env: CAEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another order replaces the certificate between the RA's check and the
    SA's transaction: the SA refuses, nothing is written, the order fails."""
    client = await env.client()
    old_order, _, cert_id = await _issued(env, client, ["race.example.com"])
    old_serial = serial_of(old_order)
    order, order_url = await validate_order(env, client, ["race.example.com"], replaces=cert_id)
    renewals = env.server.ra.renewals
    original = renewals.check_not_replaced

    def check_then_lose(replaces: str, order_id: str) -> str:
        serial = original(replaces, order_id)
        # The rival wins right after the check (as a concurrent worker would).
        with env.server.sa.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE certificates SET replaced_by_order = 'rival' WHERE serial = ?",
                (old_serial,),
            )
        return serial

    monkeypatch.setattr(renewals, "check_not_replaced", check_then_lose)
    before = certificate_count(env)
    csr, _ = make_csr(["race.example.com"])
    refused = await client.finalize(order, csr)
    assert refused.status_code == 409 and problem_type(refused) == "alreadyReplaced"
    assert certificate_count(env) == before
    failed = (await client.get(order_url)).json()
    assert failed["status"] == "invalid"
    assert failed["error"]["type"].endswith(":alreadyReplaced")
    assert (await _status(env, old_serial))["ReplacedBy"] == "rival"


async def test_certificate_status_shows_the_default_window(env: CAEnv) -> None:
    client = await env.client()
    order, leaf, _ = await _issued(env, client, ["status.example.com"])
    serial = serial_of(order)
    window = (await _status(env, serial))["RenewalWindow"]
    assert window["source"] == "default"
    assert parse_rfc3339(window["start"]) > START + 50 * DAY
    assert parse_rfc3339(window["end"]) < leaf.not_valid_after_utc.astimezone(UTC)
