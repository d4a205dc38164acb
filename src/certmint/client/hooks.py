"""Hooks around issuance, as certbot runs them.

``--pre-hook`` / ``--post-hook`` / ``--deploy-hook`` run through the shell;
executables in ``<config>/renewal-hooks/{pre,deploy,post}/`` run in name
order. Deploy hooks get ``RENEWED_LINEAGE`` (the live directory) and
``RENEWED_DOMAINS`` (space-separated names), as certbot documents.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from certmint.client.errors import ClientError

HOOK_TIMEOUT_SECONDS = 300.0


def run_shell_hook(
    command: str, *, base_env: Mapping[str, str], env: Mapping[str, str] | None = None, what: str
) -> None:
    _run(["/bin/sh", "-c", command], base_env=base_env, env=env, what=f"{what} hook {command!r}")


def run_directory_hooks(
    directory: Path, *, base_env: Mapping[str, str], env: Mapping[str, str] | None = None
) -> None:
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        if path.is_file() and os.access(path, os.X_OK) and not path.name.endswith("~"):
            _run([str(path)], base_env=base_env, env=env, what=f"hook {path}")


def _run(
    argv: list[str], *, base_env: Mapping[str, str], env: Mapping[str, str] | None, what: str
) -> None:
    # Hooks run in the user's environment (``base_env``, read by the CLI)
    # plus the variables certbot documents for this hook.
    full_env = {**base_env, **(env or {})}
    try:
        result = subprocess.run(
            argv,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=HOOK_TIMEOUT_SECONDS,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ClientError(f"{what} did not finish within {HOOK_TIMEOUT_SECONDS:.0f} s") from None
    except OSError as exc:
        raise ClientError(f"{what} could not run: {exc.strerror}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ClientError(f"{what} exited with status {result.returncode}: {last}")
