"""certbot (from PyPI) and certmint share one configuration directory.

certbot obtains a certificate from a loopback certmint CA with ``--webroot``;
we read its lineage, renewal conf and account; we write a renewal and a new
lineage into its directory; certbot lists them as valid and renews on top of
what we wrote, and we read the result again.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certmint.client.storage import AccountStore, CertStore, Paths
from certmint.testing.harness import LoopbackCA, program_path, running_ca

pytestmark = pytest.mark.interop

NAMES = ("a.certbot-compat.example", "b.certbot-compat.example")
DEPLOY_HOOK = "echo 'deployed, really' # not a comment"
PRE_HOOK = 'echo "pre"'
CLIENT_TIMEOUT_SECONDS = 120


@pytest.fixture
def ca_and_webroot(tmp_path: Path) -> Iterator[tuple[LoopbackCA, Path]]:
    serve_args = ("--management-base-url", "http://ca.interop.example.com")
    with running_ca(tmp_path / "ca", serve_args=serve_args) as ca:
        webroot = tmp_path / "webroot"
        webroot.mkdir()
        # Serves the webroot where the CA's VA looks for http-01 answers.
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
                str(webroot),
                str(ca.http01_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield ca, webroot
        finally:
            server.terminate()
            server.wait(timeout=10)


def certbot(ca: LoopbackCA, home: Path, *args: str) -> str:
    argv = [
        program_path("certbot"), *args, "--non-interactive",
        "--config-dir", str(home / "config"), "--work-dir", str(home / "work"),
        "--logs-dir", str(home / "logs"),
    ]  # fmt: skip
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
           "REQUESTS_CA_BUNDLE": str(ca.root_pem_path)}  # fmt: skip
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_SECONDS,
        check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        log = home / "logs" / "letsencrypt.log"
        tail = log.read_text(errors="replace")[-8000:] if log.exists() else ""
        pytest.fail(f"certbot {args[0]} failed\n{result.stdout}\n{result.stderr}\n{tail}")
    return result.stdout + result.stderr


def assert_key_matches(paths: Paths, name: str) -> None:
    lineage = CertStore(paths).load(name)
    key = serialization.load_pem_private_key(lineage.privkey_path.read_bytes(), None)
    assert key.public_key() == lineage.certificate().public_key()


def test_certbot_and_certmint_share_a_config_directory(
    ca_and_webroot: tuple[LoopbackCA, Path], tmp_path: Path
) -> None:
    ca, webroot = ca_and_webroot
    home = tmp_path / "certbot"
    certbot(
        ca, home, "certonly", "--server", ca.directory_url, "--agree-tos",
        "--register-unsafely-without-email", "--webroot", "-w", str(webroot),
        "-d", NAMES[0], "-d", NAMES[1], "--key-type", "rsa", "--rsa-key-size", "2048",
        "--reuse-key", "--deploy-hook", DEPLOY_HOOK, "--pre-hook", PRE_HOOK,
    )  # fmt: skip
    paths = Paths(home / "config", home / "work", home / "logs")
    store = CertStore(paths)

    # certbot's files, read by us.
    lineage = store.load(NAMES[0])
    assert lineage.version == 1
    assert set(lineage.names()) == set(NAMES)
    params = lineage.params
    assert params.server == ca.directory_url
    assert params.authenticator == "webroot"
    assert params.webroot_map == dict.fromkeys(NAMES, str(webroot))
    assert (params.key_type, params.rsa_key_size, params.reuse_key) == ("rsa", 2048, True)
    assert (params.deploy_hook, params.pre_hook) == (DEPLOY_HOOK, PRE_HOOK)
    assert set(params.domains) == set(NAMES)
    [account] = AccountStore(paths).load_for_server(ca.directory_url)
    assert account.id == params.account
    assert account.account_url.startswith(ca.directory_url.rsplit("/", 1)[0])

    # Our writes into certbot's directory: a renewal and a new lineage.
    files = {
        "key_pem": lineage.privkey_path.read_bytes(),
        "cert_pem": lineage.cert_path.read_bytes(),
        "chain_pem": lineage.chain_path.read_bytes(),
        "fullchain_pem": lineage.fullchain_path.read_bytes(),
    }
    with store.lock():
        renewed = store.save_renewal(NAMES[0], **files, params=params)
        copy = store.save_new("copy.certbot-compat.example", **files, params=params)
    assert renewed.version == 2 and copy.version == 1
    listing = certbot(ca, home, "certificates")
    assert f"Certificate Name: {NAMES[0]}" in listing
    assert "Certificate Name: copy.certbot-compat.example" in listing
    assert "INVALID" not in listing and "invalid" not in listing.lower()

    # certbot renews on top of what we wrote (our renewal conf drives it) ...
    certbot(
        ca, home, "renew", "--cert-name", NAMES[0], "--force-renewal", "--no-random-sleep-on-renew"
    )  # fmt: skip
    # ... and we read its result.
    after = store.load(NAMES[0])
    assert after.version == 3
    assert after.cert_pem != lineage.cert_pem
    assert after.params.webroot_map == params.webroot_map
    assert after.params.deploy_hook == DEPLOY_HOOK
    assert_key_matches(paths, NAMES[0])
    assert_key_matches(paths, "copy.certbot-compat.example")
