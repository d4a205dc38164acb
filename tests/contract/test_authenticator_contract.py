"""One contract suite for every authenticator (DESIGN.md §4): perform makes the
answer visible to a real checker, cleanup removes it, and the edges (cleanup
after a failed perform, perform twice, cleanup twice) are safe.

The checkers are real: http-01 is fetched over a socket (from the standalone
responder, or from nginx serving the webroot); tls-alpn-01 is a TLS handshake
offering ``acme-tls/1`` with SNI whose certificate is checked for the RFC 8737
acmeIdentifier; dns-01 is a TXT query to the authoritative Knot server.
"""

from __future__ import annotations

import http.client
import secrets
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from certmint.client.authenticators import AUTHENTICATORS
from certmint.client.authenticators.base import Authenticator, ChallengeTask
from certmint.client.authenticators.dns_rfc2136 import Rfc2136Authenticator
from certmint.client.authenticators.manual import ManualAuthenticator
from certmint.client.authenticators.standalone import StandaloneAuthenticator
from certmint.client.authenticators.webroot import WebrootAuthenticator
from certmint.client.errors import ClientError
from certmint.protocol.challenges import (
    ACME_TLS_ALPN_PROTOCOL,
    ID_PE_ACME_IDENTIFIER,
    dns01_record_name,
    dns01_txt_value,
    http01_path,
    key_authorization,
    tls_alpn01_extension_value,
)
from tests.contract.authenticator_servers import (  # noqa: F401 - fixtures
    Knot,
    Nginx,
    knot_server,
    nginx_server,
)

THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"  # RFC 7638 §3.1's example
CHECK_TIMEOUT = 2.0


def make_task(challenge_type: str, domain: str) -> ChallengeTask:
    """A task as the flow builds it, with a fresh token."""
    token = secrets.token_urlsafe(32)
    key_authz = key_authorization(token, THUMBPRINT)
    if challenge_type == "http-01":
        name, value = http01_path(token), key_authz
    elif challenge_type == "dns-01":
        name, value = dns01_record_name(domain), dns01_txt_value(key_authz)
    else:
        name, value = domain, key_authz
    return ChallengeTask(
        domain=domain,
        challenge_type=challenge_type,
        token=token,
        key_authorization=key_authz,
        validation_name=name,
        validation_value=value,
    )


# -- real checkers -----------------------------------------------------------


def http01_visible(port: Callable[[], int | None], task: ChallengeTask) -> bool:
    where = port()
    if where is None:
        return False
    connection = http.client.HTTPConnection("127.0.0.1", where, timeout=CHECK_TIMEOUT)
    try:
        connection.request("GET", http01_path(task.token), headers={"Host": task.domain})
        response = connection.getresponse()
        body = response.read(4096)
    except ConnectionRefusedError:
        return False
    finally:
        connection.close()
    return response.status == 200 and body == task.validation_value.encode()


def tlsalpn01_visible(port: Callable[[], int | None], task: ChallengeTask) -> bool:
    """An RFC 8737 §3 validator: ALPN acme-tls/1, SNI, one SAN, the critical
    acmeIdentifier extension holding SHA-256 of the key authorization."""
    where = port()
    if where is None:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed by design (RFC 8737 §3)
    context.set_alpn_protocols([ACME_TLS_ALPN_PROTOCOL])
    try:
        with (
            socket.create_connection(("127.0.0.1", where), CHECK_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=task.validation_name) as tls,
        ):
            alpn = tls.selected_alpn_protocol()
            der = tls.getpeercert(binary_form=True)
    except (ConnectionRefusedError, ssl.SSLError):
        return False
    assert alpn == ACME_TLS_ALPN_PROTOCOL
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [task.domain]
    extension = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    return extension.value.value == tls_alpn01_extension_value(task.key_authorization)


# -- one case per authenticator and challenge type -----------------------------


@dataclass
class Case:
    authenticator: Authenticator
    challenge_type: str
    domains: tuple[str, ...]
    visible: Callable[[ChallengeTask], bool]
    unsupported: str  # a challenge type this authenticator refuses
    log: Callable[[], str] = lambda: ""

    def tasks(self) -> list[ChallengeTask]:
        return [make_task(self.challenge_type, domain) for domain in self.domains]


CASES = ["standalone-http-01", "standalone-tls-alpn-01", "webroot", "manual", "dns-rfc2136"]


def _manual_hooks(directory: Path, webroot: Path) -> tuple[str, str]:
    auth = directory / "auth.sh"
    auth.write_text(
        "#!/bin/sh\nset -e\n"
        f'dir="{webroot}/.well-known/acme-challenge"\n'
        'mkdir -p "$dir"\n'
        'printf %s "$CERTBOT_VALIDATION" > "$dir/$CERTBOT_TOKEN"\n'
        'echo "wrote $CERTBOT_TOKEN"\n'
    )
    cleanup = directory / "cleanup.sh"
    cleanup.write_text(f'#!/bin/sh\nrm -f "{webroot}/.well-known/acme-challenge/$CERTBOT_TOKEN"\n')
    for script in (auth, cleanup):
        script.chmod(0o700)
    return str(auth), str(cleanup)


def _no_prompt(message: str) -> None:
    raise AssertionError(f"unexpected prompt: {message}")


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    kind = request.param
    domains = ("a.example.com", "b.example.com")
    if kind.startswith("standalone"):
        standalone = StandaloneAuthenticator(
            http01_address="127.0.0.1", http01_port=0, tlsalpn01_port=0
        )
        if kind == "standalone-http-01":
            port = lambda: standalone.http01_bound_port  # noqa: E731
            yield Case(standalone, "http-01", domains, lambda t: http01_visible(port, t), "dns-01")
        else:
            port = lambda: standalone.tlsalpn01_bound_port  # noqa: E731
            yield Case(
                standalone, "tls-alpn-01", domains, lambda t: tlsalpn01_visible(port, t), "dns-01"
            )
        standalone.cleanup([])  # nothing left running, whatever the test did
        return
    if kind in ("webroot", "manual"):
        nginx: Nginx = request.getfixturevalue("nginx_server")
        served = lambda t: http01_visible(lambda: nginx.port, t)  # noqa: E731
        if kind == "webroot":
            webroot = WebrootAuthenticator({d: str(nginx.webroot) for d in domains})
            yield Case(webroot, "http-01", domains, served, "dns-01", nginx.log_tail)
        else:
            auth, cleanup = _manual_hooks(tmp_path, nginx.webroot)
            manual = ManualAuthenticator(
                auth_hook=auth, cleanup_hook=cleanup, interactive=False, prompt=_no_prompt
            )
            yield Case(manual, "http-01", domains, served, "tls-alpn-01", nginx.log_tail)
        return
    knot: Knot = request.getfixturevalue("knot_server")
    rfc2136 = Rfc2136Authenticator(knot.credentials(tmp_path / "rfc2136.ini"))
    yield Case(
        rfc2136,
        "dns-01",
        ("a.example.com", "example.com"),
        lambda t: t.validation_value in knot.txt_values(t.validation_name),
        "http-01",
        knot.log_tail,
    )


# -- the contract ----------------------------------------------------------------


def test_registry_names_the_class(case: Case) -> None:
    authenticator = case.authenticator
    assert AUTHENTICATORS[authenticator.name] is type(authenticator)
    assert case.challenge_type in authenticator.challenge_types
    assert case.unsupported not in authenticator.challenge_types


def test_perform_makes_answers_visible_and_cleanup_removes_them(case: Case) -> None:
    tasks = case.tasks()
    assert not any(case.visible(task) for task in tasks)
    case.authenticator.perform(tasks)
    try:
        for task in tasks:
            assert case.visible(task), f"{task.domain} not visible\n{case.log()}"
    finally:
        case.authenticator.cleanup(tasks)
    for task in tasks:
        assert not case.visible(task), f"{task.domain} still visible\n{case.log()}"


def test_cleanup_after_failed_perform_is_safe(case: Case) -> None:
    good = case.tasks()[0]
    bad = make_task(case.unsupported, "c.example.com")
    with pytest.raises(ClientError) as raised:
        case.authenticator.perform([good, bad])
    assert str(raised.value) and "\n" not in str(raised.value)
    case.authenticator.cleanup([good, bad])
    assert not case.visible(good), case.log()


def test_cleanup_without_perform_is_safe(case: Case) -> None:
    case.authenticator.cleanup(case.tasks())


def test_perform_twice_and_cleanup_twice_are_safe(case: Case) -> None:
    tasks = case.tasks()
    case.authenticator.perform(tasks)
    case.authenticator.perform(tasks)
    try:
        assert all(case.visible(task) for task in tasks), case.log()
    finally:
        case.authenticator.cleanup(tasks)
    case.authenticator.cleanup(tasks)
    assert not any(case.visible(task) for task in tasks), case.log()


def test_cleanup_removes_only_the_given_tasks(case: Case) -> None:
    first, second = case.tasks()
    case.authenticator.perform([first, second])
    try:
        case.authenticator.cleanup([first])
        assert not case.visible(first), case.log()
        assert case.visible(second), case.log()
    finally:
        case.authenticator.cleanup([second])
    assert not case.visible(second), case.log()
