"""Acceptance 3 (issue 5): certbot (PyPI) revokes one certificate with its
account and another with the certificate's own key; each serial appears in
the CRL shard its certificate names (the URL read from its CRL Distribution
Point) soon after; ``openssl crl`` parses the CRLs and ``openssl verify
-crl_check`` rejects the revoked leaves and accepts a good one; the
compromised key is then refused with ``badPublicKey``, for a new order's CSR
(certbot) and for a new account; and ``certmint-ca admin revoke`` on the
running CA's database reaches the CRLs the same way."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certmint.testing.acme_client import RawAcmeClient
from certmint.testing.harness import LoopbackCA, program_path, running_ca

from .conftest import PUBLIC_MANAGEMENT_BASE_URL, call_failed
from .test_certbot import CLIENT_TIMEOUT_SECONDS, obtain, run_certbot

pytestmark = pytest.mark.interop

# The CA publishes a revocation in its CRLs within this many seconds
# (serve --crl-update-after-revocation); four shards per issuer.
UPDATE_AFTER_SECONDS = 1
SHARDS = 4
# A bounded poll: the updater's timing is tested on a fake clock
# (tests/unit/test_crl_updater.py); here a slow machine must not flake.
POLL_ROUNDS = 120
POLL_PAUSE_SECONDS = 0.25


@pytest.fixture
def ca(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LoopbackCA]:
    args = (
        "--management-base-url", PUBLIC_MANAGEMENT_BASE_URL,
        "--crl-update-after-revocation", str(UPDATE_AFTER_SECONDS),
        "--crl-shards", str(SHARDS),
    )  # fmt: skip
    with running_ca(tmp_path / "ca", serve_args=args) as running:
        yield running
        if call_failed(request):
            from certmint.testing.harness import print_logs

            print_logs(running)


def crl_url(ca: LoopbackCA, cert: x509.Certificate) -> str:
    """The certificate's CRL DP names the operator's public host; here that
    host is the management port on loopback, as DNS would make it."""
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    (point,) = points
    assert point.full_name is not None
    uri = str(point.full_name[0].value)
    assert uri.startswith(f"{PUBLIC_MANAGEMENT_BASE_URL}/crl/e1/"), uri
    return ca.management_url + urlsplit(uri).path


def fetch_crl(url: str) -> x509.CertificateRevocationList | None:
    response = httpx.get(url, timeout=10)
    if response.status_code == 503:  # not built yet (the updater's first pass)
        return None
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(response.content)


def crl_listing(url: str, serial: int) -> tuple[bytes, float]:
    """Poll ``url`` until its CRL lists ``serial``: (DER, seconds it took)."""
    started = time.monotonic()
    for _ in range(POLL_ROUNDS):
        crl = fetch_crl(url)
        if crl is not None and crl.get_revoked_certificate_by_serial_number(serial) is not None:
            return crl.public_bytes(serialization.Encoding.DER), time.monotonic() - started
        time.sleep(POLL_PAUSE_SECONDS)
    pytest.fail(f"serial {serial:x} not in {url} after {POLL_ROUNDS} polls")


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def verify_with_crl(
    ca: LoopbackCA, live: Path, crl_der: bytes, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    crl_pem = tmp_path / f"{live.name}.crl.pem"
    crl = x509.load_der_x509_crl(crl_der)
    crl_pem.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return openssl(
        "verify", "-crl_check", "-CAfile", str(ca.root_pem_path), "-CRLfile", str(crl_pem),
        "-untrusted", str(live / "chain.pem"), str(live / "cert.pem"),
    )  # fmt: skip


def leaf(live: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())


def test_certbot_revocations_reach_the_right_crl_shard_and_block_the_key(
    ca: LoopbackCA, tmp_path: Path
) -> None:
    home = tmp_path / "certbot"
    by_account = obtain(ca, home, "by-account.revocation.example.com")
    by_key = obtain(ca, home, "by-key.revocation.example.com")
    kept = obtain(ca, home, "kept.revocation.example.com")

    # 1. With the account that ordered it (a kid JWS), no reason given.
    run_certbot(
        ca, home, "revoke", "--cert-path", str(by_account / "cert.pem"),
        "--no-delete-after-revoke",
    )  # fmt: skip
    # 2. With the certificate's own key (a jwk JWS): keyCompromise, key blocked.
    run_certbot(
        ca, home, "revoke", "--cert-path", str(by_key / "cert.pem"),
        "--key-path", str(by_key / "privkey.pem"), "--no-delete-after-revoke",
    )  # fmt: skip

    crls: dict[str, bytes] = {}
    for live, reason in ((by_account, None), (by_key, x509.ReasonFlags.key_compromise)):
        cert = leaf(live)
        url = crl_url(ca, cert)
        der, seconds = crl_listing(url, cert.serial_number)
        print(f"{live.name}: listed in {urlsplit(url).path} after {seconds:.2f} s")
        crls[live.name] = der
        crl = x509.load_der_x509_crl(der)
        # The shard's IDP names the very URL in the certificate (BR 7.2.2).
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical and idp.value.only_contains_user_certs
        assert [str(n.value) for n in idp.value.full_name or []] == [
            f"{PUBLIC_MANAGEMENT_BASE_URL}{urlsplit(url).path}"
        ]
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        assert entry is not None
        try:
            got = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            got = None  # unspecified(0) is never encoded (BR 7.2.2)
        assert got == reason

        # openssl parses it and lists the serial ...
        path = tmp_path / f"{live.name}.crl"
        path.write_bytes(der)
        text = openssl("crl", "-inform", "DER", "-noout", "-text", "-in", str(path))
        assert text.returncode == 0, text.stderr
        assert f"{cert.serial_number:X}" in text.stdout.replace(":", "").upper()
        # ... and refuses the revoked leaf with it.
        verdict = verify_with_crl(ca, live, der, tmp_path)
        assert verdict.returncode != 0, verdict.stdout
        assert "certificate revoked" in (verdict.stdout + verdict.stderr)

    # A certificate nobody revoked verifies against its own shard's CRL.
    kept_url = crl_url(ca, leaf(kept))
    kept_crl = None
    for _ in range(POLL_ROUNDS):
        kept_crl = fetch_crl(kept_url)
        if kept_crl is not None:
            break
        time.sleep(POLL_PAUSE_SECONDS)
    assert kept_crl is not None
    assert kept_crl.get_revoked_certificate_by_serial_number(leaf(kept).serial_number) is None
    kept_der = kept_crl.public_bytes(serialization.Encoding.DER)
    verdict = verify_with_crl(ca, kept, kept_der, tmp_path)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr

    # The compromised key: a new order whose CSR carries it is refused ...
    refused = certbot_with_csr(ca, home, tmp_path, by_key / "privkey.pem")
    said = refused.stdout + refused.stderr + _certbot_log(home)
    assert refused.returncode != 0
    assert "badPublicKey" in said, said[-4000:]
    # ... and so is a new account with it.
    assert asyncio.run(new_account_with(ca, by_key / "privkey.pem")) == 400

    # The operator revokes the kept one offline, on the running CA's
    # database; the running updater publishes it in that shard too.
    kept_serial = f"{leaf(kept).serial_number:x}"
    done = subprocess.run(
        [program_path("certmint-ca"), "admin", "revoke", "--data-dir", str(ca.data_dir),
         "--serial", kept_serial, "--reason", "privilegeWithdrawn"],
        capture_output=True, text=True, timeout=CLIENT_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("revoked (privilegeWithdrawn)")
    der, _ = crl_listing(kept_url, leaf(kept).serial_number)
    entry = x509.load_der_x509_crl(der).get_revoked_certificate_by_serial_number(
        leaf(kept).serial_number
    )
    assert entry is not None
    withdrawn = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert withdrawn == x509.ReasonFlags.privilege_withdrawn


def certbot_with_csr(
    ca: LoopbackCA, home: Path, tmp_path: Path, key_path: Path
) -> subprocess.CompletedProcess[str]:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    name = "again.revocation.example.com"
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    csr_path = tmp_path / "compromised.csr.der"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.DER))
    out = tmp_path / "csr-out"
    out.mkdir()
    return subprocess.run(
        [
            program_path("certbot"), "certonly", "--standalone", "--non-interactive",
            "--server", ca.directory_url, "--csr", str(csr_path),
            "--http-01-port", str(ca.http01_port), "--http-01-address", "127.0.0.1",
            "--cert-path", str(out / "cert.pem"), "--chain-path", str(out / "chain.pem"),
            "--fullchain-path", str(out / "fullchain.pem"),
            "--config-dir", str(home / "config"), "--work-dir", str(home / "work"),
            "--logs-dir", str(home / "logs"),
        ],
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "REQUESTS_CA_BUNDLE": str(ca.root_pem_path),
        },
        cwd=out,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
        check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _certbot_log(home: Path) -> str:
    log = home / "logs" / "letsencrypt.log"
    return log.read_text(errors="replace")[-20_000:] if log.exists() else ""


async def new_account_with(ca: LoopbackCA, key_path: Path) -> int:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    trust = ssl.create_default_context(cafile=str(ca.root_pem_path))
    async with httpx.AsyncClient(verify=trust, timeout=10) as http:
        client = RawAcmeClient(http, ca.directory_url, key=key)  # type: ignore[arg-type]
        await client.load_directory()
        response = await client.new_account()
        if response.status_code == 400:
            assert response.json()["type"] == "urn:ietf:params:acme:error:badPublicKey"
        return response.status_code
