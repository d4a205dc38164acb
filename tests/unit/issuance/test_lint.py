"""The subscriber lint hook (issuance/lint.py): pkilint's DV validators in-process
plus certmint's own checks, run on the throwaway-key draft before the issuing
key signs anything."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from certmint.ca.config import CLASSIC, SHORTLIVED, TLSSERVER, PolicyConfig, ProfileConfig
from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.ca.issuance.lint import (
    IssuanceExpectation,
    LintFinding,
    LintWaivers,
    SubscriberLinter,
    is_public_url,
)
from certmint.ca.issuance.profile import subscriber_certificate_builder
from certmint.ca.issuance.signer import FileSigner, Signer
from certmint.ca.issuance.signing import LintError, sign_certificate
from certmint.ca.keypolicy import KeyPolicy, blocked_by, spki_sha256
from certmint.testing.clock import FakeClock

from .issuance_support import AIA_BASE, CRL_BASE, START, RecordingEntropy, SpySigner

AIA = f"{AIA_BASE}e1.der"
CRL = f"{CRL_BASE}e1.crl"
NAMES = ["www.example.com", "example.com"]
STRICT = SubscriberLinter(KeyPolicy.default(), LintWaivers())


def _p256() -> CertificatePublicKeyTypes:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def _rsa_issuer() -> tuple[x509.Certificate, FileSigner]:
    """A self-signed RSA-2048 CA certificate, to lint leaves of an RSA issuer."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certmint test RSA issuer")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .serial_number(4242)
        .issuer_name(name)
        .subject_name(name)
        .public_key(key.public_key())
        .not_valid_before(START - timedelta(days=1))
        .not_valid_after(START + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
    )
    signer = FileSigner(key, key_id="test-rsa")
    return sign_certificate(builder, signer), signer


def _builder(
    issuer: x509.Certificate,
    *,
    key: CertificatePublicKeyTypes | None = None,
    names: list[str] = NAMES,
    ips: list[str] | None = None,
    start: datetime = START,
    validity: timedelta = timedelta(days=90),
    common_name: str | None = None,
    aia: str = AIA,
    crl: str = CRL,
) -> x509.CertificateBuilder:
    return subscriber_certificate_builder(
        issuer_cert=issuer,
        public_key=key or _p256(),
        serial=0x1234567890ABCDEF1234,
        dns_names=names,
        ip_addresses=ips or [],
        not_before=start,
        not_after=start + validity - timedelta(seconds=1),
        aia_issuer_url=aia,
        crl_url=crl,
        common_name=common_name,
    )


def _expect(
    issuer: x509.Certificate,
    names: list[str] = NAMES,
    ips: list[str] | None = None,
    validity: timedelta = timedelta(days=90),
    common_name: str | None = None,
) -> IssuanceExpectation:
    return IssuanceExpectation.of(
        issuer=issuer,
        dns_names=names,
        ip_addresses=ips or [],
        max_validity=validity,
        common_name=common_name,
        profile="test",
    )


def _draft_and_final(
    builder: x509.CertificateBuilder, signer: Signer
) -> tuple[x509.Certificate, x509.Certificate]:
    drafts: list[x509.Certificate] = []
    final = sign_certificate(builder, signer, lint=drafts.append)
    return drafts[0], final


def _codes(findings: list[LintFinding]) -> set[str]:
    return {f.code for f in findings if f.refuses}


# -- pkilint on the draft -------------------------------------------------------


@pytest.mark.parametrize("issuer_kind", ["ecdsa-p384", "rsa-2048"])
def test_the_draft_lints_exactly_like_the_signed_certificate(
    hierarchy: Hierarchy, issuer_kind: str
) -> None:
    """The throwaway signature cannot change a finding: same TBS, same
    algorithm, and no serverauth validator verifies a signature. A shape
    with findings (a CN draws a warning, an internal name an error)
    makes the comparison more than [] == []."""
    signer: Signer
    if issuer_kind == "rsa-2048":
        issuer, signer = _rsa_issuer()
    else:
        issuer, signer = hierarchy.issuers[0].cert, hierarchy.issuers[0].signer
    builder = _builder(issuer, names=["www.example.com", "a.test"], common_name="www.example.com")
    draft, final = _draft_and_final(builder, signer)
    assert draft.tbs_certificate_bytes == final.tbs_certificate_bytes
    assert draft.signature != final.signature
    expected = _expect(issuer, ["www.example.com", "a.test"], common_name="www.example.com")
    on_draft = STRICT.findings(draft, expected)
    assert on_draft == STRICT.findings(final, expected)
    assert {"cabf.internal_domain_name", "cabf.serverauth.dv.common_name_attribute_present"} <= {
        f.code for f in on_draft
    }


@pytest.mark.parametrize("profile", [CLASSIC, TLSSERVER, SHORTLIVED], ids=lambda p: p.name)
def test_every_shipped_profile_is_clean(hierarchy: Hierarchy, profile: ProfileConfig) -> None:
    issuer = hierarchy.issuers[0]
    draft, _ = _draft_and_final(_builder(issuer.cert, validity=profile.validity), issuer.signer)
    assert STRICT.findings(draft, _expect(issuer.cert, validity=profile.validity)) == []


def test_a_br_violation_refuses_and_nothing_is_signed(
    hierarchy: Hierarchy, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = hierarchy.issuers[0]
    spy = SpySigner(issuer.signer)
    expected = _expect(issuer.cert, validity=timedelta(days=400))
    builder = _builder(issuer.cert, validity=timedelta(days=400))
    with caplog.at_level(logging.ERROR, logger="certmint.ca.issuance"):
        with pytest.raises(LintError) as refused:
            sign_certificate(builder, spy, lint=STRICT.hook(expected))
    assert spy.signed == []
    # BR 6.3.2: at most 398 days for a certificate issued in January 2026.
    (code,) = refused.value.findings
    assert code.startswith("cabf.serverauth.certificate_validity_period_exceeds_")
    assert code in caplog.text and "nothing was signed" in caplog.text


def test_a_warning_refuses_too(hierarchy: Hierarchy) -> None:
    """Let's Encrypt's classic subject CN: BR 7.1.2.7.2 NOT RECOMMENDED."""
    issuer = hierarchy.issuers[0]
    spy = SpySigner(issuer.signer)
    builder = _builder(issuer.cert, common_name="example.com")
    expected = _expect(issuer.cert, common_name="example.com")
    with pytest.raises(LintError) as refused:
        sign_certificate(builder, spy, lint=STRICT.hook(expected))
    assert refused.value.findings == ("cabf.serverauth.dv.common_name_attribute_present",)
    assert spy.signed == []


@pytest.mark.parametrize(
    ("severity", "waived", "refuses"),
    [
        ("FATAL", False, True),
        ("ERROR", False, True),
        ("WARNING", False, True),
        ("NOTICE", False, False),
        ("INFO", False, False),
        ("ERROR", True, False),
    ],
)
def test_which_findings_refuse(severity: str, waived: bool, refuses: bool) -> None:
    assert LintFinding(severity, "x.y", waived=waived).refuses is refuses


# -- waivers: only the non-public names the deployment allows ----------------------


def test_internal_names_refuse_unless_the_policy_allows_them(hierarchy: Hierarchy) -> None:
    issuer = hierarchy.issuers[0]
    names, ips = ["a.test"], ["10.0.0.1"]
    draft, _ = _draft_and_final(
        _builder(issuer.cert, names=names, ips=ips, aia="http://127.0.0.1:15000/aia/e1.der"),
        issuer.signer,
    )
    expected = _expect(issuer.cert, names, ips)
    assert _codes(STRICT.findings(draft, expected)) == {
        "cabf.internal_domain_name",
        "cabf.internal_ip_address",
    }
    # Each waiver covers its own extension only.
    only_urls = SubscriberLinter(KeyPolicy.default(), LintWaivers(internal_ca_urls=True))
    assert _codes(only_urls.findings(draft, expected)) == {
        "cabf.internal_domain_name",  # the SAN's, not the AIA's
        "cabf.internal_ip_address",
    }
    names_only = SubscriberLinter(
        KeyPolicy.default(), LintWaivers(internal_names=True, internal_addresses=True)
    )
    refusing = [f for f in names_only.findings(draft, expected) if f.refuses]
    assert [f.code for f in refusing] == ["cabf.internal_domain_name"]
    assert refusing[0].node is not None and "authorityInfoAccess" in refusing[0].node
    assert _codes(SubscriberLinter.for_unit_use().findings(draft, expected)) == set()


def test_waivers_follow_the_deployment(caplog: pytest.LogCaptureFixture) -> None:
    public = ("http://ca.interop.example.com/crl/", "http://ca.interop.example.com/aia/")
    with caplog.at_level(logging.WARNING, logger="certmint.ca.issuance"):
        assert LintWaivers.for_deployment(PolicyConfig(), public) == LintWaivers()
    assert caplog.text == ""
    dev = PolicyConfig(allow_unlisted_tlds=True, allow_private_ip_identifiers=True)
    with caplog.at_level(logging.WARNING, logger="certmint.ca.issuance"):
        waivers = LintWaivers.for_deployment(dev, ("http://127.0.0.1:15000/crl/",))
    assert waivers == LintWaivers.everything_internal()
    assert "non-public CA URLs (http://127.0.0.1:15000/crl/)" in caplog.text


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("http://ca.example.org/crl/", True),
        ("http://c.lencr.org/", True),
        ("http://127.0.0.1:15000/crl/", False),
        ("http://[::1]:15000/aia/", False),
        ("http://mgmt.test/crl/", False),
        ("http://localhost/", False),
        ("http://co.uk/", False),  # a public suffix is nobody's host
        ("http://9.9.9.9/crl/", True),
        ("http://10.1.2.3/crl/", False),
    ],
)
def test_is_public_url(url: str, public: bool) -> None:
    assert is_public_url(url) is public


# -- certmint's own checks ---------------------------------------------------------


def _own(findings: list[LintFinding]) -> set[str]:
    return {f.code for f in findings if f.code.startswith("certmint.")}


def test_names_must_equal_the_order(hierarchy: Hierarchy) -> None:
    issuer = hierarchy.issuers[0]
    draft, _ = _draft_and_final(_builder(issuer.cert), issuer.signer)
    for names, ips in [
        (["www.example.com"], []),  # the certificate names more than the order
        ([*NAMES, "extra.example.com"], []),  # fewer
        (NAMES, ["9.9.9.9"]),
    ]:
        found = STRICT.findings(draft, _expect(issuer.cert, names, ips))
        assert _own(found) == {"certmint.san_mismatch"}, found
    # DNS names compare case-insensitively (RFC 4343), duplicates collapse.
    assert not _own(
        STRICT.findings(draft, _expect(issuer.cert, ["WWW.example.com", "example.com"]))
    )
    assert not _own(STRICT.findings(draft, _expect(issuer.cert, ["EXAMPLE.com", *NAMES])))


def test_validity_within_the_profile_and_the_issuer(hierarchy: Hierarchy) -> None:
    issuer = hierarchy.issuers[0]
    draft, _ = _draft_and_final(_builder(issuer.cert), issuer.signer)
    exact = _expect(issuer.cert, validity=timedelta(days=90))
    assert not _own(STRICT.findings(draft, exact))
    one_second_less = _expect(issuer.cert, validity=timedelta(days=90, seconds=-1))
    assert _own(STRICT.findings(draft, one_second_less)) == {"certmint.validity_exceeds_profile"}
    # The dev hierarchy's E1 starts at START: a leaf starting earlier, or
    # ending after E1 does, lies outside it.
    e1 = issuer.cert
    for start in (START - timedelta(seconds=1), e1.not_valid_after_utc - timedelta(days=89)):
        early_or_late, _ = _draft_and_final(_builder(e1, start=start), issuer.signer)
        assert _own(STRICT.findings(early_or_late, exact)) == {"certmint.validity_outside_issuer"}


def test_the_subject_is_the_profiles(hierarchy: Hierarchy) -> None:
    issuer = hierarchy.issuers[0]
    with_cn, _ = _draft_and_final(_builder(issuer.cert, common_name="example.com"), issuer.signer)
    without, _ = _draft_and_final(_builder(issuer.cert), issuer.signer)
    assert _own(STRICT.findings(with_cn, _expect(issuer.cert))) == {"certmint.subject_not_empty"}
    expect_cn = _expect(issuer.cert, common_name="example.com")
    assert _own(STRICT.findings(with_cn, expect_cn)) == set()
    assert _own(STRICT.findings(without, expect_cn)) == {"certmint.subject_mismatch"}


def test_the_key_policy_applies(hierarchy: Hierarchy) -> None:
    issuer = hierarchy.issuers[0]
    key = _p256()
    draft, _ = _draft_and_final(_builder(issuer.cert, key=key), issuer.signer)
    blocking = SubscriberLinter(KeyPolicy(frozenset(), blocked_by(frozenset({spki_sha256(key)}))))
    found = blocking.findings(draft, _expect(issuer.cert))
    assert _own(found) == {"certmint.subject_key_not_allowed"}
    assert any("blocked" in (f.message or "") for f in found)


def test_issuer_name_and_aki_must_be_the_issuers(hierarchy: Hierarchy) -> None:
    issuer = hierarchy.issuers[0]
    draft, _ = _draft_and_final(_builder(issuer.cert), issuer.signer)
    other, _ = _rsa_issuer()
    found = STRICT.findings(draft, _expect(other))
    assert {"certmint.issuer_name_mismatch", "certmint.aki_mismatch"} <= _own(found)


# -- concurrency -----------------------------------------------------------------


def test_concurrent_lints_agree(hierarchy: Hierarchy) -> None:
    """The CA may issue from several threads; pkilint's validators are shared
    behind a lock. Bounded: 4 threads x 5 lints."""
    issuer = hierarchy.issuers[0]
    clean, _ = _draft_and_final(_builder(issuer.cert), issuer.signer)
    long, _ = _draft_and_final(_builder(issuer.cert, validity=timedelta(days=400)), issuer.signer)
    expected = _expect(issuer.cert, validity=timedelta(days=400))
    want = {id(clean): STRICT.findings(clean, expected), id(long): STRICT.findings(long, expected)}
    results: list[bool] = []
    lock = threading.Lock()

    def work() -> None:
        for cert in (clean, long, clean, long, clean):
            same = STRICT.findings(cert, expected) == want[id(cert)]
            with lock:
                results.append(same)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [True] * 20


# -- through the CA's issue() -------------------------------------------------------


def _spied_ca(hierarchy: Hierarchy, clock: FakeClock) -> tuple[CertificateAuthority, SpySigner]:
    spy = SpySigner(hierarchy.issuers[0].signer)
    spied = replace(hierarchy, issuers=(replace(hierarchy.issuers[0], signer=spy),))
    ca = CertificateAuthority(
        spied, IssuanceConfig(CRL_BASE, AIA_BASE), clock, RecordingEntropy(7), linter=STRICT
    )
    return ca, spy


@pytest.mark.parametrize("profile", [CLASSIC, TLSSERVER, SHORTLIVED], ids=lambda p: p.name)
def test_issue_under_each_profile(hierarchy: Hierarchy, profile: ProfileConfig) -> None:
    clock = FakeClock(START + timedelta(days=1))
    ca, spy = _spied_ca(hierarchy, clock)
    issued = ca.issue(public_key=_p256(), dns_names=NAMES, profile=profile)
    cert = x509.load_der_x509_certificate(issued.der)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc + timedelta(seconds=1) == (
        profile.validity
    )
    assert cert.subject == x509.Name([])
    assert len(spy.signed) == 1


def test_issue_refused_by_lint_signs_nothing_and_logs(
    hierarchy: Hierarchy, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(START + timedelta(days=1))
    ca, spy = _spied_ca(hierarchy, clock)
    le_classic: Any = replace(CLASSIC, common_name=True, rsa_key_encipherment=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with caplog.at_level(logging.INFO, logger="certmint.ca.issuance"):
        with pytest.raises(LintError) as refused:
            ca.issue(public_key=key, dns_names=NAMES, profile=le_classic)
    assert set(refused.value.findings) == {
        "cabf.serverauth.dv.common_name_attribute_present",
        "cabf.serverauth.subscriber_rsa_digitalsignature_and_keyencipherment_present",
    }
    assert spy.signed == []
    assert "lint refused the classic certificate for example.com, www.example.com" in caplog.text
