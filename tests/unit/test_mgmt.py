"""The management API, through Starlette's TestClient (in-process ASGI)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.hierarchy import Hierarchy, load_or_create_dev_hierarchy
from certmint.ca.mgmt import CrlPublisher, build_management_app
from certmint.ca.storage.records import CERT_REVOKED, CertificateRecord, StoredCrl
from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy

START = datetime(2026, 1, 1, tzinfo=UTC)


class FakeStatusSource:
    """In-memory stand-in for the SA's read side."""

    def __init__(self) -> None:
        self.records: dict[str, CertificateRecord] = {}
        self.crls: dict[tuple[str, int], StoredCrl] = {}
        self.crl_reads = 0
        self.fail = False

    def add(self, record: CertificateRecord) -> None:
        self.records[record.serial] = record

    def revoke(self, serial: str, when: datetime, reason: int | None) -> None:
        self.records[serial] = replace(
            self.records[serial], status=CERT_REVOKED, revoked_at=when, revocation_reason=reason
        )

    def get_certificate(self, serial: str) -> CertificateRecord | None:
        if self.fail:
            raise RuntimeError("database on fire: secret detail")
        return self.records.get(serial)

    def store_crl(self, issuer_id: str, shard: int, number: int, der: bytes) -> None:
        self.crls[(issuer_id, shard)] = StoredCrl(issuer_id, shard, number, START, START, der)

    def get_crl_number(self, issuer_id: str, shard: int) -> int | None:
        stored = self.crls.get((issuer_id, shard))
        return None if stored is None else stored.crl_number

    def get_crl(self, issuer_id: str, shard: int) -> StoredCrl | None:
        self.crl_reads += 1
        return self.crls.get((issuer_id, shard))


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(START)
        self.hierarchy: Hierarchy = load_or_create_dev_hierarchy(
            tmp_path, self.clock, SeededEntropy(3)
        )
        self.ca = CertificateAuthority(
            self.hierarchy,
            IssuanceConfig("http://127.0.0.1:15000/crl/", "http://127.0.0.1:15000/aia/"),
            self.clock,
            SeededEntropy(4),
        )
        self.source = FakeStatusSource()
        self.app = build_management_app(
            self.ca,
            self.hierarchy,
            self.source,
            self.clock,
            crl_publisher=CrlPublisher(self.source, self.ca.issuer_ids, shards=16),
        )
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def issue(self, name: str) -> CertificateRecord:
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        issued = self.ca.issue(public_key=key, dns_names=[name])
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        record = CertificateRecord(
            serial=issued.serial,
            account_id="acct",
            order_id="order",
            issuer_id=issued.issuer_id,
            der=issued.der,
            names=(name,),
            not_before=issued.not_before,
            not_after=issued.not_after,
            key_spki_sha256=hashlib.sha256(spki).hexdigest(),
            issued_at=self.clock.now(),
        )
        self.source.add(record)
        return record


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    environment = Env(tmp_path)
    with environment.client:
        yield environment


def test_health(env: Env) -> None:
    response = env.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_roots(env: Env) -> None:
    for n, root in enumerate(env.hierarchy.roots):
        response = env.client.get(f"/roots/{n}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/pem-certificate-chain")
        assert x509.load_pem_x509_certificates(response.content) == [root]
    for bad in ("2", "-1", "x", "0x0", "9" * 5000):
        response = env.client.get(f"/roots/{bad}")
        assert response.status_code == 404, bad
        assert response.headers["content-type"] == "application/problem+json"


def test_intermediates(env: Env) -> None:
    response = env.client.get("/intermediates/0")
    assert response.status_code == 200
    assert x509.load_pem_x509_certificates(response.content) == [env.hierarchy.issuers[0].cert]
    assert env.client.get("/intermediates/1").status_code == 404


def test_aia(env: Env) -> None:
    response = env.client.get("/aia/e1.der")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(response.content) == env.hierarchy.issuers[0].cert
    # The URL the CA puts in every leaf is the one this route serves.
    leaf = x509.load_der_x509_certificate(env.issue("a.example").der)
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value.endswith("/aia/e1.der")
    for bad in ("/aia/e2.der", "/aia/..%2fca%2froot-x1.key.der", "/aia/e1.pem"):
        assert env.client.get(bad).status_code == 404, bad


def test_crl_is_served_from_storage_and_cached_by_number(env: Env) -> None:
    # The CRL updater stores CRLs (ca/crl_updater.py); the app serves them.
    env.source.store_crl("e1", 3, 1, b"crl-3-v1")
    response = env.client.get("/crl/e1/3.crl")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pkix-crl"
    assert response.content == b"crl-3-v1"
    assert env.source.crl_reads == 1
    # Same number: served from this process's cache, the DER is not read again.
    assert env.client.get("/crl/e1/3.crl").content == b"crl-3-v1"
    assert env.source.crl_reads == 1
    # A newer CRL is served as soon as it is stored.
    env.source.store_crl("e1", 3, 2, b"crl-3-v2")
    assert env.client.get("/crl/e1/3.crl").content == b"crl-3-v2"
    assert env.source.crl_reads == 2


def test_the_pre_sharding_url_serves_the_complete_crl(env: Env) -> None:
    env.source.store_crl("e1", 0, 7, b"complete")
    env.source.store_crl("e1", 1, 7, b"shard-1")
    assert env.client.get("/crl/e1.crl").content == b"complete"
    assert env.client.get("/crl/e1/1.crl").content == b"shard-1"


def test_a_crl_not_built_yet_is_503_with_retry_after(env: Env) -> None:
    for path in ("/crl/e1.crl", "/crl/e1/1.crl", "/crl/e1/16.crl"):
        response = env.client.get(path)
        assert response.status_code == 503, path
        assert response.headers["Retry-After"] == "1"
        assert response.headers["content-type"] == "application/problem+json"


def test_a_shard_above_the_configured_count_is_served_only_if_stored(env: Env) -> None:
    # An operator who lowered --crl-shards still serves the shards that
    # unexpired certificates name.
    assert env.client.get("/crl/e1/17.crl").status_code == 404
    env.source.store_crl("e1", 17, 1, b"old shard")
    assert env.client.get("/crl/e1/17.crl").content == b"old shard"


def test_crl_unknown_issuer_or_shard(env: Env) -> None:
    for bad in (
        "/crl/e2.crl",
        "/crl/e1.der",
        "/crl/",
        "/crl/e2/1.crl",
        "/crl/e1/0.crl",
        "/crl/e1/01.crl",
        "/crl/e1/-1.crl",
        "/crl/e1/x.crl",
        "/crl/e1/99999.crl",
        "/crl/e1/1.der",
    ):
        response = env.client.get(bad)
        assert response.status_code == 404, bad
        assert response.json()["status"] == 404


def test_without_a_publisher_there_are_no_crls(env: Env) -> None:
    app = build_management_app(env.ca, env.hierarchy, env.source, env.clock)
    env.source.store_crl("e1", 1, 1, b"shard-1")
    with TestClient(app) as client:
        assert client.get("/crl/e1/1.crl").status_code == 404


def test_cert_status_valid_and_revoked(env: Env) -> None:
    record = env.issue("a.example")
    response = env.client.get(f"/cert-status-by-serial/{record.serial}")
    assert response.status_code == 200
    body = response.json()
    assert body["Status"] == "Valid"
    assert body["Serial"] == record.serial
    assert body["Reason"] is None and body["RevokedAt"] is None
    assert (
        x509.load_pem_x509_certificate(body["Certificate"].encode()).public_bytes(
            serialization.Encoding.DER
        )
        == record.der
    )

    # Upper case and without the leading zero padding find the same record.
    short = format(int(record.serial, 16), "X")
    assert env.client.get(f"/cert-status-by-serial/{short}").json()["Serial"] == record.serial

    revoked_at = START + timedelta(hours=2, microseconds=5)
    env.source.revoke(record.serial, revoked_at, 1)
    body = env.client.get(f"/cert-status-by-serial/{record.serial}").json()
    assert body["Status"] == "Revoked"
    assert body["Reason"] == 1
    assert body["RevokedAt"] == "2026-01-01T02:00:00Z"


def test_cert_status_unknown_and_malformed(env: Env) -> None:
    for bad in ("00", "ab" * 18, "zz", "1" * 41, "%00", "-1"):
        response = env.client.get(f"/cert-status-by-serial/{bad}")
        assert response.status_code == 404, bad
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 404


def test_unknown_paths_and_methods_are_json(env: Env) -> None:
    response = env.client.get("/nope")
    assert response.status_code == 404
    assert response.json()["status"] == 404
    response = env.client.post("/health")
    assert response.status_code == 405
    assert response.json()["status"] == 405
    assert "GET" in response.headers["allow"]


def test_internal_errors_never_leak(env: Env) -> None:
    record = env.issue("a.example")
    env.source.fail = True
    response = env.client.get(f"/cert-status-by-serial/{record.serial}")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret" not in response.text
    assert "Traceback" not in response.text
