"""Identifiers end to end through the WFE, RA and PA (RFC 8555 §7.1.3, §7.4;
RFC 8738): ip orders and IP certificates, special-purpose ranges, public
suffixes, blocklists, IDNs and the per-order name limit."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.protocol.csr import split_pem_chain
from certmint.testing.acme_client import RawAcmeClient

from .conftest import TEST_POLICY, CAEnv, problem_type

pytestmark = pytest.mark.anyio

PUBLIC_V4 = "8.8.8.8"
PUBLIC_V6 = "2606:4700:4700::1111"
# The only profile that allows ip identifiers (as at Let's Encrypt).
SHORTLIVED = "shortlived"


def ident(id_type: str, value: str) -> dict[str, str]:
    return {"type": id_type, "value": value}


async def new_order(
    client: RawAcmeClient, *idents: dict[str, str], profile: str | None = None
) -> httpx.Response:
    payload: dict[str, Any] = {"identifiers": list(idents)}
    if profile is not None:
        payload["profile"] = profile
    return await client.post(client.dir["newOrder"], payload)


def csr_for(dns_names: list[str], ips: list[str], *, common_name: str | None = None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


async def ready_order(
    env: CAEnv, client: RawAcmeClient, *idents: dict[str, str], profile: str | None = None
) -> dict[str, Any]:
    response = await new_order(client, *idents, profile=profile)
    assert response.status_code == 201, response.text
    order_url = response.headers["Location"]
    for authz_url in response.json()["authorizations"]:
        authz = (await client.get(authz_url)).json()
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        assert (await client.post(challenge["url"], {})).status_code == 200
    await env.drain()
    order: dict[str, Any] = (await client.get(order_url)).json()
    assert order["status"] == "ready", order
    return order


def refused_subproblems(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 400, response.text
    assert problem_type(response) == "rejectedIdentifier", response.text
    subs: list[dict[str, Any]] = response.json()["subproblems"]
    for sub in subs:
        assert sub["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
    return subs


# -- ip identifiers (RFC 8738) -----------------------------------------------------


async def test_ip_order_offers_only_http01_and_tlsalpn01(env: CAEnv) -> None:
    client = await env.client()
    response = await new_order(
        client, ident("ip", PUBLIC_V4), ident("ip", PUBLIC_V6), profile=SHORTLIVED
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert sorted(i["value"] for i in body["identifiers"]) == sorted([PUBLIC_V4, PUBLIC_V6])
    for authz_url in body["authorizations"]:
        authz = (await client.get(authz_url)).json()
        assert authz["identifier"]["type"] == "ip"
        assert "wildcard" not in authz or authz["wildcard"] is False
        assert sorted(c["type"] for c in authz["challenges"]) == ["http-01", "tls-alpn-01"]


async def test_ip_certificate_has_ip_san(env: CAEnv) -> None:
    client = await env.client()
    order = await ready_order(
        env,
        client,
        ident("dns", "www.example.com"),
        ident("ip", PUBLIC_V4),
        ident("ip", PUBLIC_V6),
        profile=SHORTLIVED,
    )
    csr = csr_for(["www.example.com"], [PUBLIC_V4, PUBLIC_V6])
    response = await client.finalize(order, csr)
    assert response.status_code == 200, response.text
    pem = (await client.get(response.json()["certificate"])).text
    leaf = x509.load_der_x509_certificate(split_pem_chain(pem)[0])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.com"]
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {PUBLIC_V4, PUBLIC_V6}
    # The VA was asked about the ip identifiers as ip identifiers.
    asked = {(r.identifier_type, r.identifier_value) for r in env.va.requests}
    assert ("ip", PUBLIC_V4) in asked and ("ip", PUBLIC_V6) in asked


async def test_ip_only_certificate_with_ip_common_name(env: CAEnv) -> None:
    client = await env.client()
    order = await ready_order(env, client, ident("ip", PUBLIC_V4), profile=SHORTLIVED)
    response = await client.finalize(order, csr_for([], [PUBLIC_V4], common_name=PUBLIC_V4))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("dns_names", "ips", "complaint"),
    [
        ([PUBLIC_V4], [], "missing 8.8.8.8"),  # an IP as a dNSName does not count
        ([], ["8.8.4.4"], "not in the order: 8.8.4.4"),
        ([], [PUBLIC_V4, "8.8.4.4"], "not in the order: 8.8.4.4"),
    ],
)
async def test_csr_must_carry_exactly_the_orders_ips(
    env: CAEnv, dns_names: list[str], ips: list[str], complaint: str
) -> None:
    client = await env.client()
    order = await ready_order(env, client, ident("ip", PUBLIC_V4), profile=SHORTLIVED)
    response = await client.finalize(order, csr_for(dns_names, ips))
    assert response.status_code == 400, response.text
    assert problem_type(response) == "badCSR"
    assert complaint in response.json()["detail"]


@pytest.mark.parametrize(
    ("value", "detail_part"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "RFC 1918"),
        ("192.168.0.10", "RFC 1918"),
        ("100.64.1.1", "CGNAT"),
        ("169.254.0.1", "link-local"),
        ("192.0.2.1", "documentation"),
        ("2001:db8::1", "documentation"),
        ("fd12::1", "unique-local"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("240.1.1.1", "class E"),
        ("::ffff:808:808", "IPv4-mapped"),
        ("2606:4700:4700:0::1111", "canonical form"),
    ],
)
async def test_special_purpose_ips_refused(env: CAEnv, value: str, detail_part: str) -> None:
    client = await env.client()
    subs = refused_subproblems(await new_order(client, ident("ip", value), profile=SHORTLIVED))
    assert len(subs) == 1
    assert subs[0]["identifier"] == {"type": "ip", "value": value}
    assert detail_part in subs[0]["detail"], subs[0]["detail"]


async def test_several_refusals_each_have_a_subproblem(env: CAEnv) -> None:
    client = await env.client()
    response = await new_order(
        client,
        ident("ip", "10.0.0.1"),
        ident("dns", "co.uk"),
        ident("dns", "fine.example.com"),
        ident("ip", "127.0.0.1"),
        profile=SHORTLIVED,
    )
    subs = refused_subproblems(response)
    assert sorted(s["identifier"]["value"] for s in subs) == ["10.0.0.1", "127.0.0.1", "co.uk"]


async def test_private_ips_allowed_by_operator(env_factory: Any) -> None:
    env: CAEnv = await env_factory(policy=replace(TEST_POLICY, allow_private_ip_identifiers=True))
    client = await env.client()
    order = await ready_order(env, client, ident("ip", "127.0.0.1"), profile=SHORTLIVED)
    response = await client.finalize(order, csr_for([], ["127.0.0.1"]))
    assert response.status_code == 200, response.text


# -- dns identifiers: public suffixes, blocklists, IDNs ---------------------------


@pytest.mark.parametrize("value", ["co.uk", "*.co.uk", "com.au", "k12.ak.us"])
async def test_public_suffixes_refused(env: CAEnv, value: str) -> None:
    client = await env.client()
    subs = refused_subproblems(await client.new_order([value]))
    assert subs[0]["identifier"] == {"type": "dns", "value": value}


async def test_wildcard_public_suffix_detail(env: CAEnv) -> None:
    client = await env.client()
    subs = refused_subproblems(await client.new_order(["*.co.uk"]))
    assert "wildcard over a public suffix" in subs[0]["detail"]
    assert (await client.new_order(["*.example.co.uk"])).status_code == 201


async def test_unlisted_tld_refused_by_default(env_factory: Any) -> None:
    env: CAEnv = await env_factory(policy=replace(TEST_POLICY, allow_unlisted_tlds=False))
    client = await env.client()
    subs = refused_subproblems(await client.new_order(["www.example.test"]))
    assert "not on the Public Suffix List" in subs[0]["detail"]
    assert (await client.new_order(["www.example.com"])).status_code == 201


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("exact.example.com", True),
        ("*.exact.example.com", True),
        ("sub.exact.example.com", False),
        ("blocked.example.org", True),
        ("deep.sub.blocked.example.org", True),
        ("*.blocked.example.org", True),
        ("unblocked.example.org", False),
    ],
)
async def test_blocklists(env_factory: Any, value: str, refused: bool) -> None:
    env: CAEnv = await env_factory(
        policy=replace(
            TEST_POLICY,
            blocked_names=frozenset({"exact.example.com"}),
            blocked_suffixes=frozenset({"blocked.example.org"}),
        )
    )
    client = await env.client()
    response = await client.new_order([value])
    if refused:
        subs = refused_subproblems(response)
        assert subs[0]["identifier"] == {"type": "dns", "value": value}
        assert "forbids" in subs[0]["detail"]
    else:
        assert response.status_code == 201, response.text


async def test_idn_u_label_becomes_punycode(env: CAEnv) -> None:
    client = await env.client()
    response = await client.new_order(["Bücher.example.com"])
    assert response.status_code == 201, response.text
    assert response.json()["identifiers"] == [ident("dns", "xn--bcher-kva.example.com")]
    authz = (await client.get(response.json()["authorizations"][0])).json()
    assert authz["identifier"] == ident("dns", "xn--bcher-kva.example.com")


async def test_invalid_idn_refused(env: CAEnv) -> None:
    client = await env.client()
    subs = refused_subproblems(await client.new_order(["xn--zz.example.com"]))
    assert "A-label" in subs[0]["detail"]


async def test_too_many_names(env_factory: Any) -> None:
    env: CAEnv = await env_factory(policy=replace(TEST_POLICY, max_names_per_order=3))
    client = await env.client()
    names = [ident("dns", f"n{i}.example.com") for i in range(3)]
    response = await new_order(client, *names, ident("ip", PUBLIC_V4), profile=SHORTLIVED)
    assert response.status_code == 400, response.text
    assert problem_type(response) == "rejectedIdentifier"
    assert "at most 3" in response.json()["detail"]
    assert (await new_order(client, *names)).status_code == 201
