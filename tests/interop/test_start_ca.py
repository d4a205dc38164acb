"""The README's first set-up command: ``./scripts/start-ca`` as a user runs it.

It must install certmint, start the --dev playground, and print the directory
URL, the root's path and a certbot command that works when pasted. The test
pastes that command (only moving certbot's state into the test's temporary
directory) and checks the certificate chains to the printed root.

The ACME, management and http-01 ports are moved to free ones with the
options start-ca passes through to ``certmint-ca serve``; the playground's
DNS stays on its fixed 127.0.0.1:8053, so nothing else may hold that port.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest

from certmint.testing.harness import (
    SERVE_READY_MARKER,
    free_port,
    openssl_verify,
    program_path,
    start_process,
    stop_process,
    wait_for_output,
)

pytestmark = pytest.mark.interop

REPO_ROOT = Path(__file__).resolve().parents[2]
# pip install (with build isolation) comes first, then the server starts.
START_TIMEOUT_SECONDS = 180
CLIENT_TIMEOUT_SECONDS = 120
_CERTBOT_STATE_OPTIONS = {"--config-dir": "config", "--work-dir": "work", "--logs-dir": "logs"}


def banner_value(banner: str, pattern: str) -> str:
    match = re.search(r"^certmint-ca: " + pattern + r"$", banner, re.MULTILINE)
    assert match, f"no line matching {pattern!r} in:\n{banner}"
    return match.group(1)


def pasteable_certbot(try_line: str, state_dir: Path) -> tuple[dict[str, str], list[str]]:
    """Split the printed command into its environment and argv, as a shell would.

    certbot's own state directories are moved under ``state_dir`` so the test
    leaves nothing behind; everything else is used exactly as printed.
    """
    words = shlex.split(try_line)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    assert words and words[0] == "certbot", f"not a certbot command: {try_line}"
    argv = [program_path("certbot")]
    rest = iter(words[1:])
    for word in rest:
        if word in _CERTBOT_STATE_OPTIONS:
            next(rest)
            continue
        argv.append(word)
    for option, folder in _CERTBOT_STATE_OPTIONS.items():
        argv += [option, str(state_dir / folder)]
    return env, argv


def test_start_ca_prints_a_working_certbot_command(tmp_path: Path) -> None:
    acme_port, management_port, http01_port = free_port(), free_port(), free_port()
    assert len({acme_port, management_port, http01_port}) == 3
    log_path = tmp_path / "start-ca.log"
    process = start_process(
        [
            str(REPO_ROOT / "scripts" / "start-ca"),
            "--data-dir", str(tmp_path / "data"),
            "--listen", f"127.0.0.1:{acme_port}",
            "--management-listen", f"127.0.0.1:{management_port}",
            "--http01-port", str(http01_port),
        ],
        log_path,
    )  # fmt: skip
    try:
        banner = wait_for_output(process, log_path, SERVE_READY_MARKER, START_TIMEOUT_SECONDS)

        directory_url = banner_value(banner, r"ACME directory (\S+)")
        assert directory_url == f"https://127.0.0.1:{acme_port}/directory"
        root_path = Path(banner_value(banner, r"root certificate (\S+) \(also \S+\)"))
        assert root_path.is_absolute() and root_path.is_file()
        served_root = httpx.get(f"http://127.0.0.1:{management_port}/roots/0", timeout=5)
        assert served_root.status_code == 200
        assert served_root.content.strip() == root_path.read_bytes().strip()

        env, argv = pasteable_certbot(banner_value(banner, r"try: (.+)"), tmp_path / "certbot")
        assert env == {"REQUESTS_CA_BUNDLE": str(root_path)}
        result = subprocess.run(
            argv,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **env},
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT_SECONDS,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, (
            f"printed certbot command failed ({shlex.join(argv)}):\n"
            f"{result.stdout}\n{result.stderr}\n--- start-ca log ---\n{log_path.read_text()}"
        )
        live_dirs = list((tmp_path / "certbot" / "config" / "live").glob("*/cert.pem"))
        assert len(live_dirs) == 1, live_dirs
        live = live_dirs[0].parent
        openssl_verify(root_path, live / "cert.pem", live / "chain.pem")
    finally:
        stop_process(process)
