"""Other people's ACME clients validate with certmint-ca's VA over real sockets
(issue 4, acceptance 1): lego (Debian) through dns-01 for a wildcard and through
tls-alpn-01, certbot (PyPI) through dns-01 with its manual hooks, and lego for
an IP-address identifier through http-01 (RFC 8738).

Every client learns only the directory URL and the root fetched from the
management port. For lego's dns-01 the DNS is real: Knot is the authoritative
server for example.com, lego changes it with TSIG-signed RFC 2136 updates, and
the CA resolves through that Knot. For certbot's dns-01 the hooks publish the
TXT record through the challenge test server's management API, as Pebble's
challtestsrv users do, and the CA resolves through it (the harness default).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest
from cryptography import x509

from certmint.testing.harness import (
    LoopbackCA,
    assert_lint_clean,
    dns_names,
    format_logs,
    openssl_verify,
    print_logs,
    program_path,
    running_ca,
    split_pem_bundle,
)

from ..contract.authenticator_servers import Knot, run_knot
from .agent_support import write_script
from .conftest import PUBLIC_MANAGEMENT_BASE_URL, call_failed
from .test_certbot import run_certbot

pytestmark = pytest.mark.interop

CLIENT_TIMEOUT_SECONDS = 120
LOOPBACK = "127.0.0.1"
# miekg/dns, lego's DNS library, names TSIG algorithms as absolute names.
LEGO_TSIG_ALGORITHM = "hmac-sha256."


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def knot(tmp_path: Path) -> Iterator[Knot]:
    """Knot, authoritative for example.com, taking TSIG-signed RFC 2136 updates.

    One per test, not the contract suite's session server, so no TXT record
    another test left behind can answer a challenge here.
    """
    base = tmp_path / "knot"
    base.mkdir()
    with run_knot(base) as server:
        yield server


@pytest.fixture
def knot_ca(knot: Knot, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LoopbackCA]:
    """certmint-ca resolving through Knot: its dns-01 lookups see what lego
    published there, and nothing else."""
    with running_ca(
        tmp_path / "ca",
        serve_args=("--management-base-url", PUBLIC_MANAGEMENT_BASE_URL),
        dns_resolver=f"{LOOPBACK}:{knot.port}",
    ) as ca:
        yield ca
        if call_failed(request):
            print_logs(ca)
            print(knot.log_tail())


@pytest.fixture
def ip_ca(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LoopbackCA]:
    """certmint-ca that accepts loopback ip identifiers, which a public CA
    refuses as special-purpose addresses (RFC 8738 §3, BR 3.2.2.5)."""
    args = ("--management-base-url", PUBLIC_MANAGEMENT_BASE_URL, "--allow-private-ip-identifiers")
    with running_ca(tmp_path / "ca", serve_args=args) as ca:
        yield ca
        if call_failed(request):
            print_logs(ca)


# ------------------------------------------------------------------ lego


def run_lego(
    ca: LoopbackCA,
    home: Path,
    names: list[str],
    challenge: list[str],
    env: Mapping[str, str] | None = None,
) -> Path:
    """``lego ... run`` for ``names`` solving only through ``challenge`` flags;
    return its certificates folder. Fails the test with lego's output and the
    CA's logs if lego fails or outlives its deadline."""
    argv = [
        program_path("lego"),
        "--server", ca.directory_url,
        "--accept-tos",
        "--email", "test@example.com",
        *[arg for name in names for arg in ("--domains", name)],
        *challenge,
        "--path", str(home),
        "run",
    ]  # fmt: skip
    full_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LEGO_CA_CERTIFICATES": str(ca.root_pem_path),
        **(env or {}),
    }
    try:
        result = subprocess.run(
            argv,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT_SECONDS,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"lego did not finish in {CLIENT_TIMEOUT_SECONDS} s\n"
            f"--- stdout ---\n{exc.stdout!r}\n--- stderr ---\n{exc.stderr!r}\n{format_logs(ca)}"
        )
    if result.returncode != 0:
        pytest.fail(
            f"lego exited {result.returncode}\n$ {' '.join(argv)}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}\n{format_logs(ca)}"
        )
    return home / "certificates"


def lego_leaf(ca: LoopbackCA, certificates: Path, first_name: str) -> Path:
    """Verify the chain lego saved for ``first_name`` to the CA's root; return
    the leaf's path.

    lego names its files after the first domain, a wildcard's ``*`` written
    as ``_``, and saves leaf + issuer(s) in ``<name>.crt``, the issuer(s) alone
    in ``<name>.issuer.crt``.
    """
    stem = first_name.replace("*", "_")
    bundle = split_pem_bundle((certificates / f"{stem}.crt").read_bytes())
    assert len(bundle) >= 2, "lego saved no intermediate with the leaf"
    leaf_path = certificates / "leaf.pem"
    leaf_path.write_bytes(bundle[0])
    openssl_verify(ca.root_pem_path, leaf_path, certificates / f"{stem}.issuer.crt")
    return leaf_path


def test_lego_gets_wildcard_certificate_via_dns01_rfc2136(
    knot: Knot, knot_ca: LoopbackCA, tmp_path: Path
) -> None:
    # A wildcard is validated only by a DNS challenge (RFC 8555 §7.1.3); the
    # base name's authorization and the wildcard's share one TXT owner name,
    # _acme-challenge.wild.example.com (RFC 8555 §8.4).
    names = ["*.wild.example.com", "wild.example.com"]
    challenge = [
        "--dns", "rfc2136",
        "--dns.resolvers", f"{LOOPBACK}:{knot.port}",
        # lego's complete-propagation check asks the zone's NS (ns1.example.com
        # = 127.0.0.1) on port 53, where nothing of ours listens; its first
        # check, against the resolver above, still runs.
        "--dns.disable-cp",
    ]  # fmt: skip
    env = {
        "RFC2136_NAMESERVER": f"{LOOPBACK}:{knot.port}",
        "RFC2136_TSIG_KEY": knot.key_name,
        "RFC2136_TSIG_SECRET": knot.secret,
        "RFC2136_TSIG_ALGORITHM": LEGO_TSIG_ALGORITHM,
        "RFC2136_TTL": "60",
        "RFC2136_PROPAGATION_TIMEOUT": "30",
        "RFC2136_POLLING_INTERVAL": "1",
        # lego solves rfc2136 challenges one after another (each update
        # replaces the TXT RRset); its default pause between them is 60 s.
        "RFC2136_SEQUENCE_INTERVAL": "1",
    }
    certificates = run_lego(knot_ca, tmp_path / "lego", names, challenge, env)

    leaf_path = lego_leaf(knot_ca, certificates, names[0])
    assert_lint_clean(leaf_path)
    assert dns_names(leaf_path.read_bytes()) == set(names)
    # The answers really travelled through Knot as signed updates, and lego's
    # cleanup removed them again.
    signed_updates = [
        line
        for line in knot.log.read_text(errors="replace").splitlines()
        if "action update" in line and f"key '{knot.key_name}'" in line
    ]
    assert len(signed_updates) >= 2, knot.log_tail()  # one per authorization at least
    assert knot.txt_values("_acme-challenge.wild.example.com.") == set()


def test_lego_gets_certificate_via_tls_alpn01(loopback_ca: LoopbackCA, tmp_path: Path) -> None:
    # lego's own TLS server answers on the port the CA's VA connects to; the
    # challenge test server leaves that port free (running_ca's default).
    names = ["alpn.interop.example.com"]
    challenge = ["--tls", "--tls.port", f"{LOOPBACK}:{loopback_ca.tlsalpn01_port}"]
    certificates = run_lego(loopback_ca, tmp_path / "lego", names, challenge)

    leaf_path = lego_leaf(loopback_ca, certificates, names[0])
    assert_lint_clean(leaf_path)
    assert dns_names(leaf_path.read_bytes()) == set(names)


def test_lego_49_cannot_order_an_ip_identifier_and_the_ca_refuses_its_dns_one(
    ip_ca: LoopbackCA, tmp_path: Path
) -> None:
    """lego 4.9 (Debian's) predates its RFC 8738 support: it orders every
    ``--domains`` value as a "dns" identifier, so it cannot get an IP-address
    certificate (and with ``--csr`` it drops the CSR's iPAddress SANs and
    orders nothing). What it sends must be refused, not issued as a dNSName
    "127.0.0.1", which the TLS BRs forbid (§7.1.2.7.12: a dNSName is a
    hostname; an address goes in an iPAddress entry). certbot's IP
    certificate below is the positive case; when Debian's lego learns
    "ip" identifiers, this test fails and becomes a positive lego one."""
    home = tmp_path / "lego"
    argv = [
        program_path("lego"),
        "--server", ip_ca.directory_url,
        "--accept-tos",
        "--email", "test@example.com",
        "--domains", LOOPBACK,
        "--http", "--http.port", f"{LOOPBACK}:{ip_ca.http01_port}",
        "--path", str(home),
        "run",
    ]  # fmt: skip
    result = subprocess.run(
        argv,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LEGO_CA_CERTIFICATES": str(ip_ca.root_pem_path),
        },
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in output, output
    assert "use an identifier of type ip" in output, output
    assert not (home / "certificates" / f"{LOOPBACK}.crt").exists()


# ------------------------------------------------------------------ certbot


def dns_hooks(directory: Path, management_url: str, record: Path) -> tuple[Path, Path]:
    """``--manual-auth-hook`` / ``--manual-cleanup-hook`` scripts that publish
    and remove ``_acme-challenge.$CERTBOT_DOMAIN`` TXT ``$CERTBOT_VALIDATION``
    through the challenge test server's management API (python3 + urllib, no
    curl), appending what they did to ``record``."""
    directory.mkdir(parents=True, exist_ok=True)
    common = (
        "import json, os, urllib.request\n"
        "host = '_acme-challenge.' + os.environ['CERTBOT_DOMAIN'] + '.'\n"
        "def post(path, body):\n"
        f"    request = urllib.request.Request({management_url!r} + path,\n"
        "        data=json.dumps(body).encode(), method='POST')\n"
        "    with urllib.request.urlopen(request, timeout=5) as response:\n"
        "        assert response.status == 200, response.status\n"
        "def note(what):\n"
        f"    with open({str(record)!r}, 'a') as out:\n"
        "        out.write(what + ' ' + os.environ['CERTBOT_DOMAIN'] + '\\n')\n"
    )
    auth = write_script(
        directory / "auth-hook.py",
        common + "post('/set-txt', {'host': host, 'value': os.environ['CERTBOT_VALIDATION']})\n"
        "note('set')\n",
    )
    cleanup = write_script(
        directory / "cleanup-hook.py",
        common + "post('/clear-txt', {'host': host})\nnote('clear')\n",
    )
    return auth, cleanup


def txt_values(ca: LoopbackCA, name: str) -> set[str]:
    """What the challenge test server's DNS answers for TXT ``name`` now."""
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    response = dns.query.udp(query, LOOPBACK, timeout=2.0, port=ca.dns_port)
    return {
        b"".join(rdata.strings).decode()
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rdata in rrset
    }


def test_certbot_gets_ip_address_certificate_via_http01(ip_ca: LoopbackCA, tmp_path: Path) -> None:
    # RFC 8738 §3: certbot orders an "ip" identifier for --ip-address, and its
    # standalone server answers http-01 on the port the CA's VA connects to,
    # at the address itself (no DNS involved, RFC 8738 §7).
    home = tmp_path / "certbot"
    run_certbot(
        ip_ca,
        home,
        "certonly",
        "--standalone",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--http-01-port", str(ip_ca.http01_port),
        "--http-01-address", LOOPBACK,
        "--cert-name", "loopback-ip",
        "--ip-address", LOOPBACK,
        # Only the shortlived profile allows ip identifiers (as at Let's
        # Encrypt); certbot >= 4 sends it in newOrder (draft-ietf-acme-profiles).
        "--required-profile", "shortlived",
    )  # fmt: skip

    live = home / "config" / "live" / "loopback-ip"
    openssl_verify(ip_ca.root_pem_path, live / "cert.pem", live / "chain.pem")
    leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(LOOPBACK)]
    assert san.get_values_for_type(x509.DNSName) == []
    # shortlived: 160 hours, both ends included (RFC 5280 §4.1.2.5).
    period = leaf.not_valid_after_utc - leaf.not_valid_before_utc + timedelta(seconds=1)
    assert period == timedelta(hours=160)
    # No BR lint here: 127.0.0.1 is a reserved address, which the TLS BRs
    # forbid in a publicly trusted certificate (§7.1.2.7.12), so pkilint is
    # right to reject it; --allow-private-ip-identifiers is for private CAs.


def test_certbot_gets_wildcard_certificate_via_dns01_manual_hooks(
    loopback_ca: LoopbackCA, tmp_path: Path
) -> None:
    base = "certbot-dns.interop.example.com"
    names = [base, f"*.{base}"]
    home = tmp_path / "certbot"
    record = tmp_path / "hooks.log"
    auth, cleanup = dns_hooks(tmp_path / "hooks", loopback_ca.challtestsrv_management_url, record)
    run_certbot(
        loopback_ca,
        home,
        "certonly",
        "--manual",
        "--preferred-challenges", "dns",
        "--manual-auth-hook", str(auth),
        "--manual-cleanup-hook", str(cleanup),
        "--agree-tos",
        "--register-unsafely-without-email",
        "--cert-name", "certbot-dns",
        *[arg for name in names for arg in ("-d", name)],
    )  # fmt: skip

    live = home / "config" / "live" / "certbot-dns"
    openssl_verify(loopback_ca.root_pem_path, live / "cert.pem", live / "chain.pem")
    assert_lint_clean(live / "cert.pem")
    assert dns_names((live / "cert.pem").read_bytes()) == set(names)
    # certbot hands a wildcard's hook the base name (CERTBOT_DOMAIN), so both
    # authorizations published under the one owner name, and both were
    # cleaned up.
    assert sorted(record.read_text().splitlines()) == [
        f"clear {base}",
        f"clear {base}",
        f"set {base}",
        f"set {base}",
    ]
    assert txt_values(loopback_ca, f"_acme-challenge.{base}.") == set()
    # The CA asked the challenge test server for that TXT record: the
    # certificate came from dns-01, not another challenge.
    history = httpx.post(
        f"{loopback_ca.challtestsrv_management_url}/dns-request-history",
        content=json.dumps({"host": f"_acme-challenge.{base}"}),
        timeout=5.0,
    )
    assert history.status_code == 200, history.text
    asked = {entry.get("qtype") for entry in history.json()}
    assert "TXT" in asked, (history.json(), format_logs(loopback_ca))
