"""The ``standalone`` authenticator: certmint answers the challenges itself.

Like certbot's standalone plugin, it listens on the challenge ports while the
CA validates: an HTTP responder for http-01 (RFC 8555 §8.3) and a TLS
responder for tls-alpn-01 (RFC 8737). Both are started by ``perform`` and
stopped by ``cleanup``.

Time to first certificate matters, so nothing here polls or sleeps: each
listener has one thread blocked in ``accept()``, and stopping shuts the
listening socket down, which wakes that thread at once (Linux returns EINVAL
from ``accept`` on a shut-down listener).

Every byte from the network is hostile: the HTTP side answers only the exact
challenge paths it was given (404 otherwise, bounded request line and
headers, a read deadline), and the number of connections handled at once is
capped so a flood cannot exhaust threads.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import ipaddress
import logging
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certmint.client.atomic import write_atomically
from certmint.client.authenticators.base import ChallengeTask
from certmint.client.errors import ClientError
from certmint.protocol.challenges import (
    ACME_TLS_ALPN_PROTOCOL,
    http01_path,
    is_valid_token,
    tls_alpn01_certificate,
)
from certmint.protocol.jwk import PrivateKey

log = logging.getLogger(__name__)

SUPPORTED = ("http-01", "tls-alpn-01")
# A validator sends one small request; anything slower than this is stalling.
CONNECTION_DEADLINE = 10.0
MAX_CONNECTIONS = 64
_JOIN_DEADLINE = 2.0


class _Listener:
    """A listening socket, one accept thread, one short-lived thread per connection."""

    def __init__(
        self,
        address: str,
        port: int,
        handle: Callable[[socket.socket, Any], None],
        *,
        flag: str,
        what: str,
    ) -> None:
        self._handle = handle
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._stopping = threading.Event()
        try:
            self._sock = _bind(address, port)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                reason = "is already in use" if exc.errno == errno.EADDRINUSE else "needs root"
                raise ClientError(
                    f"cannot answer {what} challenges: port {port} {reason}; stop the program "
                    f"listening there or choose another port with {flag}"
                ) from exc
            raise ClientError(f"cannot listen on port {port} for {what}: {exc.strerror}") from exc
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"certmint-{what}-{self.port}", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue  # e.g. ECONNABORTED: a client gave up before we accepted
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many at once: shed load rather than queue it
                continue
            conn.settimeout(CONNECTION_DEADLINE)
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True).start()

    def _serve(self, conn: socket.socket, peer: Any) -> None:
        try:
            self._handle(conn, peer)
        except (OSError, ssl.SSLError) as exc:
            log.debug("challenge connection from %s ended: %s", peer, exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._sock.close()
        self._thread.join(_JOIN_DEADLINE)


def _bind(address: str, port: int) -> socket.socket:
    # certbot's standalone listens on every address, IPv6 and IPv4, when none is given.
    if not address:
        if socket.has_dualstack_ipv6():
            try:
                return socket.create_server(
                    ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=128
                )
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise
                # IPv6 switched off on this host: IPv4 alone will do.
        return socket.create_server(("0.0.0.0", port), backlog=128)  # noqa: S104
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.create_server((address, port), family=family, backlog=128)


class _ChallengeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``/.well-known/acme-challenge/<token>`` for known tokens only."""

    answers: dict[str, bytes]  # set on a per-responder subclass
    server_version = "certmint"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: nothing to keep open

    def do_GET(self) -> None:
        self._answer(include_body=True)

    def do_HEAD(self) -> None:
        self._answer(include_body=False)

    def _answer(self, *, include_body: bool) -> None:
        # RFC 8555 §8.3: the VA may send an absolute-form target; compare paths only,
        # without a query string.
        path = self.path.split("?", 1)[0]
        if "://" in path:
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        body = self.answers.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if include_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http-01 %s: " + format, self.client_address[0], *args)


class _Http01Responder:
    def __init__(self, address: str, port: int) -> None:
        self.responses: dict[str, bytes] = {}
        handler = type("Handler", (_ChallengeHandler,), {"answers": self.responses})

        def handle(conn: socket.socket, peer: Any) -> None:
            handler(conn, peer, self)

        self._listener = _Listener(address, port, handle, flag="--http-01-port", what="http-01")
        self.port = self._listener.port

    def stop(self) -> None:
        self._listener.stop()


class _TlsAlpn01Responder:
    """RFC 8737 §3: present the challenge certificate chosen by SNI, ALPN acme-tls/1.

    Python's ``ssl`` loads certificates only from files, so each one is written
    (0600, atomically) into a private directory (0700) and removed once loaded.
    """

    def __init__(self, address: str, port: int) -> None:
        self._lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="certmint-tls-alpn-"))
        self._count = 0
        # The base context has no certificate: a name we were not given fails
        # the handshake instead of showing some unrelated certificate.
        self._base = _server_context()
        self._base.sni_callback = self._select
        try:
            self._listener = _Listener(
                address, port, self._handshake, flag="--tls-alpn-01-port", what="tls-alpn-01"
            )
        except ClientError:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.port = self._listener.port

    def add(self, sni: str, domain: str, key_authorization: str) -> None:
        cert, key = tls_alpn01_certificate(domain, key_authorization)
        context = self._load(cert, key)
        with self._lock:
            self._contexts[sni] = context

    def discard(self, sni: str) -> None:
        with self._lock:
            self._contexts.pop(sni, None)

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._contexts

    def _load(self, cert: x509.Certificate, key: PrivateKey) -> ssl.SSLContext:
        with self._lock:
            self._count += 1
            stem = self._dir / f"challenge{self._count}"
        cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
        try:
            _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            _write_private(
                key_path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
            context = _server_context()
            context.load_cert_chain(cert_path, key_path)
        finally:
            for path in (cert_path, key_path):
                path.unlink(missing_ok=True)
        return context

    def _select(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _base: ssl.SSLContext
    ) -> int | None:
        if server_name:
            with self._lock:
                context = self._contexts.get(_normalise_sni(server_name))
            if context is not None:
                ssl_object.context = context
                return None
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    def _handshake(self, conn: socket.socket, _peer: Any) -> None:
        # RFC 8737 §3: the handshake is the whole exchange; the validator aborts after it.
        with self._base.wrap_socket(conn, server_side=True) as tls:
            if tls.selected_alpn_protocol() != ACME_TLS_ALPN_PROTOCOL:
                log.debug("tls-alpn-01: a client without acme-tls/1 connected")

    def stop(self) -> None:
        self._listener.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # RFC 8737 §4: TLS 1.2 or higher.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_ALPN_PROTOCOL])
    return context


def _normalise_sni(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _sni_of(task: ChallengeTask) -> str:
    """The SNI a validator sends: the name itself, or for an IP identifier its
    reverse-DNS name (RFC 8738 §6)."""
    try:
        return ipaddress.ip_address(task.domain.strip("[]")).reverse_pointer
    except ValueError:
        return _normalise_sni(task.validation_name or task.domain)


def _write_private(path: Path, data: bytes) -> None:
    """Key material for the responder: 0600, written atomically."""
    write_atomically(path, data, 0o600)


class StandaloneAuthenticator:
    """Answers http-01 and tls-alpn-01 with its own short-lived listeners."""

    name = "standalone"

    def __init__(
        self,
        *,
        http01_address: str = "",
        http01_port: int = 80,
        tlsalpn01_port: int = 443,
        preferred: tuple[str, ...] = ("http-01", "tls-alpn-01"),
    ) -> None:
        unknown = [kind for kind in preferred if kind not in SUPPORTED]
        if unknown or not preferred:
            raise ClientError(
                f"the standalone authenticator answers {' and '.join(SUPPORTED)}, "
                f"not {', '.join(unknown) or 'nothing'}"
            )
        self._address = http01_address
        self._http01_port = http01_port
        self._tlsalpn01_port = tlsalpn01_port
        self._preferred = preferred
        self._lock = threading.Lock()
        self._http: _Http01Responder | None = None
        self._tls: _TlsAlpn01Responder | None = None

    @property
    def challenge_types(self) -> tuple[str, ...]:
        return self._preferred

    @property
    def http01_bound_port(self) -> int | None:
        """The port the http-01 responder listens on (useful with port 0)."""
        return self._http.port if self._http is not None else None

    @property
    def tlsalpn01_bound_port(self) -> int | None:
        return self._tls.port if self._tls is not None else None

    def perform(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            if task.challenge_type not in self._preferred:
                raise ClientError(
                    f"the standalone authenticator cannot answer {task.challenge_type} "
                    f"for {task.domain}"
                )
            if not is_valid_token(task.token):
                raise ClientError(f"the CA sent a malformed challenge token for {task.domain}")
        with self._lock:
            for task in tasks:
                if task.challenge_type == "http-01":
                    if self._http is None:
                        self._http = _Http01Responder(self._address, self._http01_port)
                    self._http.responses[http01_path(task.token)] = task.validation_value.encode()
                else:
                    if self._tls is None:
                        # tls-alpn-01 is checked on the identifier's address, so it
                        # binds where http-01 does.
                        self._tls = _TlsAlpn01Responder(self._address, self._tlsalpn01_port)
                    self._tls.add(_sni_of(task), task.domain, task.key_authorization)

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        with self._lock:
            for task in tasks:
                if task.challenge_type == "http-01" and self._http is not None:
                    self._http.responses.pop(http01_path(task.token), None)
                elif task.challenge_type == "tls-alpn-01" and self._tls is not None:
                    self._tls.discard(_sni_of(task))
            # A responder with nothing left to answer frees its port at once.
            if self._http is not None and not self._http.responses:
                self._http.stop()
                self._http = None
            if self._tls is not None and self._tls.empty:
                self._tls.stop()
                self._tls = None
