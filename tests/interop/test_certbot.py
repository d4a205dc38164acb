"""certbot (latest from PyPI) obtains and revokes a certificate from certmint.

certbot learns only the directory URL and, through REQUESTS_CA_BUNDLE, the
root fetched from the management port; it answers http-01 itself
(``--standalone``) on the port the CA's VA connects to.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from certmint.testing.harness import (
    LoopbackCA,
    assert_lint_clean,
    certificate_status,
    dns_names,
    openssl_verify,
    program_path,
)

pytestmark = pytest.mark.interop

# Any name works: the CA's DNS is the challenge test server, which answers
# 127.0.0.1 for every A query, where certbot's standalone server listens.
NAME = "certbot.interop.example.com"
CLIENT_TIMEOUT_SECONDS = 120


def run_certbot(ca: LoopbackCA, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [
        program_path("certbot"),
        *args,
        "--non-interactive",
        "--server", ca.directory_url,
        "--config-dir", str(home / "config"),
        "--work-dir", str(home / "work"),
        "--logs-dir", str(home / "logs"),
    ]  # fmt: skip
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        # certbot talks to the CA through requests, which trusts this bundle.
        "REQUESTS_CA_BUNDLE": str(ca.root_pem_path),
    }
    result = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        log = home / "logs" / "letsencrypt.log"
        log_text = log.read_text(errors="replace")[-15_000:] if log.exists() else "(no log)"
        pytest.fail(
            f"certbot {args[0]} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}\n"
            f"--- letsencrypt.log (tail) ---\n{log_text}"
        )
    return result


def obtain(ca: LoopbackCA, home: Path, name: str) -> Path:
    run_certbot(
        ca,
        home,
        "certonly",
        "--standalone",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--http-01-port", str(ca.http01_port),
        "--http-01-address", "127.0.0.1",
        "-d", name,
    )  # fmt: skip
    live = home / "config" / "live" / name
    assert (live / "cert.pem").is_file(), f"certbot wrote no {live}/cert.pem"
    return live


def test_certbot_obtains_valid_lint_clean_certificate_and_revokes_it(
    loopback_ca: LoopbackCA, tmp_path: Path
) -> None:
    home = tmp_path / "certbot"
    live = obtain(loopback_ca, home, NAME)
    cert_pem = (live / "cert.pem").read_bytes()

    openssl_verify(loopback_ca.root_pem_path, live / "cert.pem", live / "chain.pem")
    assert_lint_clean(live / "cert.pem")
    assert dns_names(cert_pem) == {NAME}

    serial = x509.load_pem_x509_certificate(cert_pem).serial_number
    assert certificate_status(loopback_ca, serial).get("Status") == "Valid"

    run_certbot(
        loopback_ca,
        home,
        "revoke",
        "--cert-path", str(live / "cert.pem"),
        "--reason", "keycompromise",
        "--no-delete-after-revoke",
    )  # fmt: skip
    status = certificate_status(loopback_ca, serial)
    assert status.get("Status") == "Revoked", status
