"""serve's supervisor over real processes and sockets: a worker that dies
while the others start stops the CA at once (instead of leaving its share of
connections unanswered), and each worker holds only its own listeners."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from certmint.ca.serve import _wait_ready
from certmint.testing.harness import (
    SERVE_READY_MARKER,
    free_port,
    program_path,
    start_process,
    stop_process,
    wait_for_output,
)

START_TIMEOUT_SECONDS = 60


def test_wait_ready_returns_when_a_worker_dies_before_serving() -> None:
    ready_read, ready_write = os.pipe()
    alive_read, alive_write = os.pipe()
    survivor = os.fork()
    if survivor == 0:  # holds the ready pipe open, as a live worker does
        os.close(alive_write)
        os.read(alive_read, 1)
        os._exit(0)
    dead = os.fork()
    if dead == 0:  # dies without writing its ready byte
        os._exit(3)
    children = [survivor, dead]
    try:
        # Two workers expected; one byte will never come. Before, this waited
        # out the whole READY_TIMEOUT_SECONDS with the survivor serving alone.
        assert _wait_ready(ready_read, 2, children) is False
        assert children == [survivor]  # the dead one was reaped and taken off
    finally:
        os.close(alive_write)  # the survivor exits
        os.waitpid(survivor, 0)
        for fd in (ready_read, ready_write, alive_read):
            os.close(fd)


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the IPv4 sockets listening on ``port`` (/proc/net/tcp, state 0A)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            inodes.add(inode)
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        except OSError:  # closed meanwhile
            continue
        if match:
            found.add(match.group(1))
    return found


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


@contextlib.contextmanager
def _serving(
    tmp_path: Path, workers: int, acme_port: int, management_port: int
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``certmint-ca serve --workers N``, ready; stopped on exit."""
    log_path = tmp_path / "serve.log"
    argv = [
        program_path("certmint-ca"), "serve",
        "--data-dir", str(tmp_path / "data"),
        "--listen", f"127.0.0.1:{acme_port}",
        "--management-listen", f"127.0.0.1:{management_port}",
        "--workers", str(workers),
    ]  # fmt: skip
    process = start_process(argv, log_path)
    try:
        wait_for_output(process, log_path, SERVE_READY_MARKER, START_TIMEOUT_SECONDS)
        yield process, log_path
    finally:
        stop_process(process)


def test_each_worker_holds_only_its_own_listeners(tmp_path: Path) -> None:
    acme_port, management_port = free_port(), free_port()
    with _serving(tmp_path, 2, acme_port, management_port) as (process, _):
        acme = _listening_inodes(acme_port)
        management = _listening_inodes(management_port)
        assert len(acme) == len(management) == 2  # one SO_REUSEPORT socket per worker
        held = [_socket_inodes(child) for child in _children(process.pid)]
        workers = [sockets for sockets in held if sockets & (acme | management)]
        assert len(workers) == 2  # the CRL updater holds none
        for sockets in workers:
            assert len(sockets & acme) == 1
            assert len(sockets & management) == 1
        assert not _socket_inodes(process.pid) & (acme | management)  # nor the supervisor


def test_a_one_worker_server_stops_when_its_crl_updater_dies(tmp_path: Path) -> None:
    # One worker has no supervisor: the worker watches the updater itself, so
    # that CRLs never silently stop being renewed (they expire after 7 days).
    with _serving(tmp_path, 1, free_port(), free_port()) as (process, log_path):
        (updater,) = _children(process.pid)
        os.kill(updater, signal.SIGKILL)
        assert process.wait(timeout=START_TIMEOUT_SECONDS) == 1
        assert f"the CRL updater (process {updater}) exited" in log_path.read_text()
        assert "Traceback" not in log_path.read_text()
