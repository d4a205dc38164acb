"""The rest of certbot's flags on the ``certmint`` agent, and the person at
the terminal (issue 3), against certmint-ca on real sockets.

Each test runs ``certmint`` as a subprocess the way a user types it (see
``agent_support.Agent``): key types and sizes, ``--reuse-key``, ``--csr``,
``--preferred-chain``, External Account Binding, the account verbs, ``run``,
the one-line error messages, and finally an interactive ``certonly`` under a
pseudo-terminal that answers the prompts a person would.

Every issuance uses the standalone authenticator on the port the CA's VA
dials, so the challenge test server only serves DNS here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from certmint.testing.harness import LoopbackCA, program_path, running_ca

from .agent_support import RUN_TIMEOUT_SECONDS, Agent, AgentRun, CaUnderTest, current_version
from .test_agent_cli import _certmint_ca_status

pytestmark = pytest.mark.interop

TERMS_URL = "https://example.com/tos"
ROOT_X1 = "certmint Development Root X1"
ROOT_X2 = "certmint Development Root X2"
# How long the interactive run may take in all, and how long one read waits.
PTY_DEADLINE_SECONDS = 30.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaUnderTest]:
    """certmint-ca with terms of service (so registration must agree to them)."""
    serve_args = ("--chaos-authz-reuse", "0", "--terms-of-service", TERMS_URL)
    with running_ca(tmp_path_factory.mktemp("flags-ca"), serve_args=serve_args) as loopback:
        yield _certmint_ca_status(loopback)


@pytest.fixture
def agent(ca: CaUnderTest, tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(tmp_path / "agent", ca)
    try:
        yield agent
    finally:
        agent.stop_all()


def standalone(agent: Agent) -> tuple[str, ...]:
    return ("--standalone", "--http-01-port", str(agent.ca.http01_port))


def live_key_and_leaf(agent: Agent, name: str) -> tuple[PrivateKeyTypes, x509.Certificate]:
    """The live private key and leaf, checked to belong together."""
    live = agent.live(name)
    key = serialization.load_pem_private_key((live / "privkey.pem").read_bytes(), None)
    leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    assert key.public_key() == leaf.public_key(), "the live key does not match the certificate"
    return key, leaf


def top_issuer(fullchain_pem: bytes) -> str:
    """The issuer Common Name of the last certificate in a PEM chain."""
    top = x509.load_pem_x509_certificates(fullchain_pem)[-1]
    return str(top.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def public_der(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def assert_one_line_error(run: AgentRun, *contains: str) -> str:
    """certmint failed with exit 1 and one plain ``certmint: `` line on stderr."""
    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output, run.output
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("certmint: "), lines[0]
    for text in contains:
        assert text in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ keys


def test_rsa_key_type_and_size(agent: Agent) -> None:
    name = "rsa.example.com"
    agent.certonly(*standalone(agent), "-d", name, "--key-type", "rsa", "--rsa-key-size", "3072")
    key, _ = live_key_and_leaf(agent, name)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert (agent.archive(name) / "privkey1.pem").stat().st_mode & 0o777 == 0o600


def test_ecdsa_key_on_p384(agent: Agent) -> None:
    name = "p384.example.com"
    agent.certonly(
        *standalone(agent), "-d", name, "--key-type", "ecdsa", "--elliptic-curve", "secp384r1"
    )
    key, _ = live_key_and_leaf(agent, name)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP384R1)


def test_reuse_key_keeps_the_key_and_default_changes_it(agent: Agent) -> None:
    kept, fresh = "reuse.example.com", "fresh.example.com"
    agent.certonly(*standalone(agent), "-d", kept, "--reuse-key")
    agent.certonly(*standalone(agent), "-d", fresh)
    before = {name: public_der(live_key_and_leaf(agent, name)[0]) for name in (kept, fresh)}

    # The renewal reads --reuse-key back from renewal/<name>.conf.
    agent.renew("--force-renewal")
    for name in (kept, fresh):
        assert current_version(agent, name) == 2
    after = {name: public_der(live_key_and_leaf(agent, name)[0]) for name in (kept, fresh)}
    assert after[kept] == before[kept]
    assert after[fresh] != before[fresh]


# ------------------------------------------------------------------ --csr


def run_in(agent: Agent, cwd: Path, verb: str, *args: str) -> AgentRun:
    """``Agent.run`` in ``cwd`` (``--csr`` writes to the working directory)."""
    argv = agent.argv(verb, *args)
    result = subprocess.run(
        argv, cwd=cwd, env=agent.env(), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=RUN_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    run = AgentRun(tuple(argv), result.returncode, result.stdout, result.stderr)
    assert run.returncode == 0 and "Traceback" not in run.stderr, agent.describe(
        argv, run.returncode, run.stdout, run.stderr
    )
    return run


def test_csr_writes_certbots_numbered_files_and_nothing_in_live(agent: Agent) -> None:
    names = ["csr.example.com", "www.csr.example.com"]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    csr_path = agent.base / "request.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    cwd = agent.base / "cwd"
    cwd.mkdir()

    run_in(
        agent, cwd, "certonly", "--server", agent.ca.directory_url, "--agree-tos",
        "--register-unsafely-without-email", *standalone(agent), "--csr", str(csr_path),
    )  # fmt: skip
    assert sorted(p.name for p in cwd.iterdir()) == [
        "0000_cert.pem", "0000_chain.pem", "0001_chain.pem",
    ]  # fmt: skip
    cert_pem = (cwd / "0000_cert.pem").read_bytes()
    chain_pem = (cwd / "0000_chain.pem").read_bytes()
    leaf = x509.load_pem_x509_certificate(cert_pem)
    assert leaf.public_key() == key.public_key()  # the CSR's key, not a new one
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    # certbot's 0001_chain.pem is the full chain: leaf, then the intermediates.
    assert (cwd / "0001_chain.pem").read_bytes() == cert_pem + chain_pem
    assert leaf.issuer == x509.load_pem_x509_certificates(chain_pem)[0].subject
    live = agent.config_dir / "live"
    assert not live.exists() or not any(live.iterdir())
    assert not (agent.config_dir / "renewal").exists() or not any(
        (agent.config_dir / "renewal").iterdir()
    )


# ------------------------------------------------------------------ --preferred-chain


def test_preferred_chain_picks_the_cross_signed_intermediate(agent: Agent) -> None:
    default, preferred = "chain-default.example.com", "chain-x2.example.com"
    agent.certonly(*standalone(agent), "-d", default)
    agent.certonly(*standalone(agent), "-d", preferred, "--preferred-chain", ROOT_X2)
    assert top_issuer((agent.live(default) / "fullchain.pem").read_bytes()) == ROOT_X1
    assert top_issuer((agent.live(preferred) / "fullchain.pem").read_bytes()) == ROOT_X2
    assert top_issuer((agent.live(preferred) / "chain.pem").read_bytes()) == ROOT_X2
    # Same leaf issuer either way: only the intermediate's signer differs.
    _, leaf = live_key_and_leaf(agent, preferred)
    chain = x509.load_pem_x509_certificates((agent.live(preferred) / "chain.pem").read_bytes())
    assert leaf.issuer == chain[0].subject
    # The choice is remembered for renewal (certbot's preferred_chain).
    assert f"preferred_chain = {ROOT_X2}" in agent.renewal_conf(preferred).read_text()


# ------------------------------------------------------------------ EAB


@pytest.fixture
def eab_ca(tmp_path: Path) -> Iterator[LoopbackCA]:
    with running_ca(tmp_path / "eab-ca", serve_args=("--eab-required",)) as loopback:
        yield loopback


def test_eab_register_needs_and_uses_an_operator_key(eab_ca: LoopbackCA, tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent", _certmint_ca_status(eab_ca))
    server = ("--server", eab_ca.directory_url)
    refused = agent.run("register", *server, "--agree-tos", "-m", "a@example.com", expect=None)
    assert_one_line_error(refused, "external account binding")
    assert not list((agent.config_dir / "accounts").rglob("regr.json"))

    created = subprocess.run(
        [program_path("certmint-ca"), "eab", "create", "--data-dir", str(eab_ca.data_dir)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=True,
    )  # fmt: skip
    fields = dict(line.split(": ", 1) for line in created.stdout.splitlines() if ": " in line)
    kid, hmac_key = fields["kid"], fields["hmac-key"]
    agent.run(
        "register", *server, "--eab-kid", kid, "--eab-hmac-key", hmac_key,
        "--agree-tos", "-m", "a@example.com",
    )  # fmt: skip
    assert len(list((agent.config_dir / "accounts").rglob("regr.json"))) == 1
    shown = agent.run("show_account", *server)
    assert "a@example.com" in shown.stdout and "valid" in shown.stdout


# ------------------------------------------------------------------ account verbs


def test_account_verbs(agent: Agent) -> None:
    server = ("--server", agent.ca.directory_url)
    agent.run("register", *server, "--agree-tos", "-m", "a@example.com")
    shown = agent.run("show_account", *server)
    url = re.search(r"Account URL: (\S+)", shown.stdout)
    assert url is not None and url.group(1).startswith("https://"), shown.stdout
    assert re.search(r"Account status: valid$", shown.stdout, re.M), shown.stdout
    assert re.search(r"Email contact: a@example.com$", shown.stdout, re.M), shown.stdout

    agent.run("update_account", *server, "--email", "b@example.com")
    updated = agent.run("show_account", *server)
    assert re.search(r"Email contact: b@example.com$", updated.stdout, re.M), updated.stdout
    assert url.group(1) in updated.stdout  # the same account

    accounts = agent.config_dir / "accounts"
    account_dirs = [p.parent for p in accounts.rglob("regr.json")]
    assert len(account_dirs) == 1
    agent.run("unregister", *server)
    assert not account_dirs[0].exists()
    gone = agent.run("show_account", *server, expect=None)
    assert_one_line_error(gone, "no account")


def test_run_lists_installers_and_fails_in_one_line(agent: Agent) -> None:
    result = agent.run("run", "--server", agent.ca.directory_url, "-d", "x.example.com", expect=1)
    assert_one_line_error(result, "installers available", "certonly")


# ------------------------------------------------------------------ error lines


def test_failures_are_one_line(agent: Agent) -> None:
    unknown = ("--cert-name", "nothing-here.example.com")
    for verb in ("revoke", "delete"):
        failed = agent.run(verb, "--server", agent.ca.directory_url, *unknown, expect=None)
        assert_one_line_error(failed, "nothing-here.example.com")

    # The CA refuses the name (RFC 8555 §6.7 rejectedIdentifier): its detail
    # and the identifier reach the user, nothing is saved.
    bad = "bad_name.example.com"
    for verbose in ((), ("-v",)):
        rejected = agent.certonly(*standalone(agent), "-d", bad, *verbose, expect=1)
        assert_one_line_error(rejected, bad)
        if verbose:  # -v shows the steps too, still without a traceback
            assert f"… ordering a certificate for {bad}" in rejected.stdout, rejected.stdout
        assert not agent.live(bad).exists()

    # Without a terminal and without --email, registering (so a fresh
    # configuration, with no account yet): the exact sentence naming both flags.
    fresh = Agent(agent.base / "fresh", agent.ca)
    missing = fresh.run(
        "certonly", "--server", agent.ca.directory_url, "--agree-tos", *standalone(agent),
        "-d", "noemail.example.com", expect=1,
    )  # fmt: skip
    assert missing.stderr == (
        "certmint: an email address is needed: pass --email ADDRESS, or "
        "--register-unsafely-without-email\n"
    ), missing.stderr
    assert not list((fresh.config_dir / "accounts").rglob("regr.json"))


# ------------------------------------------------------------------ the terminal


class PtySession:
    """``certmint`` with stdin, stdout and stderr on a pseudo-terminal.

    Reads are bounded by one deadline for the whole session; what was read
    stays in ``transcript`` (ANSI codes and carriage returns removed in
    ``text``) so a failure shows what the person would have seen.
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        # A real size, as a terminal emulator sets it (rich wraps to it).
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
        os.close(slave)
        self.transcript = b""
        self._mark = 0  # where in ``text`` the next prompt is looked for
        self.deadline = time.monotonic() + PTY_DEADLINE_SECONDS

    @property
    def text(self) -> str:
        return _ANSI.sub("", self.transcript.decode(errors="replace"))

    def _read_some(self) -> bool:
        """Read what is there (waiting up to the deadline); False at end of output."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"certmint did not finish in time; saw:\n{self.text}")
        ready, _, _ = select.select([self.master], [], [], min(remaining, 1.0))
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.transcript += chunk
        return bool(chunk)

    def expect(self, prompt: str) -> None:
        """Wait until ``prompt`` is shown after everything already expected."""
        while prompt not in self.text[self._mark :]:
            if not self._read_some():
                raise AssertionError(f"certmint ended before asking {prompt!r}; saw:\n{self.text}")
        self._mark = self.text.index(prompt, self._mark) + len(prompt)

    def answer(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> int:
        """Read to the end of output and reap the process (both bounded)."""
        while self._read_some():
            pass
        remaining = max(self.deadline - time.monotonic(), 1.0)
        return self.process.wait(timeout=remaining)

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        os.close(self.master)


def test_person_at_the_terminal_is_asked_and_shown_the_steps(agent: Agent) -> None:
    name, other = "tty.example.com", "www.tty.example.com"
    argv = [
        program_path("certmint"), "certonly", "--server", agent.ca.directory_url,
        *standalone(agent), "--config-dir", str(agent.config_dir),
        "--work-dir", str(agent.work_dir), "--logs-dir", str(agent.logs_dir),
    ]  # fmt: skip
    env = {**agent.env(), "TERM": "xterm-256color"}
    session = PtySession(argv, env)
    try:
        session.expect("Domain names for the certificate")
        session.answer(f"{name}, {other}")
        session.expect("Email address")
        session.answer("person@example.com")
        session.expect(f"Do you agree to the terms of service at {TERMS_URL}? [y/N]")
        session.answer("y")
        code = session.finish()
    finally:
        session.close()
    shown = session.text
    assert code == 0, shown
    assert "Traceback" not in shown, shown
    # The steps as they happened, each with its tick once done.
    for step in (
        "✓ account registered",
        "✓ order created",
        f"✓ {name}: validated (http-01)",
        f"✓ {other}: validated (http-01)",
        "✓ order finalized",
        "✓ certificate downloaded",
    ):
        assert step in shown, f"{step!r} not shown:\n{shown}"
    # A step in progress is shown (spinner line) before its tick replaces it.
    assert (
        shown.index(f"ordering a certificate for {name}, {other}")
        < shown.index("✓ order created")
        < shown.index("✓ certificate downloaded")
    ), shown
    # Where the files are and when the certificate expires.
    assert str(agent.live(name) / "fullchain.pem") in shown, shown
    assert re.search(r"This certificate expires on \d{4}-\d{2}-\d{2}\.", shown), shown
    _, leaf = live_key_and_leaf(agent, name)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted([name, other])
    assert current_version(agent, name) == 1
    shown_account = agent.run("show_account", "--server", agent.ca.directory_url)
    assert "person@example.com" in shown_account.stdout
