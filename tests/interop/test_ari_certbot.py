"""certbot (PyPI) renews when certmint's ARI window (RFC 9773) says so.

Two fresh certificates: certbot's own rule (two thirds of the lifetime) would
renew neither. The operator moves one certificate's window into the past
through the management API; ``certbot renew`` fetches renewalInfo for both
over real sockets and renews exactly that one. (Debian's lego 4.9.1 predates
ARI, and certbot reads ARI but does not send ``replaces``: the ``replaces``
path over real sockets is tests/integration/test_ari_real_sockets.py.)
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from certmint.testing.harness import LoopbackCA, certificate_status

from .test_certbot import obtain, run_certbot

pytestmark = pytest.mark.interop

DUE = "ari-due.interop.example.com"
NOT_DUE = "ari-later.interop.example.com"


def _leaf(live: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())


def test_certbot_renews_only_the_certificate_whose_ari_window_has_come(
    loopback_ca: LoopbackCA, tmp_path: Path
) -> None:
    home = tmp_path / "certbot"
    due_live, later_live = obtain(loopback_ca, home, DUE), obtain(loopback_ca, home, NOT_DUE)
    due_before, later_before = _leaf(due_live), _leaf(later_live)

    # A window wholly before issuance: "renew now" (RFC 9773 §4.2).
    issued = due_before.not_valid_before_utc
    window = {
        "start": (issued - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (issued - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    response = httpx.post(
        f"{loopback_ca.management_url}/renewal-info/{due_before.serial_number:x}",
        json=window,
        timeout=5.0,
    )
    assert response.status_code == 200, response.text
    assert response.json()["RenewalWindow"]["source"] == "operator"

    run_certbot(
        loopback_ca,
        home,
        "renew",
        "--no-random-sleep-on-renew",
        "--http-01-port", str(loopback_ca.http01_port),
        "--http-01-address", "127.0.0.1",
    )  # fmt: skip

    due_after, later_after = _leaf(due_live), _leaf(later_live)
    assert due_after.serial_number != due_before.serial_number, "certbot did not renew"
    assert later_after.serial_number == later_before.serial_number, "renewed too early"
    assert certificate_status(loopback_ca, due_after.serial_number)["Status"] == "Valid"
    # certbot records when it may ask again: our Retry-After (six hours).
    conf = (home / "config" / "renewal" / f"{NOT_DUE}.conf").read_text()
    assert "ari_retry_after" in conf
    # Not renewed because ARI said "later", not because ARI failed (certbot
    # would then fall back to its own rule and log this warning).
    log = (home / "logs" / "letsencrypt.log").read_text(errors="replace")
    assert "An error occurred requesting ACME Renewal Information" not in log
