"""``serve --issuers-file``: a ceremony's hierarchy loaded, checked, and issued from,
several intermediates active at once."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certmint.ca.ceremony.config import load_ceremony_config
from certmint.ca.ceremony.steps import Ceremony
from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.configured import load_configured_hierarchy
from certmint.ca.issuance.hierarchy import HierarchyError
from certmint.ca.issuance.pkcs11 import Pkcs11Signer, release_modules
from certmint.ca.issuance.signer import FileSigner
from certmint.testing.ceremony import ONLINE_TOKEN, CeremonyFiles, write_ceremony
from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy
from certmint.testing.softhsm import SoftHsm, softhsm_session

from .issuance_support import AIA_BASE, CRL_BASE, START


def _ceremony(directory: Path, hsm: SoftHsm | None, clock: FakeClock) -> CeremonyFiles:
    files = write_ceremony(directory, hsm=hsm)
    config = load_ceremony_config(files.config)
    Ceremony(config, clock, SeededEntropy(11), report=lambda _line: None).run()
    return files


@pytest.fixture(scope="module")
def file_ceremony(tmp_path_factory: pytest.TempPathFactory) -> CeremonyFiles:
    return _ceremony(tmp_path_factory.mktemp("ceremony"), None, FakeClock(START))


@pytest.fixture
def hsm(tmp_path: Path) -> Iterator[SoftHsm]:
    # SOFTHSM2_CONF set for this test only, the module released around it.
    with softhsm_session(tmp_path / "hsm") as hsm:
        yield hsm


def _clock() -> FakeClock:
    return FakeClock(START + timedelta(days=2))


def test_loads_the_ceremony_hierarchy_with_both_intermediates_and_their_chains(
    file_ceremony: CeremonyFiles, tmp_path: Path
) -> None:
    out = file_ceremony.out
    hierarchy = load_configured_hierarchy(
        file_ceremony.issuers_file, tmp_path / "data", _clock(), SeededEntropy(1)
    )
    load = lambda name: x509.load_pem_x509_certificate(out(name).read_bytes())  # noqa: E731
    assert hierarchy.roots == (load("root-x1.pem"), load("root-x2.pem"))
    assert hierarchy.root_paths == (out("root-x1.pem").resolve(), out("root-x2.pem").resolve())
    assert [issuer.id for issuer in hierarchy.issuers] == ["e7", "r7"]
    e7, r7 = hierarchy.issuers
    assert e7.cert == load("e7.pem")
    assert e7.chains == ((load("e7.pem"),), (load("e7-cross-x2.pem"),))
    assert r7.chains == ((load("r7.pem"),), (load("r7-cross-x2.pem"),))
    assert isinstance(e7.signer, FileSigner) and e7.signer.public_key == e7.cert.public_key()

    # The listener's TLS certificate: issued by the first issuer, chaining to roots[0].
    chain = x509.load_pem_x509_certificates(hierarchy.tls_cert_path.read_bytes())
    assert chain[1] == e7.cert
    chain[0].verify_directly_issued_by(e7.cert)
    e7.cert.verify_directly_issued_by(hierarchy.roots[0])
    assert hierarchy.tls_key_path.stat().st_mode & 0o077 == 0


def test_every_active_intermediate_issues_chosen_at_random(
    file_ceremony: CeremonyFiles, tmp_path: Path
) -> None:
    clock = _clock()
    hierarchy = load_configured_hierarchy(
        file_ceremony.issuers_file, tmp_path / "data", clock, SeededEntropy(1)
    )
    ca = CertificateAuthority(
        hierarchy,
        IssuanceConfig(crl_base_url=CRL_BASE, aia_base_url=AIA_BASE),
        clock,
        SeededEntropy(3),
    )
    by_id = {issuer.id: issuer for issuer in hierarchy.issuers}
    used: Counter[str] = Counter()
    for n in range(24):
        issued = ca.issue(
            public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
            dns_names=[f"n{n}.example.com"],
        )
        used[issued.issuer_id] += 1
        cert = x509.load_der_x509_certificate(issued.der)
        cert.verify_directly_issued_by(by_id[issued.issuer_id].cert)
        # Each certificate names its own issuer in AIA, for its own chains.
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert aia[0].access_location.value == f"{AIA_BASE}{issued.issuer_id}.der"
        assert len(ca.chains_pem(issued.issuer_id)) == 2
    assert set(used) == {"e7", "r7"}, used


def test_hsm_held_intermediates_issue(tmp_path: Path, hsm: SoftHsm) -> None:
    clock = FakeClock(START)
    files = _ceremony(tmp_path / "c", hsm, clock)
    clock.advance(3600)
    hierarchy = load_configured_hierarchy(
        files.issuers_file, tmp_path / "data", clock, SeededEntropy(1)
    )
    assert all(isinstance(issuer.signer, Pkcs11Signer) for issuer in hierarchy.issuers)
    assert hierarchy.issuers[1].signer.key_id == (
        f"pkcs11:token={ONLINE_TOKEN};object=r7;type=private"
    )
    ca = CertificateAuthority(
        hierarchy,
        IssuanceConfig(crl_base_url=CRL_BASE, aia_base_url=AIA_BASE),
        clock,
        SeededEntropy(2),
    )
    seen = set()
    for n in range(12):
        issued = ca.issue(
            public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
            dns_names=[f"hsm{n}.example.com"],
        )
        x509.load_der_x509_certificate(issued.der).verify_directly_issued_by(
            ca.issuer_cert(issued.issuer_id)
        )
        seen.add(issued.issuer_id)
    assert seen == {"e7", "r7"}


def test_wrong_pin_in_the_issuers_file_is_one_line(tmp_path: Path, hsm: SoftHsm) -> None:
    files = _ceremony(tmp_path / "c", hsm, FakeClock(START))
    release_modules()  # as a fresh serve process would be
    (files.directory / "pins" / "online.pin").write_text("wrong\n")
    with pytest.raises(HierarchyError) as exc:
        load_configured_hierarchy(files.issuers_file, tmp_path / "data", _clock(), SeededEntropy(1))
    assert str(exc.value) == f"issuers.toml: issuer[0].key: token '{ONLINE_TOKEN}': wrong PIN"


def _variant(files: CeremonyFiles, tmp_path: Path, old: str, new: str) -> Path:
    text = files.issuers_file.read_text()
    assert old in text, old
    path = files.issuers_file.parent / f"variant-{abs(hash((old, new)))}.toml"
    path.write_text(text.replace(old, new, 1))
    return path


CASES = [
    (
        'key = { file = "../keys/e7.key" }',
        'key = { file = "../keys/r7.key" }',
        "issuer[0].key: file:{keys}/r7.key is not the certificate's key",
    ),
    (
        'alternate_chains = [["e7-cross-x2.pem"]]',
        'alternate_chains = [["r7-cross-x2.pem"]]',
        "issuer[0].alternate_chains[0]: does not start with a certificate of the issuer's name "
        "and key",
    ),
    (
        'roots = ["root-x1.pem", "root-x2.pem"]',
        'roots = ["root-x1.pem"]',
        "issuer[0].alternate_chains[0]: does not end at one of the roots",
    ),
    (
        'roots = ["root-x1.pem", "root-x2.pem"]',
        'roots = ["e7.pem"]',
        "roots: e7.pem is not a self-signed root",
    ),
    ('id = "r7"', 'id = "e7"', "issuer: id 'e7' is used twice"),
    ('id = "e7"', 'id = "e7"\ncolour = "red"', "issuer[0].colour: unknown key"),
    (
        'certificate = "e7.pem"',
        'certificate = "missing.pem"',
        "issuer[0].certificate: {out}/missing.pem: No such file or directory",
    ),
    (
        'key = { file = "../keys/e7.key" }',
        'key = { file = "../keys/e7.key", label = "x" }',
        "issuer[0].key: a key is either file = PATH or module/token/label/pin_file",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), CASES)
def test_a_wrong_issuers_file_stops_serve_with_one_line(
    file_ceremony: CeremonyFiles, tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = _variant(file_ceremony, tmp_path, old, new)
    with pytest.raises(HierarchyError) as exc:
        load_configured_hierarchy(path, tmp_path / "data", _clock(), SeededEntropy(1))
    keys = (file_ceremony.directory / "keys").resolve()
    out = file_ceremony.out("").resolve()
    expected = f"{path.name}: " + message.format(keys=keys, out=out)
    assert str(exc.value) == expected


def test_expired_intermediate_is_refused(file_ceremony: CeremonyFiles, tmp_path: Path) -> None:
    late = FakeClock(START + timedelta(days=1096))
    with pytest.raises(HierarchyError) as exc:
        load_configured_hierarchy(
            file_ceremony.issuers_file, tmp_path / "data", late, SeededEntropy(1)
        )
    assert str(exc.value) == "issuers.toml: issuer[0].certificate: is not valid now"


def test_readable_pin_file_is_refused(tmp_path: Path, hsm: SoftHsm) -> None:
    files = _ceremony(tmp_path / "c", hsm, FakeClock(START))
    pin = (files.directory / "pins" / "online.pin").resolve()
    os.chmod(pin, 0o644)
    with pytest.raises(HierarchyError) as exc:
        load_configured_hierarchy(files.issuers_file, tmp_path / "data", _clock(), SeededEntropy(1))
    assert str(exc.value) == (
        f"issuers.toml: issuer[0].key.pin_file: {pin} is readable by others; chmod 600 it"
    )
