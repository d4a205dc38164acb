"""The ceremony with every key in SoftHSM2, and the ``certmint-ca ceremony run`` command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509

from certmint.ca.ceremony.audit import read_records
from certmint.ca.ceremony.config import CeremonyError, load_ceremony_config
from certmint.ca.ceremony.steps import ALREADY_DONE, DONE, Ceremony
from certmint.ca.cli import main
from certmint.ca.issuance.pkcs11 import Pkcs11Signer
from certmint.testing.ceremony import (
    OFFLINE_PIN,
    OFFLINE_TOKEN,
    ONLINE_PIN,
    ONLINE_TOKEN,
    write_ceremony,
)
from certmint.testing.clock import FakeClock
from certmint.testing.entropy import SeededEntropy
from certmint.testing.softhsm import SoftHsm

STEPS = 7


def test_hsm_ceremony_keys_stay_in_the_tokens_and_rerun_is_already_done(
    tmp_path: Path, hsm: SoftHsm, clock: FakeClock, entropy: SeededEntropy
) -> None:
    files = write_ceremony(tmp_path / "c", hsm=hsm)
    config = load_ceremony_config(files.config)
    first = Ceremony(config, clock, entropy, report=lambda _line: None).run()
    assert [s.status for s in first.states] == [DONE] * STEPS
    assert not (files.directory / "keys").exists()  # no key ever touched the disk

    # The roots' keys are on the offline token, the intermediates' on the online one.
    e7 = x509.load_pem_x509_certificate(files.out("e7.pem").read_bytes())
    signer = Pkcs11Signer(hsm.module_path, ONLINE_TOKEN, ONLINE_PIN, "e7")
    assert signer.public_key == e7.public_key()
    x1 = x509.load_pem_x509_certificate(files.out("root-x1.pem").read_bytes())
    assert Pkcs11Signer(hsm.module_path, OFFLINE_TOKEN, OFFLINE_PIN, "x1").public_key == (
        x1.public_key()
    )

    clock.advance(600)
    second = Ceremony(config, clock, entropy, report=lambda _line: None).run()
    assert [s.status for s in second.states] == [ALREADY_DONE] * STEPS

    records = read_records(files.audit_log)
    e7_records = [r for r in records if r.get("step") == "e7"]
    assert [r["status"] for r in e7_records] == [DONE, ALREADY_DONE]
    key = e7_records[0]["key"]
    assert key["id"] == f"pkcs11:token={ONLINE_TOKEN};object=e7;type=private"
    assert key["token"] == ONLINE_TOKEN and key["generated"] is True
    assert key["protection"] == {
        "sensitive": True,
        "always_sensitive": True,
        "extractable": False,
        "never_extractable": True,
        "local": True,
    }
    assert e7_records[0]["signed_by"] == f"pkcs11:token={OFFLINE_TOKEN};object=x1;type=private"
    log = files.audit_log.read_text()
    assert OFFLINE_PIN not in log and ONLINE_PIN not in log

    issuers = files.issuers_file.read_text()
    assert f'token = "{ONLINE_TOKEN}", label = "e7", pin_file = "../pins/online.pin"' in issuers
    assert OFFLINE_TOKEN not in issuers  # the online CA never learns of the root token


def test_wrong_pin_stops_before_anything_is_made(
    tmp_path: Path, hsm: SoftHsm, clock: FakeClock, entropy: SeededEntropy
) -> None:
    files = write_ceremony(tmp_path / "c", hsm=hsm)
    pin_file = files.directory / "pins" / "offline.pin"
    pin_file.write_text("not-the-pin\n")
    with pytest.raises(CeremonyError) as exc:
        Ceremony(load_ceremony_config(files.config), clock, entropy, lambda _l: None).run()
    assert str(exc.value) == f"step x1: token '{OFFLINE_TOKEN}': wrong PIN"
    assert not (files.directory / "out").exists()


def test_pin_file_readable_by_others_is_refused(
    tmp_path: Path, hsm: SoftHsm, clock: FakeClock, entropy: SeededEntropy
) -> None:
    files = write_ceremony(tmp_path / "c", hsm=hsm)
    pin_file = (files.directory / "pins" / "online.pin").resolve()
    os.chmod(pin_file, 0o640)
    with pytest.raises(CeremonyError) as exc:
        Ceremony(load_ceremony_config(files.config), clock, entropy, lambda _l: None).run()
    assert str(exc.value) == (
        f"step e7: hsm online pin_file {pin_file} is readable by others (mode 0640); chmod 600 it"
    )


def test_cli_runs_the_ceremony_and_prints_one_line_per_step(
    tmp_path: Path, hsm: SoftHsm, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_ceremony(tmp_path / "c", hsm=hsm)
    assert main(["ceremony", "run", str(files.config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("certmint-ca: ceremony 'certmint test ceremony' from ")
    assert out[1].startswith("certmint-ca: root x1: generated ecdsa-p384 key pkcs11:token=")
    assert out[-1] == (
        f"certmint-ca: ceremony finished: 7 done, 0 already done; audit log {files.audit_log}"
    )
    assert len(out) == 1 + STEPS + 2

    assert main(["ceremony", "run", str(files.config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(": already done: " in line for line in out) == STEPS


def test_cli_failure_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ceremony.toml"
    config.write_text('[ceremony]\nname = "x"\n')
    assert main(["ceremony", "run", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.err == "certmint-ca: ceremony: ceremony.toml: ceremony.audit_log: missing\n"
