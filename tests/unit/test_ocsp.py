"""The optional OCSP responder (RFC 6960): answers, responder certificates, HTTP.

Requests are built with cryptography's ``OCSPRequestBuilder`` (and, where
it cannot build one, with ``openssl ocsp -reqout``); responses are parsed
and their signatures checked the way a relying party would.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from starlette.testclient import TestClient

from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.hierarchy import Hierarchy, load_or_create_dev_hierarchy
from certmint.ca.issuance.profile import DV_POLICY_OID
from certmint.ca.issuance.signing import LintError, sign_certificate
from certmint.ca.mgmt import build_management_app
from certmint.ca.ocsp import (
    MAX_REQUEST_BYTES,
    NONCE_MAX_OCTETS,
    RESPONDER_RENEW_BEFORE,
    RESPONDER_VALIDITY,
    RESPONSE_VALIDITY,
    OcspResponder,
    decode_get_request,
    lint_responder_certificate,
    responder_certificate_builder,
)
from certmint.ca.storage.records import CERT_REVOKED, CertificateRecord, RevokedEntry
from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy

START = datetime(2026, 1, 1, tzinfo=UTC)
MGMT = "http://ca.example.org"
OCSP_URL = f"{MGMT}/ocsp"
DER = serialization.Encoding.DER


class FakeCertificates:
    """The SA's certificate read, in memory (the responder's one dependency)."""

    def __init__(self) -> None:
        self.records: dict[str, CertificateRecord] = {}
        self.fail = False

    def get_certificate(self, serial: str) -> CertificateRecord | None:
        if self.fail:
            raise RuntimeError("database on fire: secret detail")
        return self.records.get(serial)

    def list_revoked(self, issuer_id: str, now: datetime) -> list[RevokedEntry]:
        return []

    def revoke(self, serial: str, when: datetime, reason: int | None) -> None:
        self.records[serial] = replace(
            self.records[serial], status=CERT_REVOKED, revoked_at=when, revocation_reason=reason
        )


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(START)
        self.hierarchy: Hierarchy = load_or_create_dev_hierarchy(
            tmp_path, self.clock, SeededEntropy(3)
        )
        self.issuer = self.hierarchy.issuers[0]
        self.ca = CertificateAuthority(
            self.hierarchy,
            IssuanceConfig(f"{MGMT}/crl/", f"{MGMT}/aia/", ocsp_url=OCSP_URL),
            self.clock,
            SeededEntropy(4),
        )
        self.store = FakeCertificates()
        self.responder = OcspResponder(
            self.hierarchy.issuers, self.store, self.clock, SeededEntropy(5)
        )

    def issue(self, name: str = "ocsp.example.com") -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        issued = self.ca.issue(public_key=key, dns_names=[name])
        spki = key.public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.store.records[issued.serial] = CertificateRecord(
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
        return x509.load_der_x509_certificate(issued.der)

    def request(
        self,
        cert: x509.Certificate,
        *,
        algorithm: hashes.HashAlgorithm | None = None,
        nonce: bytes | None = None,
    ) -> bytes:
        builder = ocsp.OCSPRequestBuilder().add_certificate(
            cert, self.issuer.cert, algorithm or hashes.SHA1()
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        return builder.build().public_bytes(DER)

    def answer(self, request_der: bytes) -> ocsp.OCSPResponse:
        return ocsp.load_der_ocsp_response(self.responder.respond(request_der).der)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def _serial_hex(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:036x}"


def _assert_signed_by_delegated_responder(env: Env, response: ocsp.OCSPResponse) -> None:
    """What a relying party checks (RFC 6960 §4.2.2.2, §3.2)."""
    (responder,) = response.certificates
    responder.verify_directly_issued_by(env.issuer.cert)
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    key = responder.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert response.signature_hash_algorithm is not None
    key.verify(
        response.signature,
        response.tbs_response_bytes,
        ec.ECDSA(response.signature_hash_algorithm),
    )
    assert response.responder_key_hash == (x509.SubjectKeyIdentifier.from_public_key(key).digest)


# -- answers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm", [hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()]
)
def test_good_for_an_issued_certificate_with_any_cert_id_hash(
    env: Env, algorithm: hashes.HashAlgorithm
) -> None:
    cert = env.issue()
    response = env.answer(env.request(cert, algorithm=algorithm))
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == cert.serial_number
    assert isinstance(response.hash_algorithm, type(algorithm))
    # thisUpdate is the injected clock's now; nextUpdate four days on (BR 4.9.10).
    assert response.this_update_utc == START
    assert response.next_update_utc == START + RESPONSE_VALIDITY
    assert response.revocation_time_utc is None
    _assert_signed_by_delegated_responder(env, response)


def test_nonce_is_echoed(env: Env) -> None:
    cert = env.issue()
    for size in (1, 16, 32, NONCE_MAX_OCTETS):
        nonce = bytes((7 * i + 1) % 256 for i in range(size))
        response = env.answer(env.request(cert, nonce=nonce))
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value
        assert echoed.nonce == nonce


def test_no_nonce_without_a_request_nonce(env: Env) -> None:
    response = env.answer(env.request(env.issue()))
    assert len(response.extensions) == 0


@pytest.mark.parametrize(("reason", "flag"), [(1, x509.ReasonFlags.key_compromise),
                                              (4, x509.ReasonFlags.superseded),
                                              (5, x509.ReasonFlags.cessation_of_operation),
                                              (0, None), (None, None)])  # fmt: skip
def test_revoked_with_time_and_reason(
    env: Env, reason: int | None, flag: x509.ReasonFlags | None
) -> None:
    cert = env.issue()
    revoked_at = START + timedelta(hours=2, microseconds=123)
    env.store.revoke(_serial_hex(cert), revoked_at, reason)
    env.clock.advance(timedelta(hours=3).total_seconds())
    response = env.answer(env.request(cert))
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    # Whole seconds, as on the CRL; unspecified(0) is left out, as on the CRL.
    assert response.revocation_time_utc == revoked_at.replace(microsecond=0)
    assert response.revocation_reason == flag
    assert response.this_update_utc == START + timedelta(hours=3)


def test_unknown_for_a_serial_never_issued(env: Env) -> None:
    cert = env.issue()
    del env.store.records[_serial_hex(cert)]
    response = env.answer(env.request(cert))
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    _assert_signed_by_delegated_responder(env, response)


def test_unknown_when_another_issuer_issued_the_serial(env: Env) -> None:
    cert = env.issue()
    serial = _serial_hex(cert)
    env.store.records[serial] = replace(env.store.records[serial], issuer_id="r9")
    response = env.answer(env.request(cert))
    assert response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


@pytest.mark.parametrize("serial", [0, 2**144, 2**159])
def test_unknown_for_serials_that_cannot_be_ours(env: Env, serial: int) -> None:
    name_hash, key_hash = _hashes(env.issuer.cert, hashes.SHA1())
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())
        .build()
    )
    response = env.answer(request.public_bytes(DER))
    assert response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    assert response.serial_number == serial


def _hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    key = issuer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    name = hashes.Hash(algorithm)
    name.update(issuer.subject.public_bytes())
    bits = hashes.Hash(algorithm)
    bits.update(
        key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return name.finalize(), bits.finalize()


def test_unauthorized_for_an_issuer_we_do_not_serve(env: Env, tmp_path: Path) -> None:
    other = load_or_create_dev_hierarchy(tmp_path / "other", env.clock, SeededEntropy(9))
    foreign = other.issuers[0].cert  # same names as ours, another key
    builder = ocsp.OCSPRequestBuilder().add_certificate(env.issue(), foreign, hashes.SHA1())
    response = env.answer(builder.build().public_bytes(DER))
    assert response.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def _malformed(env: Env, request_der: bytes) -> None:
    answer = env.responder.respond(request_der)
    response = ocsp.load_der_ocsp_response(answer.der)
    assert response.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert answer.outcome == "malformedRequest"


@pytest.mark.parametrize(
    "body", [b"", b"garbage", b"\x30\x00", b"\x30\x03\x30\x01\x00", b"\x30" * 5000]
)
def test_malformed_for_what_is_not_an_ocsp_request(env: Env, body: bytes) -> None:
    _malformed(env, body)


def test_malformed_for_an_oversized_request(env: Env) -> None:
    request = env.request(env.issue())
    _malformed(env, request + b"\x00" * MAX_REQUEST_BYTES)


@pytest.mark.parametrize("size", [0, NONCE_MAX_OCTETS + 1, 1000])
def test_malformed_for_nonces_outside_rfc_9654(env: Env, size: int) -> None:
    _malformed(env, env.request(env.issue(), nonce=b"\x07" * size))


def test_malformed_for_an_unknown_critical_extension(env: Env) -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    builder = ocsp.OCSPRequestBuilder().add_certificate(env.issue(), env.issuer.cert, hashes.SHA1())
    _malformed(env, builder.add_extension(unknown, critical=True).build().public_bytes(DER))
    # The same extension, not critical, is ignored (RFC 6960 §4.4).
    response = env.answer(builder.add_extension(unknown, critical=False).build().public_bytes(DER))
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD


def test_malformed_for_several_requests_in_one(env: Env, tmp_path: Path) -> None:
    # RFC 5019 §2.1.1: one Request per OCSPRequest. cryptography cannot
    # build two; openssl can.
    issuer, first, second = tmp_path / "issuer.pem", tmp_path / "a.pem", tmp_path / "b.pem"
    issuer.write_bytes(env.issuer.cert.public_bytes(serialization.Encoding.PEM))
    first.write_bytes(env.issue("a.example.com").public_bytes(serialization.Encoding.PEM))
    second.write_bytes(env.issue("b.example.com").public_bytes(serialization.Encoding.PEM))
    out = tmp_path / "req.der"
    subprocess.run(
        [
            *("openssl", "ocsp", "-issuer", str(issuer)),
            *("-cert", str(first), "-cert", str(second), "-reqout", str(out)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    _malformed(env, out.read_bytes())


def test_storage_failure_is_internal_error_not_an_exception(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    cert = env.issue()
    env.store.fail = True
    answer = env.responder.respond(env.request(cert))
    assert answer.outcome == "internalError"
    response = ocsp.load_der_ocsp_response(answer.der)
    assert response.response_status == ocsp.OCSPResponseStatus.INTERNAL_ERROR
    assert "storage lookup" in caplog.text


# -- the responder certificate -------------------------------------------------------


def test_responder_certificate_profile(env: Env) -> None:
    """RFC 6960 §4.2.2.2 and BR 7.1.2.8."""
    cert = env.responder.responder_certificate(env.issuer.id)
    cert.verify_directly_issued_by(env.issuer.cert)
    assert cert.issuer == env.issuer.cert.subject
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == "certmint Development Intermediate E1 OCSP Responder"
    assert cert.not_valid_before_utc == START - timedelta(hours=1)
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc + timedelta(seconds=1)
    assert validity == RESPONDER_VALIDITY
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.crl_sign)
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.OCSP_SIGNING
    ]
    assert not ext.get_extension_for_class(x509.OCSPNoCheck).critical
    issuer_ski = env.issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.value.digest
    for absent in (x509.SubjectAlternativeName, x509.CRLDistributionPoints,
                   x509.CertificatePolicies, x509.AuthorityInformationAccess):  # fmt: skip
        with pytest.raises(x509.ExtensionNotFound):
            ext.get_extension_for_class(absent)


def test_responder_certificate_passes_pkilint_cli(env: Env, tmp_path: Path) -> None:
    """pkilint's own command line agrees with the in-process lint."""
    pem = tmp_path / "responder.pem"
    cert = env.responder.responder_certificate(env.issuer.id)
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        ["lint_cabf_serverauth_cert", "lint", "--type", "OCSP-RESPONDER", str(pem)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    blocking = [
        line
        for line in done.stdout.splitlines()
        if any(f"({s})" in line for s in ("FATAL", "ERROR", "WARNING"))
    ]
    assert blocking == [], done.stdout


def test_responder_lint_refuses_a_bad_profile(env: Env) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = responder_certificate_builder(
        issuer_cert=env.issuer.cert,
        public_key=key.public_key(),
        serial=12345,
        not_before=START,
        not_after=START + timedelta(days=3),
    ).add_extension(
        x509.CertificatePolicies([x509.PolicyInformation(DV_POLICY_OID, None)]),
        critical=False,
    )
    with pytest.raises(LintError) as refused:
        sign_certificate(builder, env.issuer.signer, lint_responder_certificate)
    assert any("certificate_policies" in finding for finding in refused.value.findings)


def test_a_refusing_lint_means_internal_error_and_nothing_signed(env: Env) -> None:
    def refuse(draft: x509.Certificate) -> None:
        raise LintError("OCSP responder certificate", ("ERROR test.refused",))

    responder = OcspResponder(
        env.hierarchy.issuers, env.store, env.clock, SeededEntropy(6), lint=refuse
    )
    answer = responder.respond(env.request(env.issue()))
    assert answer.outcome == "internalError"


def test_responder_certificate_is_reused_then_renewed_before_it_expires(env: Env) -> None:
    cert = env.issue()
    first = env.answer(env.request(cert)).certificates[0]
    # Just before the renewal point: the same certificate, and what it signs
    # still ends before it does.
    env.clock.advance(
        (RESPONDER_VALIDITY - RESPONDER_RENEW_BEFORE - timedelta(hours=2)).total_seconds()
    )
    late = env.answer(env.request(cert))
    assert late.certificates == [first]
    assert late.next_update_utc is not None
    assert late.next_update_utc <= first.not_valid_after_utc
    env.clock.advance(timedelta(hours=2).total_seconds())
    response = env.answer(env.request(cert))
    (renewed,) = response.certificates
    assert renewed.serial_number != first.serial_number
    assert renewed.public_key() != first.public_key()  # a fresh key too
    assert response.next_update_utc is not None
    assert response.next_update_utc <= renewed.not_valid_after_utc
    _assert_signed_by_delegated_responder(env, response)


# -- AIA -------------------------------------------------------------------------------


def test_certificates_carry_the_ocsp_url_only_when_configured(env: Env, tmp_path: Path) -> None:
    aia = env.issue().extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (AuthorityInformationAccessOID.OCSP, OCSP_URL),
        (AuthorityInformationAccessOID.CA_ISSUERS, f"{MGMT}/aia/{env.issuer.id}.der"),
    ]
    plain = CertificateAuthority(
        env.hierarchy, IssuanceConfig(f"{MGMT}/crl/", f"{MGMT}/aia/"), env.clock, SeededEntropy(7)
    )
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    issued = x509.load_der_x509_certificate(
        plain.issue(public_key=key, dns_names=["plain.example.com"]).der
    )
    aia = issued.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_method for d in aia] == [AuthorityInformationAccessOID.CA_ISSUERS]


# -- HTTP (RFC 6960 §A.1) ------------------------------------------------------------


@pytest.fixture
def client(env: Env) -> Iterator[TestClient]:
    app = build_management_app(env.ca, env.hierarchy, env.store, env.clock, ocsp=env.responder)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _ocsp(response_body: bytes) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(response_body)


def test_http_post(env: Env, client: TestClient) -> None:
    cert = env.issue()
    reply = client.post(
        "/ocsp",
        content=env.request(cert, nonce=b"n" * 32),
        headers={"Content-Type": "application/ocsp-request"},
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/ocsp-response"
    assert reply.headers["cache-control"] == "no-store"
    assert _ocsp(reply.content).certificate_status == ocsp.OCSPCertStatus.GOOD


def _get_path(request_der: bytes) -> str:
    encoded = base64.b64encode(request_der).decode("ascii")
    return encoded


def _request_with_slash_and_plus(env: Env) -> bytes:
    """A real request whose base64 has both "/" and "+" in it (bounded search)."""
    cert = env.issue()
    for counter in range(2000):
        der = env.request(cert, nonce=counter.to_bytes(16, "big"))
        encoded = base64.b64encode(der).decode("ascii")
        if "/" in encoded and "+" in encoded:
            return der
    raise AssertionError("no request with both / and + in 2000 tries")


def test_http_get_escaped_and_unescaped(env: Env, client: TestClient) -> None:
    der = _request_with_slash_and_plus(env)
    encoded = _get_path(der)
    for path in (f"/ocsp/{quote(encoded, safe='')}", f"/ocsp/{encoded}"):
        reply = client.get(path)
        assert reply.status_code == 200, path
        assert reply.headers["content-type"] == "application/ocsp-response"
        assert _ocsp(reply.content).certificate_status == ocsp.OCSPCertStatus.GOOD
        # A nonce is echoed, so no shared cache may keep it.
        assert reply.headers["cache-control"] == "no-store"


def test_http_get_without_nonce_is_cacheable_for_a_minute(env: Env, client: TestClient) -> None:
    reply = client.get(f"/ocsp/{quote(_get_path(env.request(env.issue())), safe='')}")
    assert _ocsp(reply.content).certificate_status == ocsp.OCSPCertStatus.GOOD
    assert reply.headers["cache-control"] == "max-age=60, public, no-transform"


@pytest.mark.parametrize("path", ["/ocsp/", "/ocsp/%%%", "/ocsp/not-base64!", "/ocsp/AAAA"])
def test_http_get_garbage_is_malformed_request(client: TestClient, path: str) -> None:
    reply = client.get(path)
    assert reply.status_code == 200
    assert _ocsp(reply.content).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_http_post_oversized_is_malformed_request(client: TestClient) -> None:
    reply = client.post("/ocsp", content=b"\x30" * (MAX_REQUEST_BYTES + 1))
    assert reply.status_code == 200
    assert _ocsp(reply.content).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_http_without_a_responder_there_is_no_ocsp(env: Env) -> None:
    app = build_management_app(env.ca, env.hierarchy, env.store, env.clock)
    with TestClient(app, raise_server_exceptions=False) as plain:
        assert plain.post("/ocsp", content=env.request(env.issue())).status_code == 404
        assert plain.get("/ocsp/MAA=").status_code == 404


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MAA=", b"\x30\x00"),
        ("MAA", b"\x30\x00"),  # padding dropped
        ("-_8=", b"\xfb\xff"),  # base64url
        ("+/8=", b"\xfb\xff"),
        (" /8=", b"\xfb\xff"),  # "+" that a form decoder turned into a space
        ("", None),
        ("M", None),
        ("M$A=", None),
        ("A" * (MAX_REQUEST_BYTES * 2), None),
    ],
)
def test_decode_get_request(text: str, expected: bytes | None) -> None:
    assert decode_get_request(text) == expected
