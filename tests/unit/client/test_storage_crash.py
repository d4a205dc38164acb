"""An interrupted run leaves the previous certificate live, and the next run
succeeds: crashes injected between every two steps, and real SIGKILLs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from certmint.client import storage
from certmint.client.storage import CertStore, Lineage, Paths

from .certfiles import Issued, issue, params

NAME = "example.com"
RENEWAL_STEPS = 9  # four archive files, the conf, four symlinks
NEW_LINEAGE_STEPS = 11  # live/README, four archive files, four symlinks, README, conf


class Crash(Exception):
    """Stands for the process dying at this point."""


def crash_on_step(monkeypatch: pytest.MonkeyPatch, step: int) -> list[int]:
    """Make the ``step``-th file operation of the store raise Crash."""
    count = [0]

    def wrap(original: Callable[..., None]) -> Callable[..., None]:
        def operation(*args: Any, **kwargs: Any) -> None:
            count[0] += 1
            if count[0] == step:
                raise Crash(f"crash before step {step}")
            original(*args, **kwargs)

        return operation

    for name in ("write_atomically", "replace_symlink"):
        monkeypatch.setattr(storage, name, wrap(getattr(storage, name)))
    return count


def assert_consistent(lineage: Lineage) -> None:
    """Key, certificate, chain and fullchain all of one version."""
    key = serialization.load_pem_private_key(lineage.privkey_path.read_bytes(), None)
    assert key.public_key() == lineage.certificate().public_key()
    assert lineage.fullchain_path.read_bytes() == (
        lineage.cert_path.read_bytes() + lineage.chain_path.read_bytes()
    )
    links = (lineage.cert_path, lineage.chain_path, lineage.fullchain_path, lineage.privkey_path)
    versions = {re.sub(r"\D", "", os.path.basename(os.readlink(link))) for link in links}
    assert versions == {str(lineage.version)}


def no_temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".*.tmp")]


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "work", tmp_path / "logs")


@pytest.mark.parametrize("step", range(1, RENEWAL_STEPS + 1))
def test_renewal_interrupted_at_every_step(
    paths: Paths, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    old = issue()
    CertStore(paths).save_new(NAME, **old.files(), params=params())
    new = issue()
    with monkeypatch.context() as patch:
        crash_on_step(patch, step)
        with pytest.raises(Crash):
            CertStore(paths).save_renewal(NAME, **new.files(), params=params(pre_hook="new"))

    # Before the first symlink switch, the old certificate is live, untouched.
    before_lock = CertStore(paths).load(NAME)
    if step <= 6:
        assert before_lock.version == 1
        assert before_lock.cert_path.read_bytes() == old.cert_pem
        assert_consistent(before_lock)

    # The next run: taking the lock finishes a half-done switch.
    store = CertStore(paths)
    with store.lock():
        lineage = store.load(NAME)
        assert_consistent(lineage)
        expected: Issued = old if step <= 6 else new
        assert lineage.cert_path.read_bytes() == expected.cert_pem
        assert lineage.privkey_path.read_bytes() == expected.key_pem
        after = issue()
        renewed = store.save_renewal(NAME, **after.files(), params=params())
        assert renewed.cert_path.read_bytes() == after.cert_pem
        assert_consistent(renewed)
    assert no_temp_files(paths.config_dir) == []


@pytest.mark.parametrize("step", range(1, NEW_LINEAGE_STEPS + 1))
def test_new_lineage_interrupted_at_every_step(
    paths: Paths, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    with monkeypatch.context() as patch:
        crash_on_step(patch, step)
        with pytest.raises(Crash):
            CertStore(paths).save_new(NAME, **issue().files(), params=params())
    store = CertStore(paths)
    # Nothing is a lineage until its renewal conf, the last step, is written.
    assert not store.exists(NAME) and store.lineages() == []
    fresh = issue()
    lineage = store.save_new(NAME, **fresh.files(), params=params())
    assert lineage.name == NAME  # the debris was swept, not worked around
    assert lineage.version == 1 and lineage.cert_path.read_bytes() == fresh.cert_pem
    assert_consistent(lineage)


def test_a_crash_in_the_middle_of_a_file_write_leaves_no_temp_file(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    CertStore(paths).save_new(NAME, **issue().files(), params=params())
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(Crash()))
        with pytest.raises(Crash):
            CertStore(paths).save_renewal(NAME, **issue().files(), params=params())
    assert no_temp_files(paths.config_dir) == []


# ---------------------------------------------------------------- real kills

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from certfiles import issue, params
    from certmint.client.storage import CertStore, Paths

    root, mode = Path(sys.argv[1]), sys.argv[2]
    store = CertStore(Paths(root / "config", root / "work", root / "logs"))
    with store.lock():
        print("ready", flush=True)
        for i in range(3000):
            if mode == "renew":
                store.save_renewal("example.com", **issue().files(), params=params())
            else:
                store.save_new("example.com", **issue().files(), params=params())
                store.delete("example.com")
    """
)
KILL_DELAYS = (0.02, 0.05, 0.08, 0.11, 0.15, 0.2)


def kill_mid_run(paths: Paths, mode: str, delay: float) -> None:
    root = paths.config_dir.parent
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), mode, str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        assert child.returncode is None, "the child finished before it was killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


@pytest.mark.parametrize("delay", KILL_DELAYS)
def test_killed_renewals_leave_a_working_lineage(paths: Paths, delay: float) -> None:
    CertStore(paths).save_new(NAME, **issue().files(), params=params())
    kill_mid_run(paths, "renew", delay)
    store = CertStore(paths)
    with store.lock():
        lineage = store.load(NAME)
        assert_consistent(lineage)
        after = issue()
        renewed = store.save_renewal(NAME, **after.files(), params=params())
        assert renewed.cert_path.read_bytes() == after.cert_pem
        assert_consistent(renewed)
    assert no_temp_files(paths.config_dir) == []


@pytest.mark.parametrize("delay", KILL_DELAYS)
def test_killed_new_lineages_leave_a_working_store(paths: Paths, delay: float) -> None:
    kill_mid_run(paths, "new", delay)
    store = CertStore(paths)
    with store.lock():
        if store.exists(NAME):
            assert_consistent(store.load(NAME))
            store.delete(NAME)
        lineage = store.save_new(NAME, **issue().files(), params=params())
        assert lineage.name == NAME
        assert_consistent(lineage)
