"""certmint.testing.netns: a namespace is reachable from the host, sees the
host only through its veth, and leaves nothing behind.

Needs root (``ip netns add``): without it the tests fail with the reason when
CI is set, and skip with the reason otherwise.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from certmint.testing.netns import (
    NetnsError,
    NetworkNamespace,
    netns_unavailable_reason,
    network_namespace,
    sweep_stale_namespaces,
)

WAIT_SECONDS = 10.0

# A one-shot TCP server: bind, say "ready" on stdout, greet one client, exit.
_GREETER = textwrap.dedent(
    """
    import socket, sys
    server = socket.create_server((sys.argv[1], 0))
    server.settimeout(10)
    print(server.getsockname()[1], flush=True)
    connection, _ = server.accept()
    connection.sendall(b"hello from the namespace\\n")
    connection.close()
    """
)

# Connect to HOST PORT, print what the server says or the error's name; never hangs.
_CONNECTOR = textwrap.dedent(
    """
    import socket, sys
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
            s.settimeout(3)
            print("ok", s.recv(100).decode().strip())
    except OSError as error:
        print("error", type(error).__name__)
    """
)


@pytest.fixture(scope="module")
def netns_available() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"network namespaces are required in CI: {reason}")
        pytest.skip(f"network namespaces unavailable: {reason}")


@pytest.fixture
def namespace(netns_available: None) -> Iterator[NetworkNamespace]:
    with network_namespace("cm", 1) as ns:
        yield ns


def _namespaces() -> list[str]:
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    )
    return [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]


def _links() -> list[str]:
    listing = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10, check=True
    )
    return [line.split(":")[1].strip().split("@")[0] for line in listing.stdout.splitlines()]


def _greeting_server(host: str) -> tuple[socket.socket, int]:
    server = socket.create_server((host, 0))
    server.settimeout(WAIT_SECONDS)
    return server, int(server.getsockname()[1])


def _connect_from(ns: NetworkNamespace, host: str, port: int) -> str:
    result = ns.run(
        [sys.executable, "-c", _CONNECTOR, host, str(port)],
        timeout=WAIT_SECONDS,
        capture_output=True,
        text=True,
    )
    return str(result.stdout).strip()


def test_host_reaches_a_server_inside_the_namespace(namespace: NetworkNamespace) -> None:
    greeter = namespace.popen(
        [sys.executable, "-c", _GREETER, namespace.ns_address],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert greeter.stdout is not None
    port = int(greeter.stdout.readline())  # the server printed its port: it listens
    with socket.create_connection((namespace.ns_address, port), timeout=WAIT_SECONDS) as conn:
        conn.settimeout(WAIT_SECONDS)
        assert conn.recv(100) == b"hello from the namespace\n"
    assert greeter.wait(timeout=WAIT_SECONDS) == 0


def test_namespace_sees_the_host_only_through_its_veth(namespace: NetworkNamespace) -> None:
    # Two host services: one on the host's loopback, one on the veth address.
    loopback_server, loopback_port = _greeting_server("127.0.0.1")
    veth_server, veth_port = _greeting_server(namespace.host_address)
    with loopback_server, veth_server:
        # 127.0.0.1 inside is the namespace's own loopback: nothing listens there.
        assert _connect_from(namespace, "127.0.0.1", loopback_port) == (
            "error ConnectionRefusedError"
        )

        # The host address on the veth is reachable.
        result: list[str] = []

        def answer() -> None:
            connection, _ = veth_server.accept()
            with connection:
                connection.sendall(b"hello from the host\n")
            result.append("served")

        serving = threading.Thread(target=answer, daemon=True)
        serving.start()
        assert _connect_from(namespace, namespace.host_address, veth_port) == (
            "ok hello from the host"
        )
        serving.join(timeout=WAIT_SECONDS)
        assert result == ["served"]


def test_exit_stops_processes_and_removes_namespace_and_veth(netns_available: None) -> None:
    with network_namespace("cm", 2) as ns:
        sleeper = ns.popen([sys.executable, "-c", "import time; time.sleep(60)"])
        assert ns.name in _namespaces()
        assert ns.host_interface in _links()
        assert ns.ns_address.startswith("10.213.")
    assert sleeper.poll() is not None
    assert ns.name not in _namespaces()
    assert ns.host_interface not in _links()


def test_a_taken_subnet_is_skipped(netns_available: None) -> None:
    # Something on the host already holds index 4's preferred /30 (another run,
    # a VPN): the namespace gets the next free /30 instead of a clash. The
    # stand-in is a veth pair named like ours (no dummy driver on every
    # kernel), so a crash here is swept too.
    squatter = f"cmh{os.getpid()}x250"
    subprocess.run(
        ["ip", "link", "add", squatter, "type", "veth", "peer", "name", f"cmh{os.getpid()}x251"],
        timeout=10,
        check=True,
    )
    try:
        subprocess.run(
            ["ip", "addr", "add", "10.213.4.1/30", "dev", squatter], timeout=10, check=True
        )
        with network_namespace("cm", 4) as ns:
            assert ns.host_address == "10.213.4.5"
            assert ns.ns_address == "10.213.4.6"
    finally:
        subprocess.run(["ip", "link", "del", squatter], timeout=10, check=False)


def test_the_same_index_twice_is_refused_and_the_first_survives(
    namespace: NetworkNamespace,
) -> None:
    with pytest.raises(NetnsError, match="already exists"), network_namespace("cm", 1):
        pass
    assert namespace.name in _namespaces()
    assert namespace.host_interface in _links()


def test_sweep_removes_namespaces_of_dead_processes_only(
    netns_available: None, namespace: NetworkNamespace
) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=True,
    )
    dead_pid = int(finished.stdout)
    stale = f"cm-{dead_pid}-9"
    subprocess.run(["ip", "netns", "add", stale], timeout=10, check=True)
    try:
        swept = sweep_stale_namespaces("cm")
        assert stale in swept
        assert stale not in _namespaces()
        # Ours is alive: untouched.
        assert namespace.name not in swept
        assert namespace.name in _namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], timeout=10, check=False, capture_output=True)


@pytest.mark.parametrize(
    ("ci", "expected"),
    [("1", "1 error"), ("", "1 skipped")],
    ids=["CI-fails", "local-skips"],
)
def test_without_privilege_the_fixture_fails_in_ci_and_skips_locally(
    netns_available: None, ci: str, expected: str
) -> None:
    capsh = shutil.which("capsh")
    if capsh is None:
        pytest.skip("capsh (libcap2-bin) is needed to drop CAP_SYS_ADMIN for this check")
    # The same test file, run without the capabilities `ip netns add` needs.
    target = f"{__file__}::test_host_reaches_a_server_inside_the_namespace"
    pytest_argv = shlex.join(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", target]
    )
    env = {**os.environ, "CI": ci}
    result = subprocess.run(
        [capsh, "--drop=cap_sys_admin,cap_net_admin", "--", "-c", pytest_argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    output = result.stdout + result.stderr
    assert expected in output, output
    assert (result.returncode != 0) == bool(ci), output
    assert "needs root: CAP_SYS_ADMIN" in output, output
