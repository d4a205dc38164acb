"""certbot with External Account Binding keys made by `certmint-ca eab create`,
and the CRL each certificate points to, checked with openssl."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509

from certmint.testing.harness import LoopbackCA, program_path, running_ca

from .conftest import PUBLIC_MANAGEMENT_BASE_URL, call_failed
from .test_certbot import CLIENT_TIMEOUT_SECONDS, obtain, run_certbot

pytestmark = pytest.mark.interop


@pytest.fixture
def eab_ca(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LoopbackCA]:
    args = ("--management-base-url", PUBLIC_MANAGEMENT_BASE_URL, "--eab-required")
    with running_ca(tmp_path / "ca", serve_args=args) as ca:
        yield ca
        if call_failed(request):
            from certmint.testing.harness import print_logs

            print_logs(ca)


def create_eab_key(ca: LoopbackCA) -> tuple[str, str]:
    result = subprocess.run(
        [program_path("certmint-ca"), "eab", "create", "--data-dir", str(ca.data_dir)],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
        check=True,
    )
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    return fields["kid"], fields["hmac-key"]


def test_certbot_needs_and_uses_an_operator_made_eab_key(
    eab_ca: LoopbackCA, tmp_path: Path
) -> None:
    refused = subprocess.run(
        [
            program_path("certbot"), "register", "--non-interactive", "--agree-tos",
            "--register-unsafely-without-email", "--server", eab_ca.directory_url,
            "--config-dir", str(tmp_path / "refused" / "config"),
            "--work-dir", str(tmp_path / "refused" / "work"),
            "--logs-dir", str(tmp_path / "refused" / "logs"),
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "REQUESTS_CA_BUNDLE": str(eab_ca.root_pem_path),
        },
        capture_output=True, text=True, timeout=CLIENT_TIMEOUT_SECONDS, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "external account" in (refused.stdout + refused.stderr).lower()

    kid, hmac_key = create_eab_key(eab_ca)
    home = tmp_path / "certbot"
    run_certbot(
        eab_ca, home, "register", "--agree-tos", "--register-unsafely-without-email",
        "--eab-kid", kid, "--eab-hmac-key", hmac_key,
    )  # fmt: skip
    live = obtain(eab_ca, home, "eab.interop.example.com")
    assert (live / "fullchain.pem").read_text().count("BEGIN CERTIFICATE") == 2

    # The key is single-use: binding a second account to it is refused.
    with pytest.raises(pytest.fail.Exception):
        run_certbot(
            eab_ca, tmp_path / "second", "register", "--agree-tos",
            "--register-unsafely-without-email", "--eab-kid", kid, "--eab-hmac-key", hmac_key,
        )  # fmt: skip


def crl_path_of(cert: x509.Certificate) -> str:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    uri = points[0].full_name[0].value
    return urlsplit(str(uri)).path


def test_the_crl_a_certificate_names_lists_it_once_revoked(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A revocation shows in its CRL shard within a second (ca/crl_updater.py).
    args = (
        "--management-base-url",
        PUBLIC_MANAGEMENT_BASE_URL,
        "--crl-update-after-revocation",
        "1",
    )
    with running_ca(tmp_path / "ca", serve_args=args) as ca:
        home = tmp_path / "certbot"
        live = obtain(ca, home, "crl.interop.example.com")
        cert = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
        # The CRL DP names the operator's public host; the management port
        # is that host here, as DNS would make it in production.
        crl_url = ca.management_url + crl_path_of(cert)

        def fetch_crl(listing: bool = False) -> Path:
            # Bounded poll: the CRL updater publishes asynchronously.
            for _ in range(120):
                response = httpx.get(crl_url, timeout=10)
                if response.status_code == 200:
                    crl = x509.load_der_x509_crl(response.content)
                    listed = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
                    if listed is not None or not listing:
                        break
                else:
                    assert response.status_code == 503, response.text  # not built yet
                time.sleep(0.25)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/pkix-crl"
            path = tmp_path / "e1.crl"
            path.write_bytes(response.content)
            return path

        def openssl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["openssl", *args], capture_output=True, text=True, timeout=30, check=False
            )

        # Day one: a valid signed CRL that does not list the certificate.
        crl = fetch_crl()
        text = openssl("crl", "-inform", "DER", "-in", str(crl), "-noout", "-text")
        assert text.returncode == 0, text.stderr
        serial_hex = format(cert.serial_number, "X")
        assert serial_hex not in text.stdout.replace(":", "")

        run_certbot(
            ca, home, "revoke", "--cert-path", str(live / "cert.pem"),
            "--reason", "keycompromise", "--no-delete-after-revoke",
        )  # fmt: skip
        crl = fetch_crl(listing=True)
        text = openssl("crl", "-inform", "DER", "-in", str(crl), "-noout", "-text")
        assert serial_hex in text.stdout.replace(":", "").upper()
        assert "Key Compromise" in text.stdout

        pem_crl = tmp_path / "e1.crl.pem"
        converted = openssl("crl", "-inform", "DER", "-in", str(crl), "-out", str(pem_crl))
        assert converted.returncode == 0, converted.stderr
        bundle = tmp_path / "root-and-crl.pem"
        bundle.write_text(ca.root_pem_path.read_text() + pem_crl.read_text())
        verdict = openssl(
            "verify", "-crl_check", "-CAfile", str(bundle),
            "-untrusted", str(live / "chain.pem"), str(live / "cert.pem"),
        )  # fmt: skip
        assert verdict.returncode != 0
        assert "revoked" in (verdict.stdout + verdict.stderr).lower()
        if call_failed(request):
            from certmint.testing.harness import print_logs

            print_logs(ca)
