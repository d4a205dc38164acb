"""The challenge test server's TLS-ALPN-01 responder (RFC 8737).

A TLS listener that, for a ClientHello offering ``acme-tls/1``, presents the
RFC 8737 §3 challenge certificate chosen by SNI. Python's ``ssl`` can only
load certificates from files, so each one is written (key 0600, atomically)
into a private temporary directory removed on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
import ssl
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certmint.client.atomic import write_atomically
from certmint.protocol.challenges import ACME_TLS_ALPN_PROTOCOL, tls_alpn01_certificate
from certmint.protocol.jwk import PrivateKey

log = logging.getLogger(__name__)

HANDSHAKE_DEADLINE = 10.0
# The certificate shown when no challenge matches the SNI (RFC 8737 leaves
# this open): a plain self-signed one, without the acmeIdentifier extension.
_FALLBACK_NAME = "challtestsrv.invalid"


def _fallback_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _FALLBACK_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(_FALLBACK_NAME)]), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def sni_key(host: str) -> str:
    """The SNI a validator sends for ``host`` (RFC 8738 §6 for IPs)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).reverse_pointer
    except ValueError:
        return host.strip().lower().rstrip(".")


def _write_private(path: Path, data: bytes) -> None:
    """Key material for the responder: 0600, written atomically."""
    write_atomically(path, data, 0o600)


class TlsAlpnResponder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="challtestsrv-"))
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._serial = 0
        self._base = self._load_context(*_fallback_certificate())
        self._base.sni_callback = self._select
        self._server: asyncio.Server | None = None
        self.port = 0

    def _load_context(
        self, cert: x509.Certificate, key: PrivateKey, *, alpn: bool = True
    ) -> ssl.SSLContext:
        with self._lock:
            self._serial += 1
            stem = self._dir / f"cert{self._serial}"
        cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
        _write_private(cert_path, cert.public_bytes(Encoding.PEM))
        _write_private(
            key_path,
            key.private_bytes(
                Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_path, key_path)
        if alpn:
            # OpenSSL asks the context chosen by SNI to select ALPN, so a
            # context without protocols negotiates none (a plain web server).
            context.set_alpn_protocols([ACME_TLS_ALPN_PROTOCOL])
        for path in (cert_path, key_path):
            path.unlink()
        return context

    def _select(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _base: ssl.SSLContext
    ) -> int | None:
        if server_name:
            with self._lock:
                context = self._contexts.get(server_name.lower().rstrip("."))
            if context is not None:
                ssl_object.context = context
        return None  # unknown names get the fallback certificate

    def add(self, host: str, key_authorization: str) -> None:
        context = self._load_context(*tls_alpn01_certificate(host, key_authorization))
        with self._lock:
            self._contexts[sni_key(host)] = context

    def add_certificate(
        self, host: str, cert: x509.Certificate, key: PrivateKey, *, alpn: bool = True
    ) -> None:
        """Present ``cert`` for ``host``'s SNI, whatever it holds: the seam for
        tests of a validator against wrong certificates (extra SANs, a missing
        or non-critical acmeIdentifier) and, with ``alpn=False``, against a
        server that does not negotiate ``acme-tls/1``."""
        context = self._load_context(cert, key, alpn=alpn)
        with self._lock:
            self._contexts[sni_key(host)] = context

    def delete(self, host: str) -> None:
        with self._lock:
            self._contexts.pop(sni_key(host), None)

    async def start(self, host: str, port: int) -> None:
        async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # RFC 8737 §3: the handshake is the whole exchange; close at once.
            writer.close()
            with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
                await writer.wait_closed()

        self._server = await asyncio.start_server(
            on_connect, host, port, ssl=self._base, ssl_handshake_timeout=HANDSHAKE_DEADLINE
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        shutil.rmtree(self._dir, ignore_errors=True)
