"""Running the ceremony: what it makes, reruns that change nothing, mismatches
refused before anything changes, and what the audit log says."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certmint.ca.ceremony.audit import read_records
from certmint.ca.ceremony.config import CeremonyError, load_ceremony_config
from certmint.ca.ceremony.lint import ROOT, certificate_findings
from certmint.ca.ceremony.steps import ALREADY_DONE, DONE, Ceremony, CeremonyResult
from certmint.ca.issuance.keys import load_private_key
from certmint.testing.ceremony import PUBLIC_BASE, CeremonyFiles, write_ceremony
from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy

from .conftest import START

STEPS = ["x1", "x2", "e7", "r7", "e7-x2", "r7-x2", "x1-crl"]


def run(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy, lines: list[str] | None = None
) -> CeremonyResult:
    config = load_ceremony_config(files.config)
    sink = lines if lines is not None else []
    return Ceremony(config, clock, entropy, report=sink.append).run()


def snapshot(directory: Path) -> dict[str, str]:
    """sha256 and mode of every file under ``directory`` except the audit log."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        + f" {stat.S_IMODE(path.stat().st_mode):o}"
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "audit.jsonl"
    }


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def files(tmp_path: Path) -> CeremonyFiles:
    return write_ceremony(tmp_path / "ceremony", hsm=None)


def test_first_run_makes_the_hierarchy_the_file_describes(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    lines: list[str] = []
    result = run(files, clock, entropy, lines)
    assert [s.status for s in result.states] == [DONE] * len(STEPS)
    assert len(lines) == len(STEPS) + 1  # one line per step, then the issuers file
    assert lines[0].startswith("root x1: generated ecdsa-p384 key file ")
    assert "self-signed: out/root-x1.pem serial " in lines[0]
    assert lines[4].startswith("cross-sign e7-x2: e7 certified by x2: out/e7-cross-x2.pem")
    assert lines[-1] == "issuers file out/issuers.toml written"

    x1, x2 = load(files.out("root-x1.pem")), load(files.out("root-x2.pem"))
    e7, r7 = load(files.out("e7.pem")), load(files.out("r7.pem"))
    e7_cross = load(files.out("e7-cross-x2.pem"))
    x1.verify_directly_issued_by(x1)
    e7.verify_directly_issued_by(x1)
    r7.verify_directly_issued_by(x1)
    e7_cross.verify_directly_issued_by(x2)
    assert e7_cross.subject == e7.subject and e7_cross.public_key() == e7.public_key()
    # The two intermediates: ECDSA P-384 and RSA 2048.
    e7_key, r7_key = e7.public_key(), r7.public_key()
    assert isinstance(e7_key, ec.EllipticCurvePublicKey) and e7_key.curve.name == "secp384r1"
    assert isinstance(r7_key, rsa.RSAPublicKey) and r7_key.key_size == 2048
    # Validity from the injected clock; a root lasts 7305 days inclusive.
    assert x1.not_valid_before_utc == START
    assert (x1.not_valid_after_utc - x1.not_valid_before_utc).total_seconds() == 7305 * 86400 - 1
    # BR 7.1.2.10.3 / 7.1.2.11.2: the URLs the dev hierarchy lacked.
    crl_dp = e7.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name == [x509.UniformResourceIdentifier(f"{PUBLIC_BASE}/x1.crl")]
    aia = e7.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia] == [f"{PUBLIC_BASE}/x1.der"]
    eku = e7.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert e7.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0

    crl = x509.load_der_x509_crl(files.out("x1.crl").read_bytes())
    assert crl.is_signature_valid(x1.public_key())  # type: ignore[arg-type]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    assert (crl.next_update_utc - crl.last_update_utc).days == 365  # type: ignore[operator]

    # Keys: 0600 files.
    for name in ("x1", "x2", "e7", "r7"):
        mode = stat.S_IMODE((files.directory / "keys" / f"{name}.key").stat().st_mode)
        assert mode == 0o600, name


def test_every_certificate_passes_pkilint_as_its_type(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    result = run(files, clock, entropy)
    # The lint hook refused nothing; what it accepted is NOTICE/INFO only.
    for state in result.states:
        assert all(n.split()[0] in ("NOTICE", "INFO") for n in state.lint_accepted)
    x1_state = next(s for s in result.states if s.step.id == "x1")
    assert any("ca_certificate_no_digital_signature_bit" in n for n in x1_state.lint_accepted)
    records = read_records(files.audit_log)
    assert records[1]["lint_accepted"] == x1_state.lint_accepted
    x1 = load(files.out("root-x1.pem"))
    findings = certificate_findings(x1, ROOT)
    assert {severity for severity, _ in findings} <= {"NOTICE", "INFO"}


def test_second_run_is_already_done_and_changes_no_output(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    run(files, clock, entropy)
    before = snapshot(files.directory)
    clock.advance(3600)
    lines: list[str] = []
    result = run(files, clock, entropy, lines)
    assert [s.status for s in result.states] == [ALREADY_DONE] * len(STEPS)
    assert all(": already done: " in line for line in lines[:-1])
    assert snapshot(files.directory) == before  # issuers file rewritten byte for byte

    records = read_records(files.audit_log)
    events = [r["event"] for r in records]
    assert events == ["start", *["step"] * 7, "finish"] * 2
    first_run, second_run = records[0]["run"], records[-1]["run"]
    assert first_run != second_run
    assert [r["status"] for r in records if r["event"] == "step" and r["run"] == second_run] == [
        ALREADY_DONE
    ] * 7
    assert records[-1]["already_done"] == STEPS and records[-1]["done"] == []


def test_audit_record_content(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    run(files, clock, entropy)
    records = read_records(files.audit_log)
    config_sha256 = hashlib.sha256(files.config.read_bytes()).hexdigest()
    assert {r["config_sha256"] for r in records} == {config_sha256}
    assert {r["format"] for r in records} == {"certmint-ceremony-audit/1"}
    assert {r["time"] for r in records} == {"2026-02-01T09:30:00Z"}  # the injected clock

    e7_record = next(r for r in records if r.get("step") == "e7")
    e7_path = files.out("e7.pem")
    e7 = load(e7_path)
    spki = e7.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert e7_record["status"] == DONE
    assert e7_record["kind"] == "intermediate"
    assert e7_record["spki_sha256"] == hashlib.sha256(spki).hexdigest()
    der = e7.public_bytes(serialization.Encoding.DER)
    assert e7_record["cert_sha256"] == hashlib.sha256(der).hexdigest()
    assert e7_record["serial"] == f"{e7.serial_number:x}"
    assert e7_record["outputs"] == {"out/e7.pem": hashlib.sha256(e7_path.read_bytes()).hexdigest()}
    key_path = str((files.directory / "keys" / "e7.key").resolve())
    assert e7_record["key_id"] == f"file:{key_path}"
    assert e7_record["key"] == {
        "id": f"file:{key_path}",
        "algorithm": "ecdsa-p384",
        "generated": True,
    }
    x1_key = str((files.directory / "keys" / "x1.key").resolve())
    assert e7_record["signed_by"] == f"file:{x1_key}"
    assert e7_record["inputs"]["issuer"] == "x1"
    assert e7_record["inputs"]["validity_days"] == 1095
    assert e7_record["not_before"] == "2026-02-01T09:30:00Z"
    assert e7_record["subject"] == "CN=certmint Ceremony E7,O=certmint,C=XX"

    crl_record = next(r for r in records if r.get("step") == "x1-crl")
    assert crl_record["crl_number"] == 1 and crl_record["revoked"] == []
    assert crl_record["key_id"] == f"file:{x1_key}"

    finish = records[-1]
    assert finish["event"] == "finish" and finish["done"] == STEPS
    issuers_sha = hashlib.sha256(files.issuers_file.read_bytes()).hexdigest()
    assert finish["issuers_file"] == {"out/issuers.toml": issuers_sha}
    # The PIN never reaches the log (here: no PIN at all, file keys).
    assert "pin" not in files.audit_log.read_text().lower().replace("pin_file", "")


def _assert_refused(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy, message: str
) -> None:
    before = snapshot(files.directory)
    with pytest.raises(CeremonyError) as exc:
        run(files, clock, entropy)
    assert str(exc.value) == message
    assert snapshot(files.directory) == before  # nothing created, nothing rewritten
    last = read_records(files.audit_log)[-1]
    assert last["event"] == "refused" and message.endswith(last["reason"])


def test_swapped_certificate_is_refused_and_nothing_changes(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    run(files, clock, entropy)
    files.out("e7.pem").write_bytes(files.out("r7.pem").read_bytes())
    _assert_refused(
        files,
        clock,
        entropy,
        "step e7: out/e7.pem is for CN=certmint Ceremony R7,O=certmint,C=XX, "
        "the ceremony file says CN=certmint Ceremony E7,O=certmint,C=XX",
    )


def test_edited_ceremony_file_is_refused_before_any_step_runs(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    run(files, clock, entropy)
    # A new step at the end AND a changed URL in an early one: the mismatch
    # stops the run before the new step is carried out.
    text = files.config.read_text().replace(f"{PUBLIC_BASE}/x1.crl", f"{PUBLIC_BASE}/new.crl", 1)
    text += (
        '\n[[step]]\nkind = "crl"\nid = "x2-crl"\nissuer = "x2"\ncrl = "out/x2.crl"\n'
        "number = 1\nnext_update_days = 30\n"
    )
    files.config.write_text(text)
    _assert_refused(
        files,
        clock,
        entropy,
        "step e7: out/e7.pem carries other CRL/caIssuers URLs than the ceremony file",
    )
    assert not files.out("x2.crl").exists()


def test_output_whose_issuer_is_missing_is_refused(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    run(files, clock, entropy)
    files.out("root-x1.pem").unlink()
    _assert_refused(
        files,
        clock,
        entropy,
        "step e7: out/e7.pem exists but x1, which e7 depends on, is still to do; "
        "move it away or restore the earlier outputs",
    )


def test_certificate_without_its_key_is_refused(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    run(files, clock, entropy)
    key = files.directory / "keys" / "r7.key"
    key.unlink()
    message = f"step r7: out/r7.pem exists but its key (file {key.resolve()}) does not"
    _assert_refused(files, clock, entropy, message)


def test_key_file_readable_by_others_is_refused(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    run(files, clock, entropy)
    key = (files.directory / "keys" / "x2.key").resolve()
    os.chmod(key, 0o644)
    _assert_refused(files, clock, entropy, f"step x2: key file {key} has mode 0644; chmod 600 it")


def test_interrupted_run_reuses_the_key_and_finishes(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    run(files, clock, entropy)
    r7_key = load_private_key(files.directory / "keys" / "r7.key")
    # As if the first run had stopped after generating R7's key.
    for name in ("r7.pem", "r7-cross-x2.pem"):
        files.out(name).unlink()
    lines: list[str] = []
    result = run(files, clock, entropy, lines)
    assert result.status("r7") == DONE and result.status("r7-x2") == DONE
    assert result.status("e7") == ALREADY_DONE
    assert any(line.startswith("intermediate r7: reused rsa-2048 key file ") for line in lines)
    r7 = load(files.out("r7.pem"))
    assert r7.public_key() == r7_key.public_key()
    record = [r for r in read_records(files.audit_log) if r.get("step") == "r7"][-1]
    assert record["key"]["generated"] is False
    assert "reusing the key already there" in record["notes"]


def test_lint_refusal_signs_nothing(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    # A CRL URL on an internal name: pkilint's cabf.internal_domain_name
    # (BR 7.1.2.11.1 via 7.1.2.10) is an ERROR, so E7 must never be signed.
    text = files.config.read_text().replace(
        f"{PUBLIC_BASE}/x1.crl", "http://crl.internal/x1.crl", 1
    )
    files.config.write_text(text)
    with pytest.raises(CeremonyError) as exc:
        run(files, clock, entropy)
    assert str(exc.value).startswith("step e7: intermediate e7 failed lint: ERROR ")
    assert "internal_domain_name" in str(exc.value)
    assert files.out("root-x1.pem").exists() and not files.out("e7.pem").exists()
    assert read_records(files.audit_log)[-1]["event"] == "refused"


ROOT_CROSS_CEREMONY = f"""
[ceremony]
name = "root cross-sign"
audit_log = "audit.jsonl"
issuers_file = "out/issuers.toml"

[[step]]
kind = "root"
id = "x1"
certificate = "out/root-x1.pem"
validity_days = 7305
subject = {{ country = "XX", organization = "certmint", common_name = "Root X1" }}
key = {{ algorithm = "rsa-3072", file = "keys/x1.key" }}

[[step]]
kind = "root"
id = "x2"
certificate = "out/root-x2.pem"
validity_days = 3000
subject = {{ country = "XX", organization = "certmint", common_name = "Root X2" }}
key = {{ algorithm = "ecdsa-p384", file = "keys/x2.key" }}

[[step]]
kind = "intermediate"
id = "e7"
issuer = "x2"
certificate = "out/e7.pem"
validity_days = 1095
crl_url = "{PUBLIC_BASE}/x2.crl"
ca_issuers_url = "{PUBLIC_BASE}/x2.der"
subject = {{ country = "XX", organization = "certmint", common_name = "E7" }}
key = {{ algorithm = "ecdsa-p256", file = "keys/e7.key" }}

[[step]]
kind = "cross-sign"
id = "x2-by-x1"
subject_step = "x2"
issuer = "x1"
certificate = "out/x2-cross-x1.pem"
validity_days = 2000
crl_url = "{PUBLIC_BASE}/x1.crl"
ca_issuers_url = "{PUBLIC_BASE}/x1.der"

[[step]]
kind = "crl"
id = "x2-crl"
issuer = "x2"
crl = "out/x2.crl.pem"
number = 7
next_update_days = 90
revoked = [
  {{ serial = "0badc0de", reason = "cACompromise", revoked_at = 2026-01-15T00:00:00Z }},
  {{ serial = "0a:0b", revoked_at = 2026-01-16T00:00:00Z }},
]
"""


def test_cross_sign_of_a_root_gives_intermediates_an_alternate_chain(
    tmp_path: Path, clock: FakeClock, entropy: SeededEntropy
) -> None:
    # ISRG Root X2 cross-signed by X1: E7 under X2 has the alternate chain
    # [E7, X2-by-X1], which ends at X1.
    (tmp_path / "ceremony.toml").write_text(ROOT_CROSS_CEREMONY)
    files = CeremonyFiles(
        directory=tmp_path,
        config=tmp_path / "ceremony.toml",
        audit_log=tmp_path / "audit.jsonl",
        issuers_file=tmp_path / "out" / "issuers.toml",
    )
    result = run(files, clock, entropy)
    assert [s.status for s in result.states] == [DONE] * 5
    x1, x2 = load(files.out("root-x1.pem")), load(files.out("root-x2.pem"))
    cross = load(files.out("x2-cross-x1.pem"))
    cross.verify_directly_issued_by(x1)
    assert cross.subject == x2.subject and cross.public_key() == x2.public_key()
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length is None
    issuers = files.issuers_file.read_text()
    assert 'alternate_chains = [["e7.pem", "x2-cross-x1.pem"]]' in issuers
    # roots[0] is the first issuer's root (X2 here), so /roots/0 anchors the TLS chain.
    assert 'roots = ["root-x2.pem", "root-x1.pem"]' in issuers

    # A PEM CRL listing two CA certificates, one with cACompromise (BR 7.2.2).
    crl = x509.load_pem_x509_crl(files.out("x2.crl.pem").read_bytes())
    assert {entry.serial_number for entry in crl} == {0x0BADC0DE, 0x0A0B}
    reasons = {
        entry.serial_number: entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        for entry in crl
        if entry.extensions
    }
    assert reasons == {0x0BADC0DE: x509.ReasonFlags.ca_compromise}
    assert run(files, clock, entropy).status("x2-crl") == ALREADY_DONE


def test_a_second_concurrent_run_is_refused(
    files: CeremonyFiles, clock: FakeClock, entropy: SeededEntropy
) -> None:
    import fcntl

    files.audit_log.touch(mode=0o600)
    with files.audit_log.open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as another run would
        with pytest.raises(CeremonyError) as exc:
            run(files, clock, entropy)
    assert str(exc.value) == f"audit log: another ceremony run holds {files.audit_log.resolve()}"
    assert not (files.directory / "out").exists()
    assert run(files, clock, entropy).status("x1") == DONE  # once the other run is over
