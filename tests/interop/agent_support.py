"""Running the ``certmint`` agent as a user would, for the end-to-end tests.

:class:`Agent` runs ``certmint`` as a subprocess, always non-interactive
(``-n``), with its three directories under the test's temporary directory (so
it never needs root) and the test CA's root in ``REQUESTS_CA_BUNDLE``, the
way certbot users point it at a private CA. Every run is bounded in time; a
run that fails shows what the user would have seen plus the tail of
``<logs>/certmint.log``. No run may print a traceback: the issue asks for one
plain sentence per failure.

:class:`CaUnderTest` hides whether certmint-ca or Pebble is on the other end,
and the layout helpers check certbot's files and permissions.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certmint.testing.harness import program_path

RUN_TIMEOUT_SECONDS = 60.0
KILL_WAIT_SECONDS = 10.0
_LOG_TAIL_LINES = 60
KINDS = ("cert", "chain", "fullchain", "privkey")


@dataclass(frozen=True)
class CaUnderTest:
    """What the agent needs to know about the CA, and what a test may check."""

    kind: str  # "certmint-ca" | "pebble"
    directory_url: str
    # The root of the CA's HTTPS certificate, for REQUESTS_CA_BUNDLE.
    tls_root_pem_path: Path
    http01_port: int
    tlsalpn01_port: int
    challtestsrv_management_url: str
    format_logs: Callable[[], str]
    management_url: str = ""


@dataclass(frozen=True)
class AgentRun:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Agent:
    """``certmint`` with its directories in ``base`` against ``ca``."""

    base: Path
    ca: CaUnderTest
    extra_env: Mapping[str, str] = field(default_factory=dict)
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)

    @property
    def config_dir(self) -> Path:
        return self.base / "config"

    @property
    def work_dir(self) -> Path:
        return self.base / "work"

    @property
    def logs_dir(self) -> Path:
        return self.base / "logs"

    def live(self, name: str) -> Path:
        return self.config_dir / "live" / name

    def archive(self, name: str) -> Path:
        return self.config_dir / "archive" / name

    def renewal_conf(self, name: str) -> Path:
        return self.config_dir / "renewal" / f"{name}.conf"

    def argv(self, verb: str, *args: str) -> list[str]:
        return [
            program_path("certmint"), verb, *args, "-n",
            "--config-dir", str(self.config_dir),
            "--work-dir", str(self.work_dir),
            "--logs-dir", str(self.logs_dir),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base),
            "LANG": "C.UTF-8",
            "REQUESTS_CA_BUNDLE": str(self.ca.tls_root_pem_path),
        }
        env.update(self.extra_env)
        return env

    def certonly(self, *args: str, expect: int = 0) -> AgentRun:
        """``certonly`` against the CA, registering an account if needed."""
        return self.run(
            "certonly", "--server", self.ca.directory_url,
            "--agree-tos", "--register-unsafely-without-email", *args,
            expect=expect,
        )  # fmt: skip

    def renew(self, *args: str, expect: int = 0) -> AgentRun:
        return self.run("renew", "--no-random-sleep-on-renew", *args, expect=expect)

    def run(self, verb: str, *args: str, expect: int | None = 0) -> AgentRun:
        """Run to completion (bounded); check the exit code unless ``expect`` is None."""
        argv = self.argv(verb, *args)
        try:
            result = subprocess.run(
                argv,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"certmint {verb} did not finish in {RUN_TIMEOUT_SECONDS:.0f} s\n"
                f"{self.describe(argv, None, _text(exc.stdout), _text(exc.stderr))}"
            ) from None
        run = AgentRun(tuple(argv), result.returncode, result.stdout, result.stderr)
        if expect is not None and run.returncode != expect:
            raise AssertionError(
                f"certmint {verb} exited {run.returncode}, expected {expect}\n"
                + self.describe(argv, run.returncode, run.stdout, run.stderr)
            )
        # Every failure is one plain sentence, never a traceback (issue 3).
        assert "Traceback" not in run.stderr, self.describe(
            argv, run.returncode, run.stdout, run.stderr
        )
        return run

    def start(self, verb: str, *args: str) -> subprocess.Popen[str]:
        """Start ``certmint`` in a session of its own, for a test that kills it."""
        process = subprocess.Popen(
            self.argv(verb, *args),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def kill(self, process: subprocess.Popen[str]) -> None:
        """SIGKILL certmint itself (as a crash or ``kill -9`` would), then
        whatever it had started (hooks), and reap it.

        The manual authenticator runs its hooks in sessions of their own, so
        killing certmint's process group would miss them: its descendants are
        found through /proc before certmint dies (after, they are orphans).
        """
        orphans = descendants(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=KILL_WAIT_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        process.communicate(timeout=KILL_WAIT_SECONDS)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                self.kill(process)
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)

    def describe(self, argv: Sequence[str], code: int | None, stdout: str, stderr: str) -> str:
        return (
            f"$ {' '.join(argv)}\nexit: {code}\n--- stdout ---\n{stdout}\n"
            f"--- stderr ---\n{stderr}\n--- {self.logs_dir / 'certmint.log'} (tail) ---\n"
            f"{self.log_tail()}\n--- CA logs ---\n{self.ca.format_logs()}"
        )

    def log_tail(self) -> str:
        try:
            lines = (self.logs_dir / "certmint.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), bounded in count."""
    found: list[int] = []
    queue = [pid]
    while queue and len(found) < 1000:
        parent = queue.pop()
        children: list[int] = []
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                with contextlib.suppress(OSError):
                    text = Path(f"/proc/{parent}/task/{task}/children").read_text()
                    children += [int(child) for child in text.split()]
        found += children
        queue += children
    return found


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Until ``path`` exists; fail if ``process`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            stdout, stderr = process.communicate(timeout=KILL_WAIT_SECONDS)
            raise AssertionError(
                f"certmint exited {process.returncode} before {path} appeared\n"
                f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout:.0f} s")
        time.sleep(0.02)


# ------------------------------------------------------------------ hook scripts


def write_script(path: Path, body: str) -> Path:
    """An executable Python script run by this interpreter (hooks get no venv)."""
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def challtestsrv_hooks(directory: Path, management_url: str) -> tuple[Path, Path]:
    """``--manual-auth-hook`` / ``--manual-cleanup-hook`` scripts that publish
    the http-01 answer through the challenge test server's management API,
    with certbot's environment (CERTBOT_TOKEN, CERTBOT_VALIDATION)."""
    directory.mkdir(parents=True, exist_ok=True)
    post = (
        "import json, os, sys, urllib.request\n"
        "def post(path, body):\n"
        f"    request = urllib.request.Request({management_url!r} + path,\n"
        "        data=json.dumps(body).encode(), method='POST')\n"
        "    with urllib.request.urlopen(request, timeout=5) as response:\n"
        "        assert response.status == 200, response.status\n"
    )
    auth = write_script(
        directory / "auth-hook.py",
        post + "post('/add-http01', {'token': os.environ['CERTBOT_TOKEN'],\n"
        "    'content': os.environ['CERTBOT_VALIDATION']})\n"
        "print('published', os.environ['CERTBOT_DOMAIN'])\n",
    )
    cleanup = write_script(
        directory / "cleanup-hook.py",
        post + "post('/del-http01', {'token': os.environ['CERTBOT_TOKEN']})\n",
    )
    return auth, cleanup


def env_recording_hook(path: Path, record: Path) -> Path:
    """A hook that appends RENEWED_LINEAGE and RENEWED_DOMAINS to ``record``."""
    return write_script(
        path,
        "import os\n"
        f"with open({str(record)!r}, 'a') as out:\n"
        "    out.write(os.environ.get('RENEWED_LINEAGE', '-') + '|'\n"
        "              + os.environ.get('RENEWED_DOMAINS', '-') + '\\n')\n",
    )


def blocking_hook(path: Path, marker: Path, *, once: bool) -> Path:
    """A hook that creates ``marker`` and then hangs (to be killed with its
    caller). With ``once`` it returns at once if ``marker`` already exists, so
    a later run that uses the same stored hook goes through."""
    guard = f"if os.path.exists({str(marker)!r}):\n    sys.exit(0)\n" if once else ""
    return write_script(
        path,
        "import os, sys, time\n" + guard + f"open({str(marker)!r}, 'w').close()\ntime.sleep(60)\n",
    )


# ------------------------------------------------------------------ the layout


_VERSIONED = re.compile(r"(cert|chain|fullchain|privkey)([0-9]+)\.pem")


def live_versions(agent: Agent, name: str) -> dict[str, int]:
    """Which archive version each ``live/<name>/*.pem`` symlink points at."""
    versions: dict[str, int] = {}
    for kind in KINDS:
        link = agent.live(name) / f"{kind}.pem"
        assert link.is_symlink(), f"{link} is not a symlink"
        target = os.readlink(link)
        # certbot's links are relative, into ../../archive/<name>/.
        assert target == f"../../archive/{name}/{kind}{_version(target, kind)}.pem", target
        versions[kind] = _version(target, kind)
    return versions


def _version(target: str, kind: str) -> int:
    match = _VERSIONED.fullmatch(os.path.basename(target))
    assert match is not None and match.group(1) == kind, f"{target} is not a {kind} version"
    return int(match.group(2))


def current_version(agent: Agent, name: str) -> int:
    """The one version all four live links point at (fails if they disagree)."""
    versions = set(live_versions(agent, name).values())
    assert len(versions) == 1, f"live/{name} links point at different versions: {versions}"
    return versions.pop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_certbot_layout(
    agent: Agent, name: str, *, version: int, names: Sequence[str], authenticator: str
) -> x509.Certificate:
    """certbot's files for lineage ``name`` at ``version``; returns the leaf.

    live/<name>/{cert,chain,fullchain,privkey}.pem are relative symlinks into
    archive/<name>/<kind>N.pem; the private key is 0600 and the archive
    directory 0700 (certbot's modes); fullchain is cert + chain; the key
    matches the certificate, which names exactly ``names``; the renewal conf
    records the authenticator.
    """
    assert current_version(agent, name) == version
    archive = agent.archive(name)
    assert mode(archive) == 0o700, oct(mode(archive))
    assert mode(agent.config_dir / "archive") == 0o700
    assert mode(agent.config_dir / "live") == 0o700
    for kind in KINDS:
        path = archive / f"{kind}{version}.pem"
        assert path.is_file() and not path.is_symlink(), path
        expected = 0o600 if kind == "privkey" else 0o644
        assert mode(path) == expected, f"{path}: {oct(mode(path))}"
    live = agent.live(name)
    cert_pem = (live / "cert.pem").read_bytes()
    chain_pem = (live / "chain.pem").read_bytes()
    assert (live / "fullchain.pem").read_bytes() == cert_pem + chain_pem
    leaf = x509.load_pem_x509_certificate(cert_pem)
    chain = x509.load_pem_x509_certificates(chain_pem)
    assert chain and leaf.issuer == chain[0].subject
    key = serialization.load_pem_private_key((live / "privkey.pem").read_bytes(), None)
    assert key.public_key() == leaf.public_key(), "the live key does not match the certificate"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    conf = agent.renewal_conf(name).read_text()
    assert re.search(rf"^authenticator = {re.escape(authenticator)}$", conf, re.M), conf
    assert f"archive_dir = {archive}" in conf, conf
    for directory in (agent.config_dir / "accounts",):
        assert mode(directory) == 0o700
    for key_file in (agent.config_dir / "accounts").rglob("private_key.json"):
        assert mode(key_file) == 0o600, key_file
    return leaf


def serial_of(agent: Agent, name: str) -> int:
    cert_pem = (agent.live(name) / "cert.pem").read_bytes()
    return x509.load_pem_x509_certificate(cert_pem).serial_number


def listed_names(run: AgentRun) -> list[str]:
    """The ``Certificate Name:`` entries that ``certmint certificates`` printed."""
    return re.findall(r"^\s*Certificate Name: (\S+)$", run.stdout, re.M)
