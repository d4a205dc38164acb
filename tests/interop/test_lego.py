"""lego (Debian's package) obtains certificates from certmint over http-01.

lego learns only the directory URL and, through LEGO_CA_CERTIFICATES, the root
fetched from the management port; its own http-01 server listens on the port
the CA's VA connects to.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from certmint.testing.harness import (
    LoopbackCA,
    assert_lint_clean,
    dns_names,
    openssl_verify,
    program_path,
    split_pem_bundle,
)

pytestmark = pytest.mark.interop

CLIENT_TIMEOUT_SECONDS = 120


def run_lego(ca: LoopbackCA, home: Path, names: list[str], *extra: str) -> Path:
    """``lego ... run`` for ``names``; return its certificates folder."""
    argv = [
        program_path("lego"),
        "--server", ca.directory_url,
        "--accept-tos",
        "--email", "test@example.com",
        *[arg for name in names for arg in ("--domains", name)],
        "--http",
        "--http.port", f"127.0.0.1:{ca.http01_port}",
        "--path", str(home),
        *extra,
        "run",
    ]  # fmt: skip
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LEGO_CA_CERTIFICATES": str(ca.root_pem_path),
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
        pytest.fail(
            f"lego exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return home / "certificates"


def check_issued(ca: LoopbackCA, certificates: Path, names: list[str]) -> None:
    """The chain lego saved verifies to the root and the leaf is BR-clean."""
    # lego names files after the first domain and saves leaf + issuer(s) in
    # <name>.crt (its "bundle"), the issuer(s) alone in <name>.issuer.crt.
    bundle = split_pem_bundle((certificates / f"{names[0]}.crt").read_bytes())
    assert len(bundle) >= 2, "lego saved no intermediate with the leaf"
    leaf_path = certificates / "leaf.pem"
    leaf_path.write_bytes(bundle[0])
    issuer_path = certificates / f"{names[0]}.issuer.crt"

    openssl_verify(ca.root_pem_path, leaf_path, issuer_path)
    assert_lint_clean(leaf_path)
    assert dns_names(bundle[0]) == set(names)


def test_lego_obtains_certificate_for_one_name(loopback_ca: LoopbackCA, tmp_path: Path) -> None:
    names = ["lego.interop.example.com"]
    certificates = run_lego(loopback_ca, tmp_path / "lego", names)
    check_issued(loopback_ca, certificates, names)


def test_lego_obtains_rsa2048_certificate_for_two_names(
    loopback_ca: LoopbackCA, tmp_path: Path
) -> None:
    names = ["lego-a.interop.example.com", "lego-b.interop.example.com"]
    certificates = run_lego(loopback_ca, tmp_path / "lego", names, "--key-type", "rsa2048")
    check_issued(loopback_ca, certificates, names)
    leaf = x509.load_pem_x509_certificate((certificates / "leaf.pem").read_bytes())
    key = leaf.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
