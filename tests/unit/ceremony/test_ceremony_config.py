"""The ceremony file is read strictly: every mistake is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from certmint.ca.ceremony.config import (
    CeremonyConfigError,
    CertificateStep,
    CrlStep,
    load_ceremony_config,
)
from certmint.testing.ceremony import ceremony_toml, write_ceremony

GOOD = ceremony_toml(hsm=None)


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "ceremony.toml"
    path.write_text(text)
    load_ceremony_config(path)


def test_the_example_ceremony_reads_back(tmp_path: Path) -> None:
    files = write_ceremony(tmp_path, hsm=None)
    config = load_ceremony_config(files.config)
    assert [s.id for s in config.steps] == ["x1", "x2", "e7", "r7", "e7-x2", "r7-x2", "x1-crl"]
    e7 = config.step("e7")
    assert isinstance(e7, CertificateStep) and e7.key is not None
    assert e7.key.file == (tmp_path / "keys" / "e7.key").resolve()  # relative to the file
    assert e7.certificate == (tmp_path / "out" / "e7.pem").resolve()
    assert e7.issuer == "x1" and e7.issuing
    crl = config.step("x1-crl")
    assert isinstance(crl, CrlStep) and crl.number == 1 and crl.revoked == ()
    assert config.audit_log == (tmp_path / "audit.jsonl").resolve()
    assert len(config.sha256) == 64


def _replace(old: str, new: str, count: int = 1) -> str:
    assert GOOD.count(old) >= count, old
    return GOOD.replace(old, new, count)


CASES = [
    # (what, text, expected message after "ceremony.toml: ")
    ("not TOML", GOOD + "\n[[step]\n", "not valid TOML"),
    ("no [ceremony]", GOOD.replace("[ceremony]", "[ceremonies]"), "ceremony: missing"),
    ("unknown top key", "colour = 1\n" + GOOD, "colour: unknown key"),
    (
        "unknown step key",
        _replace('kind = "root"\n', 'kind = "root"\ncolour = "red"\n'),
        "step[0] (x1).colour: unknown key",
    ),
    (
        "bad kind",
        _replace('kind = "root"', 'kind = "leaf"'),
        "step[0] (x1).kind: must be one of root, intermediate, cross-sign, crl",
    ),
    (
        "bad id",
        _replace('id = "x1"', 'id = "X 1"'),
        "step[0] (X 1).id: must be 1-32 of a-z, 0-9 and '-', starting with a letter or digit",
    ),
    (
        "duplicate id",
        _replace('id = "x2"', 'id = "x1"'),
        "step[1] (x1).id: 'x1' is used by an earlier step",
    ),
    (
        "weak algorithm",
        _replace('algorithm = "ecdsa-p384"', 'algorithm = "rsa-1024"'),
        "step[0] (x1).key.algorithm: must be one of ecdsa-p256, ecdsa-p384, rsa-2048, "
        "rsa-3072, rsa-4096",
    ),
    (
        "root too short",
        _replace("validity_days = 7305", "validity_days = 1000"),
        "step[0] (x1).validity_days: a root lasts 2922 to 9132 days (BR 7.1.2.1.1)",
    ),
    (
        "validity not an integer",
        _replace("validity_days = 7305", 'validity_days = "7305"'),
        "step[0] (x1).validity_days: must be an integer",
    ),
    (
        "issuer not earlier",
        _replace('issuer = "x1"', 'issuer = "r7"'),
        "step[2] (e7).issuer: 'r7' is not an earlier step",
    ),
    (
        "issuer not a root",
        GOOD.replace('subject_step = "e7"\nissuer = "x2"', 'subject_step = "x2"\nissuer = "e7"'),
        "step[4] (e7-x2).issuer: 'e7' is not a root step (intermediate)",
    ),
    (
        "cross-sign by itself",
        GOOD.replace('subject_step = "e7"', 'subject_step = "x2"'),
        "step[4] (e7-x2).subject_step: a root does not cross-sign itself",
    ),
    (
        "file and hsm",
        _replace('file = "keys/x1.key"', 'file = "keys/x1.key", hsm = "offline"'),
        "step[0] (x1).key.file: give either file = PATH or hsm = NAME with label = LABEL",
    ),
    (
        "no such hsm",
        _replace('file = "keys/x1.key"', 'hsm = "vault", label = "x1"'),
        "step[0] (x1).key.hsm: no [hsm.vault] table",
    ),
    (
        "https CRL URL",
        _replace('crl_url = "http://', 'crl_url = "https://'),
        "step[2] (e7).crl_url: must be an http:// URL (BR 7.1.2.10.3, 7.1.2.11.2)",
    ),
    (
        "missing CRL URL",
        GOOD.replace('crl_url = "http://ca.ceremony.example.com/x1.crl"\n', "", 1),
        "step[2] (e7).crl_url: missing",
    ),
    (
        "lowercase country",
        _replace('country = "XX"', 'country = "xx"'),
        "step[0] (x1).subject.country: must be a two-letter ISO 3166-1 code (BR 7.1.4.2)",
    ),
    (
        "CRL too long",
        _replace("next_update_days = 365", "next_update_days = 400"),
        "step[6] (x1-crl).next_update_days: at most 365 (BR 4.9.7)",
    ),
    (
        "naive time",
        _replace("validity_days = 7305", "validity_days = 7305\nnot_before = 2026-01-01T00:00:00"),
        "step[0] (x1).not_before: needs a time zone (e.g. 2026-01-01T00:00:00Z)",
    ),
    (
        "two steps, one file",
        _replace('certificate = "out/r7.pem"', 'certificate = "out/e7.pem"'),
        "step r7: e7.pem is also written by step e7",
    ),
    (
        "no steps",
        GOOD[: GOOD.index("[[step]]")],
        "step: no [[step]] given",
    ),
    (
        "bad revoked serial",
        GOOD + '\nrevoked = [{ serial = "xyz", revoked_at = 2026-01-01T00:00:00Z }]\n',
        "step[6] (x1-crl).revoked[0].serial: must be a positive hex serial of at most 20 octets",
    ),
    (
        "forbidden CA revocation reason",
        GOOD
        + '\nrevoked = [{ serial = "0a", reason = "certificateHold", '
        + "revoked_at = 2026-01-01T00:00:00Z }]\n",
        "step[6] (x1-crl).revoked[0].reason: must be one of keyCompromise, cACompromise, "
        "affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn (BR 7.2.2)",
    ),
]


@pytest.mark.parametrize(("what", "text", "message"), CASES, ids=[c[0] for c in CASES])
def test_config_errors_are_one_line_naming_the_key(
    tmp_path: Path, what: str, text: str, message: str
) -> None:
    with pytest.raises(CeremonyConfigError) as exc:
        _load(tmp_path, text)
    line = str(exc.value)
    assert "\n" not in line
    if what == "not TOML":
        assert line.startswith("ceremony.toml: not valid TOML")
    else:
        assert line == f"ceremony.toml: {message}"


def test_hsm_key_needs_a_label(tmp_path: Path) -> None:
    hsm_table = '[hsm.offline]\nmodule = "/x.so"\ntoken = "t"\npin_file = "p"\n\n'
    text = GOOD.replace("[[step]]", hsm_table + "[[step]]", 1)
    text = text.replace('file = "keys/x1.key"', 'hsm = "offline"', 1)
    with pytest.raises(CeremonyConfigError) as exc:
        _load(tmp_path, text)
    assert str(exc.value) == (
        "ceremony.toml: step[0] (x1).key.label: missing (the key's CKA_LABEL on the token)"
    )


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CeremonyConfigError) as exc:
        load_ceremony_config(tmp_path / "nope.toml")
    assert str(exc.value).endswith("nope.toml: cannot read: No such file or directory")
