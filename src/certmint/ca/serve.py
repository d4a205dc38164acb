"""Running the CA: listening sockets, worker processes, uvicorn.

One process binds both listeners (ACME over HTTPS, management over HTTP),
prepares what must exist once (the development hierarchy, the migrated
database, the shared nonce table) and then runs N workers. Each worker wires
its own components with ``build_ca_server`` AFTER the fork — no database
connection, event loop or thread crosses a fork — and serves its own pair of
listening sockets, bound with SO_REUSEPORT so the kernel spreads connections
across the workers. With one worker nothing forks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from certmint.ca.app import CAServer, build_ca_server
from certmint.ca.config import CAConfig
from certmint.ca.issuance.hierarchy import Hierarchy, load_or_create_dev_hierarchy
from certmint.ca.nonces import MemoryNonceService, NonceService, SharedNonceService
from certmint.ca.shared import RevocationCounter
from certmint.ca.storage import open_storage
from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.model import VAConfig
from certmint.runtime import SystemClock, SystemEntropy

log = logging.getLogger("certmint.ca.serve")

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
DEV_DNS_ADDRESS = ("127.0.0.1", 8053)
DEV_DNS_CONTROL = ("127.0.0.1", 8055)


class ServeError(Exception):
    """A start-up failure to report as one line."""


@dataclass(frozen=True)
class ServeSettings:
    data_dir: Path
    database_url: str
    acme_address: tuple[str, int]
    management_address: tuple[str, int]
    config: CAConfig
    va_config: VAConfig
    server_names: tuple[str, ...]
    workers: int = 1
    dev_dns: bool = False


def prepare(settings: ServeSettings) -> tuple[Hierarchy, ServeSettings]:
    """Everything that must happen once, before any worker: keys, TLS
    certificate, schema migration, and the chaos seed (printed, so a run can
    be replayed)."""
    clock, entropy = SystemClock(), SystemEntropy()
    hierarchy = load_or_create_dev_hierarchy(
        settings.data_dir, clock, entropy, settings.server_names
    )
    open_storage(settings.database_url).close()
    chaos = settings.config.chaos
    if chaos.enabled and chaos.seed is None:
        chaos = replace(chaos, seed=entropy.randbelow(2**31))
        settings = replace(settings, config=replace(settings.config, chaos=chaos))
    return hierarchy, settings


def _listen(address: tuple[str, int], *, reuse_port: bool = False) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server(
            (host, port), family=family, backlog=2048, reuse_port=reuse_port
        )
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: ServeSettings, announce: Callable[[], None]) -> int:
    """Bind, start the workers, call ``announce`` once all serve; return
    the exit code when they stop."""
    entropy = SystemEntropy()
    revocations = RevocationCounter()
    if settings.workers <= 1:
        sockets = (_listen(settings.acme_address), _listen(settings.management_address))
        _install_uvloop()
        shared = _Shared(MemoryNonceService(entropy), revocations)
        asyncio.run(_worker_main(0, settings, sockets, shared, announce))
        return 0
    # One SO_REUSEPORT socket pair per worker: the kernel spreads new
    # connections evenly across them. A single shared socket lets whichever
    # worker wakes first accept nearly every keep-alive connection, leaving
    # the other cores idle.
    per_worker = [
        (
            _listen(settings.acme_address, reuse_port=True),
            _listen(settings.management_address, reuse_port=True),
        )
        for _ in range(settings.workers)
    ]
    shared = _Shared(SharedNonceService(entropy), revocations)
    return _supervise(settings, per_worker, shared, announce)


@dataclass(frozen=True)
class _Shared:
    """What every worker of this server shares (made before the fork)."""

    nonces: NonceService
    revocations: RevocationCounter


def _supervise(
    settings: ServeSettings,
    per_worker: list[tuple[socket.socket, socket.socket]],
    shared: _Shared,
    announce: Callable[[], None],
) -> int:
    ready_read, ready_write = os.pipe()
    children: list[int] = []
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(ready_read)
            code = 0
            try:
                _install_uvloop()
                asyncio.run(
                    _worker_main(
                        index,
                        settings,
                        per_worker[index],
                        shared,
                        lambda: os.write(ready_write, b"."),
                    )
                )
            except KeyboardInterrupt:
                code = 0
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.append(pid)
    os.close(ready_write)
    for pair in per_worker:
        for sock in pair:
            sock.close()  # the workers hold them now

    stopping = False

    def stop_all(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    if _wait_ready(ready_read, settings.workers):
        announce()
    else:
        stop_all(signal.SIGTERM, None)
    os.close(ready_read)

    exit_code = 0
    while children:
        pid, status = os.wait()
        if pid in children:
            children.remove(pid)
        if not stopping:
            # A worker died on its own: stop the rest rather than serve on
            # with less capacity than configured; a supervisor restarts us.
            log.error("worker %d exited (status %d); stopping", pid, status)
            exit_code = 1
            stop_all(signal.SIGTERM, None)
    return exit_code


def _wait_ready(ready_read: int, workers: int) -> bool:
    loop_clock = SystemClock()
    deadline = loop_clock.monotonic() + READY_TIMEOUT_SECONDS
    ready = 0
    while ready < workers:
        remaining = deadline - loop_clock.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([ready_read], [], [], remaining)
        if not readable:
            return False
        data = os.read(ready_read, 64)
        if not data:  # every worker closed the pipe: they died
            return False
        ready += len(data)
    return True


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # an optional speed-up
        return
    uvloop.install()


async def _worker_main(
    index: int,
    settings: ServeSettings,
    sockets: tuple[socket.socket, socket.socket],
    shared: _Shared,
    on_ready: Callable[[], Any],
) -> None:
    import uvicorn

    clock, entropy = SystemClock(), SystemEntropy()
    config = settings.config
    if config.chaos.seed is not None:
        # Each worker replays its own stream, derived from the printed seed.
        config = replace(config, chaos=replace(config.chaos, seed=config.chaos.seed + index))
    hierarchy = load_or_create_dev_hierarchy(
        settings.data_dir, clock, entropy, settings.server_names
    )
    sa = open_storage(settings.database_url)
    va = ValidationAuthority(settings.va_config, clock)
    server: CAServer = build_ca_server(
        config=config,
        sa=sa,
        va=va,
        hierarchy=hierarchy,
        clock=clock,
        entropy=entropy,
        nonces=shared.nonces,
        revocations=shared.revocations,
    )
    common: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "server_header": False,
        "date_header": False,
    }
    acme = uvicorn.Server(
        uvicorn.Config(
            server.acme_app,
            ssl_certfile=str(hierarchy.tls_cert_path),
            ssl_keyfile=str(hierarchy.tls_key_path),
            **common,
        )
    )
    management = uvicorn.Server(uvicorn.Config(server.management_app, **common))
    dev_dns = None
    if settings.dev_dns and index == 0:
        # The playground's DNS is the challenge test server's (testing room).
        from certmint.testing.challtestsrv import ChallengeTestServer

        dev_dns = ChallengeTestServer(
            dns_address=DEV_DNS_ADDRESS,
            http01_address=None,
            tlsalpn01_address=None,
            management_address=DEV_DNS_CONTROL,
        )
        await dev_dns.start()
    tasks = [
        asyncio.create_task(acme.serve(sockets=[sockets[0]])),
        asyncio.create_task(management.serve(sockets=[sockets[1]])),
    ]
    for _ in range(400):  # bounded wait for both listeners (≤ 20 s)
        if (acme.started and management.started) or any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    if acme.started and management.started:
        on_ready()
    else:
        acme.should_exit = management.should_exit = True
    try:
        await asyncio.gather(*tasks)
    finally:
        await server.ra.drain()
        await va.aclose()
        if dev_dns is not None:
            await dev_dns.stop()
        sa.close()
