"""SoftHSM2 as a real PKCS#11 token for tests: a configuration and token directory of its own.

SoftHSM2 (Debian's ``softhsm2``) finds its tokens through the configuration
file named by ``SOFTHSM2_CONF``, read when the module is initialised. Each
test gets its own directory, so tokens never leak between tests or into the
machine's ``/var/lib/softhsm``::

    hsm = create_softhsm(tmp_path / "hsm")
    token = hsm.init_token("certmint-online", pin="1234")
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm.conf_path))  # in-process use
    subprocess.run([...], env={**os.environ, **hsm.env})      # child processes

A process keeps the module initialised with the configuration it first read:
call ``certmint.ca.issuance.pkcs11.release_modules()`` before switching to
another test's configuration (``softhsm_session`` below does both).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Debian's path; other systems put it under /usr/lib64 or /usr/local/lib.
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
DEFAULT_SO_PIN = "12345678"
_UTIL_TIMEOUT_SECONDS = 60


class SoftHsmError(RuntimeError):
    """SoftHSM2 is missing or softhsm2-util failed."""


@dataclass(frozen=True)
class SoftHsmToken:
    label: str
    pin: str
    so_pin: str


@dataclass(frozen=True)
class SoftHsm:
    module_path: str
    conf_path: Path
    token_dir: Path

    @property
    def env(self) -> dict[str, str]:
        """What a child process needs in its environment to see these tokens."""
        return {"SOFTHSM2_CONF": str(self.conf_path)}

    def init_token(self, label: str, pin: str, so_pin: str = DEFAULT_SO_PIN) -> SoftHsmToken:
        """``softhsm2-util --init-token --free``: a new token in the next free slot."""
        util = shutil.which("softhsm2-util")
        if util is None:
            raise SoftHsmError("softhsm2-util not found (Debian package softhsm2)")
        argv = [
            util,
            "--init-token",
            "--free",
            "--label", label,
            "--pin", pin,
            "--so-pin", so_pin,
        ]  # fmt: skip
        result = subprocess.run(
            argv,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=_UTIL_TIMEOUT_SECONDS,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise SoftHsmError(
                f"softhsm2-util --init-token {label!r} failed ({result.returncode}): "
                f"{(result.stdout + result.stderr).strip()}"
            )
        return SoftHsmToken(label=label, pin=pin, so_pin=so_pin)


def find_module() -> str:
    """The SoftHSM2 PKCS#11 module's path."""
    for candidate in MODULE_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    raise SoftHsmError(
        "libsofthsm2.so not found (Debian package softhsm2); looked in "
        + ", ".join(MODULE_CANDIDATES)
    )


def create_softhsm(directory: Path) -> SoftHsm:
    """A SoftHSM2 configuration whose tokens live under ``directory``."""
    directory = Path(directory)
    token_dir = directory / "tokens"
    token_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf_path = directory / "softhsm2.conf"
    conf_path.write_text(
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    return SoftHsm(module_path=find_module(), conf_path=conf_path, token_dir=token_dir)


@contextmanager
def softhsm_session(directory: Path) -> Iterator[SoftHsm]:
    """``create_softhsm`` with this process's SOFTHSM2_CONF pointing at it.

    For tests that are not pytest functions with ``monkeypatch`` (benches):
    restores the environment and releases the PKCS#11 module on exit."""
    from certmint.ca.issuance.pkcs11 import release_modules

    hsm = create_softhsm(directory)
    previous = os.environ.get("SOFTHSM2_CONF")
    release_modules()
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf_path)
    try:
        yield hsm
    finally:
        release_modules()
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
