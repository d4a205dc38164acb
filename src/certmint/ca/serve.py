"""Running the CA: listening sockets, worker processes, uvicorn.

One process binds both listeners (ACME over HTTPS, management over HTTP),
prepares what must exist once (the development hierarchy, the migrated
database, the shared nonce table) and then runs N workers. Each worker wires
its own components with ``build_ca_server`` AFTER the fork — no database
connection, event loop or thread crosses a fork — and serves its own pair of
listening sockets, bound with SO_REUSEPORT so the kernel spreads connections
across the workers. With one worker the worker runs in the first process.

Besides the workers, one more child process runs the CRL updater
(``ca/crl_updater.py``): building a large CRL is seconds of CPU, which must
not stall a serving event loop, and one builder per CA means one signature
per CRL instead of one per worker. It stores each CRL in the database, where
every worker's management app reads it (``mgmt.CrlPublisher``).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from certmint.ca.app import CAServer, build_ca_server, build_crl_updater
from certmint.ca.config import CAConfig
from certmint.ca.crl_updater import CrlUpdater
from certmint.ca.issuance.configured import load_configured_hierarchy
from certmint.ca.issuance.crl import CrlConfig
from certmint.ca.issuance.hierarchy import (
    Hierarchy,
    HierarchyError,
    ListenerUrls,
    load_or_create_dev_hierarchy,
)
from certmint.ca.issuance.lint import SubscriberLinter
from certmint.ca.issuance.pkcs11 import release_modules
from certmint.ca.nonces import MemoryNonceService, NonceService, SharedNonceService
from certmint.ca.storage import open_storage
from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.va.corroboration import MultiPerspectiveVA
from certmint.ca.va.model import VAConfig, Validator
from certmint.ca.va.remote import RemotePerspective
from certmint.runtime import Clock, Entropy, SystemClock, SystemEntropy

log = logging.getLogger("certmint.ca.serve")

READY_TIMEOUT_SECONDS = 60.0
# How often a start-up that is still waiting for its workers looks for one
# that died (a dead worker's byte never comes).
_READY_TICK_SECONDS = 0.2
# How often a one-worker server (no supervisor) looks whether its CRL
# updater is still alive.
_CHILD_WATCH_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
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
    # Remote VA perspectives (BR 3.2.2.9): (region, base URL) pairs, the
    # shared secret and the per-remote deadline. Empty: one perspective.
    remote_vas: tuple[tuple[str, str], ...] = ()
    remote_va_secret: bytes | None = None
    remote_va_timeout: float = 10.0
    # CRL shards, schedule and the delay after a revocation (issuance/crl.py).
    crl: CrlConfig = field(default_factory=CrlConfig)
    # A ceremony's issuers file (issuance/configured.py); None: the
    # development hierarchy under data_dir.
    issuers_file: Path | None = None


def prepare(settings: ServeSettings) -> tuple[Hierarchy, ServeSettings]:
    """Everything that must happen once, before any worker: keys, TLS
    certificate, schema migration, and the chaos seed (printed, so a run can
    be replayed)."""
    clock, entropy = SystemClock(), SystemEntropy()
    hierarchy = load_hierarchy(settings, clock, entropy)
    # PKCS#11 modules are initialised again in each worker (PKCS#11 §5.4):
    # close what the check above opened before anything forks.
    release_modules()
    open_storage(settings.database_url).close()
    # pkilint's validators take ~0.3 s of CPU to build: once here, inherited
    # by every forked worker, instead of once per worker at start-up.
    SubscriberLinter.warm_up()
    chaos = settings.config.chaos
    if chaos.enabled and chaos.seed is None:
        chaos = replace(chaos, seed=entropy.randbelow(2**31))
        settings = replace(settings, config=replace(settings.config, chaos=chaos))
    return hierarchy, settings


def load_hierarchy(settings: ServeSettings, clock: Clock, entropy: Entropy) -> Hierarchy:
    """The ceremony's hierarchy when --issuers-file is given, else the dev one."""
    listener_urls = ListenerUrls.under(settings.config.management_base_url, settings.crl.shards)
    if settings.issuers_file is None:
        return load_or_create_dev_hierarchy(
            settings.data_dir, clock, entropy, settings.server_names, listener_urls
        )
    try:
        return load_configured_hierarchy(
            settings.issuers_file,
            settings.data_dir,
            clock,
            entropy,
            settings.server_names,
            listener_urls,
        )
    except HierarchyError as exc:
        raise ServeError(f"--issuers-file: {exc}") from None


def _listen(address: tuple[str, int], *, reuse_port: bool = False) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server(
            (host, port), family=family, backlog=2048, reuse_port=reuse_port
        )
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    # uvloop sets TCP_NODELAY on accepted sockets itself, stock asyncio does
    # not for sockets it did not create; accepted sockets inherit it on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.set_inheritable(True)
    return sock


def serve(settings: ServeSettings, announce: Callable[[], None]) -> int:
    """Bind, start the workers, call ``announce`` once all serve; return
    the exit code when they stop."""
    entropy = SystemEntropy()
    # The CRL updater first, so that it holds none of the listening sockets.
    updater = _start_crl_updater(settings)
    if settings.workers <= 1:
        try:
            sockets = (_listen(settings.acme_address), _listen(settings.management_address))
            _install_uvloop()
            shared = _Shared(MemoryNonceService(entropy))
            # No supervisor here: the worker itself watches the updater.
            updater_died = asyncio.run(
                _worker_main(0, settings, sockets, shared, announce, watch=updater)
            )
        finally:
            _stop_child(updater)
        return 1 if updater_died else 0
    # One SO_REUSEPORT socket pair per worker: the kernel spreads new
    # connections evenly across them. A single shared socket lets whichever
    # worker wakes first accept nearly every keep-alive connection, leaving
    # the other cores idle.
    try:
        per_worker = [
            (
                _listen(settings.acme_address, reuse_port=True),
                _listen(settings.management_address, reuse_port=True),
            )
            for _ in range(settings.workers)
        ]
    except BaseException:
        _stop_child(updater)
        raise
    shared = _Shared(SharedNonceService(entropy))
    return _supervise(settings, per_worker, shared, announce, updater)


@dataclass(frozen=True)
class _Shared:
    """What every worker of this server shares (made before the fork)."""

    nonces: NonceService


def _supervise(
    settings: ServeSettings,
    per_worker: list[tuple[socket.socket, socket.socket]],
    shared: _Shared,
    announce: Callable[[], None],
    updater: int,
) -> int:
    ready_read, ready_write = os.pipe()
    # The CRL updater is watched like a worker: if it dies, the CA stops
    # rather than serve CRLs that no longer change.
    children: list[int] = [updater]
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(ready_read)
            # Keep only this worker's listeners: a sibling's SO_REUSEPORT
            # socket kept open here would, if that sibling died, go on
            # taking its share of connections that nobody ever accepts.
            for other, pair in enumerate(per_worker):
                if other != index:
                    for sock in pair:
                        sock.close()
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
            except ServeError as exc:  # a start-up refusal: one line, no traceback
                log.error("worker %d: %s", index, exc)
                code = 1
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

    def signal_children(signum: int) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    def stop_all(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        signal_children(signal.SIGTERM)
        # A child that ignores SIGTERM must not keep this loop (and with it
        # the CA's exit) waiting forever: SIGKILL what is left after a while.
        signal.signal(signal.SIGALRM, lambda signum, frame: signal_children(signal.SIGKILL))
        signal.alarm(int(STOP_TIMEOUT_SECONDS))

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    exit_code = 0
    if _wait_ready(ready_read, settings.workers, children):
        announce()
    else:
        exit_code = 1
        stop_all(signal.SIGTERM, None)
    os.close(ready_read)

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
    signal.alarm(0)  # every child is gone: no SIGKILL round left to send
    return exit_code


def _start_crl_updater(settings: ServeSettings) -> int:
    """Fork the CRL updater process (ca/crl_updater.py); its pid."""
    parent = os.getpid()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 0
    try:
        _crl_updater_process(settings, parent)
    except (KeyboardInterrupt, SystemExit):
        code = 0
    except ServeError as exc:
        log.error("the CRL updater: %s", exc)
        code = 1
    except BaseException:
        log.exception("the CRL updater failed")
        code = 1
    finally:
        sys.stdout.flush()
        os._exit(code)


def _crl_updater_process(settings: ServeSettings, parent: int) -> None:
    # SIGTERM ends a build at once: the updater releases its lease on the
    # way out (CrlUpdater.build), so a restarted CA rebuilds without waiting.
    # While the updater loop runs it also sets the loop's stop event, for
    # when the SystemExit lands where Python ignores exceptions (a weakref
    # callback, a __del__) and would otherwise be lost.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    _die_with_parent(parent)
    clock, entropy = SystemClock(), SystemEntropy()
    hierarchy = load_hierarchy(settings, clock, entropy)
    sa = open_storage(settings.database_url)
    try:
        updater = build_crl_updater(
            config=settings.config,
            sa=sa,
            hierarchy=hierarchy,
            clock=clock,
            entropy=entropy,
            crl=settings.crl,
        )
        asyncio.run(_run_until_terminated(updater))
    finally:
        sa.close()


async def _run_until_terminated(updater: CrlUpdater) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(stop.set)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    await updater.run(stop)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent ends, however it ends (Linux
    prctl PR_SET_PDEATHSIG): uvicorn re-raises a SIGTERM it caught, so a
    one-worker server dies by the signal without running its cleanup."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent's cleanup stops us
        return
    if os.getppid() != parent:  # the parent ended before prctl took effect
        raise SystemExit(0)


def _stop_child(pid: int) -> None:
    """SIGTERM a child and reap it; SIGKILL after ``STOP_TIMEOUT_SECONDS``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    loop_clock = SystemClock()
    deadline = loop_clock.monotonic() + STOP_TIMEOUT_SECONDS
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already reaped (by _supervise)
            return
        if done:
            return
        if loop_clock.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        select.select([], [], [], 0.05)  # a short pause without time.sleep


def _wait_ready(ready_read: int, workers: int, children: list[int]) -> bool:
    """Wait until every worker wrote its byte to ``ready_read``. False at once
    when a child (worker or CRL updater) exits first, which is then reaped
    and taken off ``children``; False after ``READY_TIMEOUT_SECONDS``."""
    loop_clock = SystemClock()
    deadline = loop_clock.monotonic() + READY_TIMEOUT_SECONDS
    ready = 0
    while ready < workers:
        remaining = deadline - loop_clock.monotonic()
        if remaining <= 0:
            log.error("the workers were not ready within %.0f s", READY_TIMEOUT_SECONDS)
            return False
        readable, _, _ = select.select([ready_read], [], [], min(remaining, _READY_TICK_SECONDS))
        if readable:
            data = os.read(ready_read, 64)
            if not data:  # every worker closed the pipe: they died
                return False
            ready += len(data)
            continue
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.remove(pid)
                log.error("process %d exited (status %d) before serving; stopping", pid, status)
                return False
    return True


def build_va(settings: ServeSettings, clock: Clock) -> Validator:
    """This worker's VA. Called after the fork: each worker owns its remote
    perspectives' HTTP connection pools (an event loop's sockets must not
    cross a fork)."""
    primary = ValidationAuthority(settings.va_config, clock)
    if not settings.remote_vas:
        return primary
    if settings.remote_va_secret is None:
        raise ServeError("remote VA perspectives need a shared secret")
    remotes = [
        RemotePerspective(region, url, settings.remote_va_secret, settings.remote_va_timeout)
        for region, url in settings.remote_vas
    ]
    return MultiPerspectiveVA(primary, remotes, clock)


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
    watch: int | None = None,
) -> bool:
    """Serve until told to stop. With ``watch`` (the CRL updater's pid, when
    there is no supervisor), stop too when that child dies, rather than serve
    CRLs that no longer change; True then."""
    import uvicorn

    clock, entropy = SystemClock(), SystemEntropy()
    config = settings.config
    if config.chaos.seed is not None:
        # Each worker replays its own stream, derived from the printed seed.
        config = replace(config, chaos=replace(config.chaos, seed=config.chaos.seed + index))
    hierarchy = load_hierarchy(settings, clock, entropy)
    sa = open_storage(settings.database_url)
    va = build_va(settings, clock)
    server: CAServer = build_ca_server(
        config=config,
        sa=sa,
        va=va,
        hierarchy=hierarchy,
        clock=clock,
        entropy=entropy,
        nonces=shared.nonces,
        crl=settings.crl,
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
    watcher = None
    if watch is not None:
        watcher = asyncio.create_task(_stop_when_child_exits(watch, (acme, management), clock))
    try:
        await asyncio.gather(*tasks)
    finally:
        if watcher is not None:
            watcher.cancel()
        await server.ra.drain()
        await va.aclose()
        if dev_dns is not None:
            await dev_dns.stop()
        sa.close()
    return watcher is not None and watcher.done() and not watcher.cancelled() and watcher.result()


async def _stop_when_child_exits(pid: int, servers: tuple[Any, ...], clock: Clock) -> bool:
    """Look for ``pid``'s exit every ``_CHILD_WATCH_SECONDS``; when it exits,
    tell ``servers`` (uvicorn) to stop and return True."""
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already: gone all the same
            done, status = pid, -1
        if done:
            log.error("the CRL updater (process %d) exited (status %d); stopping", pid, status)
            for server in servers:
                server.should_exit = True
            return True
        await clock.sleep(_CHILD_WATCH_SECONDS)
