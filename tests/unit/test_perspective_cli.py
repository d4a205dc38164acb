"""certmint-ca's multi-perspective flags: ``va-perspective`` and ``serve
--remote-va``; refusals are one line and exit status 2, before anything
listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from certmint.ca.cli import main

SECRET = b"0123456789abcdef0123456789abcdef"
SECRET_FLAGS = ("--remote-va-secret-file", "{secret}")


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


def serve(tmp_path: Path, *extra: str) -> list[str]:
    return ["serve", "--data-dir", str(tmp_path / "data"), *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--remote-va", "r1=http://127.0.0.1:1"], "--remote-va needs --remote-va-secret-file"),
        (
            ["--remote-va-secret-file", "{secret}"],
            "--remote-va-secret-file needs at least one --remote-va",
        ),
        (
            ["--remote-va", "r1", "--remote-va-secret-file", "{secret}"],
            "--remote-va must look like REGION=http://HOST:PORT, not 'r1'",
        ),
        (
            ["--remote-va", "r1=ftp://x", "--remote-va-secret-file", "{secret}"],
            "--remote-va must look like REGION=http://HOST:PORT",
        ),
        (
            ["--remote-va", "r 1=http://x", "--remote-va-secret-file", "{secret}"],
            "region must be 1-64 letters",
        ),
        (
            ["--remote-va", "a=http://x", "--remote-va", "a=http://y", *SECRET_FLAGS],
            "each --remote-va needs its own region name",
        ),
        (
            ["--remote-va", "primary=http://x", "--remote-va-secret-file", "{secret}"],
            "each --remote-va needs its own region name",
        ),
        (
            ["--remote-va", "a=http://x", "--remote-va-secret-file", "{missing}"],
            "cannot read secret file",
        ),
        (
            ["--remote-va", "a=http://x", *SECRET_FLAGS, "--remote-va-timeout", "0"],
            "--remote-va-timeout must be positive",
        ),
    ],
)
def test_serve_remote_va_flags_refused(
    tmp_path: Path,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = [a.format(secret=secret_file, missing=tmp_path / "missing") for a in extra]
    assert main(serve(tmp_path, *args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("certmint-ca: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--listen", "nowhere"], "--listen must look like HOST:PORT"),
        (["--listen", "127.0.0.1:70000"], "--listen must look like HOST:PORT"),
        (["--region", "bad region"], "region must be 1-64 letters"),
        (["--secret-file", "{short}"], "at least 32 bytes, not 5"),
    ],
)
def test_va_perspective_refusals(
    tmp_path: Path,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"short")
    flags = {"--listen": "127.0.0.1:0", "--region": "r1", "--secret-file": str(secret_file)}
    for name, value in zip(extra[::2], extra[1::2], strict=True):
        flags[name] = value.format(short=short)
    argv = ["va-perspective"] + [item for pair in flags.items() for item in pair]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("certmint-ca: ") and message in err


def test_perspective_default_caa_identity_is_the_cas() -> None:
    # A perspective must judge CAA for the same issuer domain as the primary.
    from certmint.ca.config import CAConfig
    from certmint.ca.perspective_cli import DEFAULT_CAA_IDENTITY

    assert CAConfig.caa_identities == (DEFAULT_CAA_IDENTITY,)
