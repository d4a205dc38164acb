"""``certmint-ca va-perspective``: a remote VA perspective (BR 3.2.2.9).

Runs a ``ValidationAuthority`` with its own resolver behind the small
authenticated HTTP API of ``va.perspective_server``, one process, one
event loop. The primary CA (``certmint-ca serve --remote-va REGION=URL``)
asks it to repeat each validation from its network vantage point.

Like the rest of the CLI layer, this is where the real clock, the secret
file and signals are read.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import socket
from pathlib import Path
from typing import Any

# The CA's own default (CAConfig.caa_identities): a perspective must judge
# CAA exactly as the primary does.
DEFAULT_CAA_IDENTITY = "certmint.invalid"
READY_POLLS = 400  # x 0.05 s: bounded wait for uvicorn to start serving


class PerspectiveCliError(Exception):
    """A start-up failure, reported as one line by ``certmint-ca``."""


def add_parser(sub: Any) -> None:
    """Register the ``va-perspective`` subcommand on ``certmint-ca``'s subparsers."""
    cmd = sub.add_parser(
        "va-perspective",
        help="run a remote validation perspective (BR 3.2.2.9) for a primary CA",
    )
    cmd.add_argument("--listen", required=True, metavar="HOST:PORT", help="plain HTTP address")
    cmd.add_argument("--region", required=True, help="label for this perspective, e.g. eu-west")
    cmd.add_argument(
        "--secret-file",
        required=True,
        metavar="PATH",
        help="shared secret with the primary (at least 32 bytes)",
    )
    cmd.add_argument("--dns-resolver", action="append", default=[], metavar="HOST:PORT")
    cmd.add_argument("--http01-port", type=int, help="port for http-01 (80)")
    cmd.add_argument("--tlsalpn01-port", type=int, help="port for tls-alpn-01 (443)")
    cmd.add_argument("--allow-private-addresses", action="store_true")
    add_private_network_argument(cmd)
    cmd.add_argument(
        "--caa-identity",
        action="append",
        default=[],
        metavar="NAME",
        help=f"issuer domain name CAA must permit (repeatable; default {DEFAULT_CAA_IDENTITY})",
    )


def add_private_network_argument(parser: argparse.ArgumentParser) -> None:
    """``--allow-private-network CIDR`` for ``serve`` and ``va-perspective``:
    a non-public network the VA may still connect to (an internal CA's
    network), while every other private and reserved range stays refused."""
    parser.add_argument(
        "--allow-private-network",
        action="append",
        default=[],
        type=_network,
        metavar="CIDR",
        help="a non-public network the VA may connect to, e.g. 10.20.0.0/16 (repeatable)",
    )


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a network in CIDR form: {text!r}") from None


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise PerspectiveCliError(f"--listen must look like HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


_REGION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_region(region: str) -> str:
    """Region labels appear in problem details and records: keep them plain."""
    if not 1 <= len(region) <= 64 or not set(region) <= _REGION_CHARS:
        raise PerspectiveCliError(
            f"region must be 1-64 letters, digits, '-', '_' or '.', not {region!r}"
        )
    return region


def run(args: argparse.Namespace) -> int:
    from certmint.ca.va.authority import ValidationAuthority
    from certmint.ca.va.model import VAConfig
    from certmint.ca.va.perspective_server import build_perspective_app
    from certmint.ca.va.perspective_wire import SecretError, load_secret
    from certmint.runtime import SystemClock

    region = check_region(args.region)
    host, port = _host_port(args.listen)
    try:
        secret = load_secret(Path(args.secret_file))
    except SecretError as exc:
        raise PerspectiveCliError(str(exc)) from None
    config = VAConfig(
        resolvers=tuple(args.dns_resolver),
        http01_port=args.http01_port or 80,
        tlsalpn01_port=args.tlsalpn01_port or 443,
        allow_private_addresses=args.allow_private_addresses,
        allowed_private_networks=tuple(args.allow_private_network),
        caa_identities=tuple(args.caa_identity) or (DEFAULT_CAA_IDENTITY,),
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise PerspectiveCliError(f"cannot listen on {args.listen}: {exc.strerror}") from None
    # Accepted sockets inherit this on Linux. Without it, each request on a
    # kept-alive primary->perspective connection waits ~40 ms for Nagle plus
    # delayed ACK (stock asyncio sets TCP_NODELAY only on sockets it creates).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bound_port = sock.getsockname()[1]  # the real one when --listen asked for port 0
    shown_host = f"[{host}]" if ":" in host else host

    import uvicorn

    va = ValidationAuthority(config, SystemClock())
    app = build_perspective_app(va, region, secret)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            date_header=False,
        )
    )

    def stop(signum: int, frame: Any) -> None:
        # uvicorn installs its own handlers while serving and, once shut
        # down, re-raises the signal it caught to the handler it found: this
        # one, so SIGTERM/SIGINT end the process cleanly (exit status 0).
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(READY_POLLS):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if server.started:
            print(
                f"va-perspective {region} listening on http://{shown_host}:{bound_port}",
                flush=True,
            )
        else:
            server.should_exit = True
        try:
            await task
        finally:
            await va.aclose()

    try:
        _run_on_fastest_loop(main())
    finally:
        sock.close()
    if not server.started:
        raise PerspectiveCliError("the perspective's HTTP server did not start")
    return 0


def _run_on_fastest_loop(coro: Any) -> None:
    """uvloop when installed (as ``serve`` uses): the perspective's work per
    validation is mostly socket and HTTP handling, which uvloop halves."""
    try:
        import uvloop
    except ImportError:  # an optional speed-up
        asyncio.run(coro)
        return
    uvloop.run(coro)
