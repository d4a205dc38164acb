"""What each authenticator does beyond the shared contract: standalone's ports
and concurrency, webroot's file modes, manual's certbot hook environment, and
dns-rfc2136's credentials and TSIG handling against the real Knot server."""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path

import dns.name
import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from cryptography import x509

from certmint.client.authenticators.base import ChallengeTask
from certmint.client.authenticators.dns_rfc2136 import Rfc2136Authenticator
from certmint.client.authenticators.manual import ManualAuthenticator
from certmint.client.authenticators.standalone import StandaloneAuthenticator
from certmint.client.authenticators.webroot import WebrootAuthenticator
from certmint.client.errors import ClientError
from certmint.protocol.challenges import ACME_TLS_ALPN_PROTOCOL
from certmint.testing.clock import FakeClock
from tests.contract.authenticator_servers import (  # noqa: F401 - fixtures
    ZONE,
    Knot,
    knot_server,
)
from tests.contract.test_authenticator_contract import http01_visible, make_task


@pytest.fixture
def knot(request: pytest.FixtureRequest) -> Knot:
    server: Knot = request.getfixturevalue("knot_server")
    return server


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(4096)
    finally:
        connection.close()


# -- standalone ------------------------------------------------------------------


def test_standalone_port_in_use_names_the_port_and_the_flag() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        authenticator = StandaloneAuthenticator(http01_address="127.0.0.1", http01_port=port)
        with pytest.raises(ClientError) as raised:
            authenticator.perform([make_task("http-01", "a.example.com")])
    message = str(raised.value)
    assert str(port) in message and "--http-01-port" in message
    authenticator.cleanup([])


def test_standalone_tls_alpn_port_in_use_names_its_flag() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        authenticator = StandaloneAuthenticator(http01_address="127.0.0.1", tlsalpn01_port=port)
        with pytest.raises(ClientError) as raised:
            authenticator.perform([make_task("tls-alpn-01", "a.example.com")])
    assert str(port) in str(raised.value) and "--tls-alpn-01-port" in str(raised.value)


def test_standalone_serves_two_tokens_at_once_and_nothing_else() -> None:
    authenticator = StandaloneAuthenticator(http01_address="127.0.0.1", http01_port=0)
    first, second = make_task("http-01", "a.example.com"), make_task("http-01", "b.example.com")
    authenticator.perform([first, second])
    try:
        port = authenticator.http01_bound_port
        assert port is not None
        results: dict[str, bool] = {}

        def fetch(task_name: str, task: ChallengeTask) -> None:
            results[task_name] = http01_visible(lambda: port, task)

        threads = [
            threading.Thread(target=fetch, args=(name, task))
            for name, task in (("first", first), ("second", second))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5.0)
        assert results == {"first": True, "second": True}
        # Only exact challenge paths for tokens it was given.
        assert _get(port, "/.well-known/acme-challenge/" + "x" * 43)[0] == 404
        assert _get(port, "/")[0] == 404
        assert _get(port, "/.well-known/acme-challenge/../" + first.token)[0] == 404
        assert _get(port, f"/.well-known/acme-challenge/{first.token}?x=1")[1] == (
            first.validation_value.encode()
        )
    finally:
        authenticator.cleanup([first, second])
    # The port is free again at once.
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_standalone_starts_and_stops_fast() -> None:
    authenticator = StandaloneAuthenticator(
        http01_address="127.0.0.1", http01_port=0, tlsalpn01_port=0
    )
    tasks = [make_task("http-01", "a.example.com"), make_task("tls-alpn-01", "b.example.com")]
    started = time.monotonic()
    authenticator.perform(tasks)
    authenticator.cleanup(tasks)
    # No polling loops and no sleeps: both listeners come and go in milliseconds.
    assert time.monotonic() - started < 0.5


def test_standalone_tls_alpn_refuses_unknown_names() -> None:
    authenticator = StandaloneAuthenticator(http01_address="127.0.0.1", tlsalpn01_port=0)
    task = make_task("tls-alpn-01", "a.example.com")
    authenticator.perform([task])
    try:
        port = authenticator.tlsalpn01_bound_port
        assert port is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols([ACME_TLS_ALPN_PROTOCOL])
        for sni in ("other.example.com", None):
            with (
                socket.create_connection(("127.0.0.1", port), 2.0) as raw,
                pytest.raises(ssl.SSLError),
                context.wrap_socket(raw, server_hostname=sni),
            ):
                pass
    finally:
        authenticator.cleanup([task])


def test_standalone_tls_alpn_for_an_ip_answers_its_reverse_name() -> None:
    """RFC 8738 §6: the validator's SNI is the reverse-DNS name of the address,
    and the certificate carries the address as an iPAddress SAN."""
    authenticator = StandaloneAuthenticator(http01_address="127.0.0.1", tlsalpn01_port=0)
    task = make_task("tls-alpn-01", "192.0.2.7")
    authenticator.perform([task])
    try:
        port = authenticator.tlsalpn01_bound_port
        assert port is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols([ACME_TLS_ALPN_PROTOCOL])
        with (
            socket.create_connection(("127.0.0.1", port), 2.0) as raw,
            context.wrap_socket(raw, server_hostname="7.2.0.192.in-addr.arpa") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        sans = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        assert sans.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.7")]
    finally:
        authenticator.cleanup([task])


def test_standalone_without_an_address_listens_everywhere() -> None:
    authenticator = StandaloneAuthenticator(http01_port=0)
    task = make_task("http-01", "a.example.com")
    authenticator.perform([task])
    try:
        assert http01_visible(lambda: authenticator.http01_bound_port, task)
    finally:
        authenticator.cleanup([task])


def test_standalone_refuses_unsupported_preferences() -> None:
    with pytest.raises(ClientError):
        StandaloneAuthenticator(preferred=("dns-01",))


# -- webroot ------------------------------------------------------------------------


def test_webroot_modes_and_leaves_what_it_did_not_create(tmp_path: Path) -> None:
    root = tmp_path / "site"
    (root / ".well-known").mkdir(parents=True)  # the site already has one
    (root / ".well-known" / "security.txt").write_text("contact")
    authenticator = WebrootAuthenticator({"a.example.com": str(root)})
    task = make_task("http-01", "a.example.com")
    old_umask = os.umask(0o077)
    try:
        authenticator.perform([task])
    finally:
        os.umask(old_umask)
    challenge_dir = root / ".well-known" / "acme-challenge"
    answer = challenge_dir / task.token
    assert answer.read_text() == task.validation_value
    assert stat.S_IMODE(answer.stat().st_mode) == 0o644
    assert stat.S_IMODE(challenge_dir.stat().st_mode) == 0o755
    authenticator.cleanup([task])
    assert not challenge_dir.exists()
    assert (root / ".well-known" / "security.txt").read_text() == "contact"


def test_webroot_keeps_a_challenge_dir_others_write_into(tmp_path: Path) -> None:
    authenticator = WebrootAuthenticator({"a.example.com": str(tmp_path)})
    task = make_task("http-01", "a.example.com")
    authenticator.perform([task])
    foreign = tmp_path / ".well-known" / "acme-challenge" / "someone-elses"
    foreign.write_text("x")
    authenticator.cleanup([task])
    assert foreign.exists()
    assert not (foreign.parent / task.token).exists()


def test_webroot_errors_are_one_sentence(tmp_path: Path) -> None:
    authenticator = WebrootAuthenticator({"a.example.com": str(tmp_path / "missing")})
    with pytest.raises(ClientError, match="not a directory"):
        authenticator.perform([make_task("http-01", "a.example.com")])
    with pytest.raises(ClientError, match=r"no webroot given for b\.example\.com"):
        authenticator.perform([make_task("http-01", "b.example.com")])
    hostile = replace(
        make_task("http-01", "a.example.com"), token="../../etc/passwd-xxxxxxxxxxxxxxxxxxx"
    )
    authenticator = WebrootAuthenticator({"a.example.com": str(tmp_path)})
    with pytest.raises(ClientError, match="malformed challenge token"):
        authenticator.perform([hostile])
    assert list(tmp_path.iterdir()) == []


# -- manual -------------------------------------------------------------------------


def _recording_hook(path: Path, out_dir: Path, prefix: str, extra: str = "") -> str:
    path.write_text(
        "#!/bin/sh\n"
        f'out="{out_dir}/{prefix}-$CERTBOT_DOMAIN"\n'
        'env | grep -E "^(CERTBOT_|HOME=)" | sort > "$out"\n'
        f"{extra}"
    )
    path.chmod(0o700)
    return str(path)


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_manual_hooks_get_certbots_environment(tmp_path: Path) -> None:
    auth = _recording_hook(tmp_path / "auth.sh", tmp_path, "auth", 'echo "id-$CERTBOT_DOMAIN"\n')
    cleanup = _recording_hook(tmp_path / "cleanup.sh", tmp_path, "cleanup")
    authenticator = ManualAuthenticator(
        auth_hook=auth,
        cleanup_hook=cleanup,
        interactive=False,
        prompt=lambda message: None,
        environment={"PATH": os.defpath + ":/usr/bin:/bin", "HOME": "/home/u", "CERTBOT_X": "1"},
    )
    http, dns01 = make_task("http-01", "a.example.com"), make_task("dns-01", "b.example.com")
    authenticator.perform([http, dns01])
    first = _read_env(tmp_path / "auth-a.example.com")
    assert first == {
        "CERTBOT_DOMAIN": "a.example.com",
        "CERTBOT_VALIDATION": http.key_authorization,
        "CERTBOT_TOKEN": http.token,
        "CERTBOT_REMAINING_CHALLENGES": "1",
        "CERTBOT_ALL_DOMAINS": "a.example.com,b.example.com",
        "HOME": "/home/u",
    }
    second = _read_env(tmp_path / "auth-b.example.com")
    assert second["CERTBOT_VALIDATION"] == dns01.validation_value
    assert second["CERTBOT_REMAINING_CHALLENGES"] == "0"
    assert "CERTBOT_TOKEN" not in second
    authenticator.cleanup([http, dns01])
    after = _read_env(tmp_path / "cleanup-a.example.com")
    assert after == {**first, "CERTBOT_AUTH_OUTPUT": "id-a.example.com"}
    assert _read_env(tmp_path / "cleanup-b.example.com")["CERTBOT_AUTH_OUTPUT"] == (
        "id-b.example.com"
    )


def test_manual_hook_failure_gives_exit_code_and_last_stderr_line(tmp_path: Path) -> None:
    authenticator = ManualAuthenticator(
        auth_hook="echo first >&2; echo 'zone is locked' >&2; exit 7",
        cleanup_hook=None,
        interactive=False,
        prompt=lambda message: None,
    )
    with pytest.raises(ClientError) as raised:
        authenticator.perform([make_task("dns-01", "a.example.com")])
    message = str(raised.value)
    assert "exit code 7" in message and message.endswith("zone is locked")
    assert "a.example.com" in message


def test_manual_hook_timeout_is_bounded(tmp_path: Path) -> None:
    # The hook's own child holds the output pipe: unless the whole process
    # group is killed, reading the output would wait for it.
    authenticator = ManualAuthenticator(
        auth_hook="(sleep 20; echo late) & sleep 30",
        cleanup_hook=None,
        interactive=False,
        prompt=lambda message: None,
        hook_timeout=0.3,
    )
    started = time.monotonic()
    with pytest.raises(ClientError, match=r"did not finish within 0\.3 seconds"):
        authenticator.perform([make_task("http-01", "a.example.com")])
    assert time.monotonic() - started < 3.0


def test_manual_without_hooks_non_interactive_refuses() -> None:
    authenticator = ManualAuthenticator(
        auth_hook=None, cleanup_hook=None, interactive=False, prompt=lambda message: None
    )
    with pytest.raises(ClientError) as raised:
        authenticator.perform([make_task("http-01", "a.example.com")])
    assert str(raised.value) == (
        "manual authentication needs --manual-auth-hook when running non-interactively"
    )


def test_manual_interactive_shows_what_to_publish() -> None:
    shown: list[str] = []
    authenticator = ManualAuthenticator(
        auth_hook=None, cleanup_hook=None, interactive=True, prompt=shown.append
    )
    http, dns01 = make_task("http-01", "a.example.com"), make_task("dns-01", "b.example.com")
    authenticator.perform([http, dns01])
    assert len(shown) == 2
    assert http.validation_value in shown[0]
    assert f"http://a.example.com/.well-known/acme-challenge/{http.token}" in shown[0]
    assert "_acme-challenge.b.example.com." in shown[1]
    assert dns01.validation_value in shown[1]
    authenticator.perform([http, dns01])  # already shown: no second prompt
    assert len(shown) == 2
    authenticator.cleanup([http, dns01])


# -- dns-rfc2136 ----------------------------------------------------------------------


def test_rfc2136_wrong_tsig_secret_is_a_clear_error(knot: Knot, tmp_path: Path) -> None:
    wrong = "c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1zZXJ2ZXJzLWtleQ=="
    credentials = knot.credentials(tmp_path / "bad.ini", secret=wrong)
    authenticator = Rfc2136Authenticator(credentials)
    task = make_task("dns-01", "a.example.com")
    with pytest.raises(ClientError) as raised:
        authenticator.perform([task])
    message = str(raised.value)
    assert "TSIG" in message and "dns_rfc2136_secret" in message, knot.log_tail()
    assert task.validation_value not in knot.txt_values(task.validation_name)
    authenticator.cleanup([task])


def test_rfc2136_unknown_key_name_is_a_clear_error(knot: Knot, tmp_path: Path) -> None:
    path = knot.credentials(tmp_path / "c.ini")
    path.write_text(path.read_text().replace(knot.key_name, "nobody-knows."))
    with pytest.raises(ClientError, match="TSIG"):
        Rfc2136Authenticator(path).perform([make_task("dns-01", "a.example.com")])


def test_rfc2136_refuses_credentials_others_can_read(knot: Knot, tmp_path: Path) -> None:
    path = knot.credentials(tmp_path / "open.ini")
    path.chmod(0o644)
    with pytest.raises(ClientError, match=r"unsafe permissions.*chmod 600"):
        Rfc2136Authenticator(path)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("dns_rfc2136_server = ns1.example.com", "must be an IP address"),
        ("dns_rfc2136_algorithm = HMAC-SHA3", "must be one of"),
        ("dns_rfc2136_port = http", "not a port number"),
        ("dns_rfc2136_secret =", "has no dns_rfc2136_secret"),
        ("just words", "expected 'name = value'"),
    ],
)
def test_rfc2136_credentials_errors(knot: Knot, tmp_path: Path, line: str, error: str) -> None:
    path = knot.credentials(tmp_path / "c.ini")
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(ClientError, match=error):
        Rfc2136Authenticator(path)


def test_rfc2136_zone_not_served_is_a_clear_error(knot: Knot, tmp_path: Path) -> None:
    authenticator = Rfc2136Authenticator(knot.credentials(tmp_path / "c.ini"))
    with pytest.raises(ClientError, match=r"not authoritative for www\.example\.org"):
        authenticator.perform([make_task("dns-01", "www.example.org")])


def test_rfc2136_cleanup_deletes_only_its_own_values(knot: Knot, tmp_path: Path) -> None:
    record = f"_acme-challenge.shared.{ZONE}"
    # Someone else's TXT at the same name (another client's challenge).
    keyring = dns.tsigkeyring.from_text({knot.key_name: (knot.algorithm.lower(), knot.secret)})
    foreign = dns.update.UpdateMessage(
        ZONE, keyring=keyring, keyname=dns.name.from_text(knot.key_name)
    )
    foreign.add("_acme-challenge.shared", 60, "TXT", "someone-else")
    dns.query.tcp(foreign, "127.0.0.1", timeout=2.0, port=knot.port)
    # A wildcard and its base name share one record name: two values at once.
    base, wildcard = make_task("dns-01", f"shared.{ZONE}"), make_task("dns-01", f"shared.{ZONE}")
    authenticator = Rfc2136Authenticator(knot.credentials(tmp_path / "c.ini"))
    authenticator.perform([base, wildcard])
    assert knot.txt_values(record) == {
        "someone-else",
        base.validation_value,
        wildcard.validation_value,
    }
    authenticator.cleanup([base])
    assert knot.txt_values(record) == {"someone-else", wildcard.validation_value}
    authenticator.cleanup([wildcard])
    assert knot.txt_values(record) == {"someone-else"}


def test_rfc2136_propagation_wait_uses_the_injected_clock(knot: Knot, tmp_path: Path) -> None:
    clock = FakeClock()
    authenticator = Rfc2136Authenticator(
        knot.credentials(tmp_path / "c.ini"), propagation_seconds=60, clock=clock
    )
    task = make_task("dns-01", f"slow.{ZONE}")
    started = time.monotonic()
    authenticator.perform([task])
    try:
        assert clock.monotonic() >= 60
        assert time.monotonic() - started < 5.0
    finally:
        authenticator.cleanup([task])
