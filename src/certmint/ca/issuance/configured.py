"""A hierarchy from an issuers file (``certmint-ca serve --issuers-file``).

The key ceremony writes this file (``ceremony/issuers_out.py``); an operator
may write it by hand. Paths are relative to the file::

    roots = ["root-x1.pem", "root-x2.pem"]      # roots[0]: /roots/0, the default

    [[issuer]]                                   # every one is active: CertificateAuthority
    id = "e7"                                    # picks one at random per issuance
    certificate = "e7.pem"
    chain = []                                   # optional: more after it in the default chain
    alternate_chains = [["e7-cross-x2.pem"]]     # served with Link: rel="alternate"
    key = { file = "e7.key" }
    # or key = { module = "/usr/lib/softhsm/libsofthsm2.so", token = "online",
    #            label = "e7", pin_file = "online.pin" }

Everything is checked at start-up, so that a wrong file stops ``serve`` with
one line instead of issuing certificates no client can verify: each root is
self-signed; each issuer certificate is a CA currently valid whose key is
the signer's; each chain starts with a certificate of the issuer's subject
and key, links certificate by certificate, and ends at one of the roots.

The listener's TLS certificate is made as for the development hierarchy
(issued by the first issuer through ``sign_certificate``, kept under
``data_dir/tls``).
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import tomllib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certmint.ca.issuance.hierarchy import (
    DEV_LISTENER_URLS,
    Hierarchy,
    HierarchyError,
    IssuerMaterial,
    ListenerUrls,
    _issue_server_cert,
    _Paths,
    _server_cert_is_current,
    _server_names_split,
)
from certmint.ca.issuance.keys import load_private_key
from certmint.ca.issuance.pkcs11 import Pkcs11Signer
from certmint.ca.issuance.profile import truncate_to_seconds
from certmint.ca.issuance.signer import FileSigner, Signer, SignerError
from certmint.runtime import Clock, Entropy

# Issuer ids appear in AIA and CRL URLs (``/aia/<id>.der``, ``/crl/<id>...``).
_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


class _Reader:
    def __init__(self, file: Path) -> None:
        self.file = file
        self.base = file.parent

    def error(self, where: str, text: str) -> HierarchyError:
        return HierarchyError(f"{self.file.name}: {where}: {text}")

    def table(self, data: Any, where: str, known: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.error(where, "must be a table")
        unknown = sorted(set(data) - known)
        if unknown:
            raise self.error(f"{where}.{unknown[0]}".lstrip("."), "unknown key")
        return data

    def text(self, data: dict[str, Any], key: str, where: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise self.error(f"{where}.{key}".lstrip("."), "missing or not a string")
        return value

    def path(self, data: dict[str, Any], key: str, where: str) -> Path:
        return (self.base / self.text(data, key, where)).resolve()

    def paths(self, value: Any, where: str) -> list[Path]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(where, "must be an array of paths")
        return [(self.base / v).resolve() for v in value]

    def cert(self, path: Path, where: str) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except OSError as exc:
            raise self.error(where, f"{path}: {exc.strerror}") from None
        except ValueError:
            raise self.error(where, f"{path}: not a PEM certificate") from None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _pin(reader: _Reader, path: Path, where: str) -> str:
    try:
        info = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise reader.error(where, f"{path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise reader.error(where, f"{path} is readable by others; chmod 600 it")
    return text.removesuffix("\n").removesuffix("\r")


def _signer(reader: _Reader, key: Any, where: str, open_lock: Path) -> Signer:
    key = reader.table(key, where, {"file", "module", "token", "label", "pin_file"})
    if "file" in key:
        if set(key) != {"file"}:
            raise reader.error(where, "a key is either file = PATH or module/token/label/pin_file")
        path = reader.path(key, "file", where)
        try:
            private = load_private_key(path)
        except (OSError, ValueError) as exc:
            raise reader.error(f"{where}.file", f"{path}: {exc}") from None
        if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise reader.error(f"{where}.file", f"{path}: not an RSA or ECDSA key")
        return FileSigner(private, key_id=f"file:{path}")
    pin = _pin(reader, reader.path(key, "pin_file", where), f"{where}.pin_file")
    try:
        return Pkcs11Signer(
            reader.text(key, "module", where),
            reader.text(key, "token", where),
            pin,
            reader.text(key, "label", where),
            open_lock=open_lock,
        )
    except SignerError as exc:
        raise reader.error(where, str(exc)) from None


def _chain(
    reader: _Reader,
    paths: Sequence[Path],
    issuer_cert: x509.Certificate,
    roots: Sequence[x509.Certificate],
    where: str,
) -> tuple[x509.Certificate, ...]:
    if not paths:
        raise reader.error(where, "a chain needs at least one certificate")
    chain = tuple(reader.cert(path, where) for path in paths)
    first = chain[0]
    if first.subject != issuer_cert.subject or first.public_key().public_bytes(
        *_SPKI
    ) != issuer_cert.public_key().public_bytes(*_SPKI):
        raise reader.error(where, "does not start with a certificate of the issuer's name and key")
    for lower, upper in itertools.pairwise(chain):
        if not _issued_by(lower, upper):
            raise reader.error(where, f"{lower.subject.rfc4514_string()} is not signed by the next")
    if not any(_issued_by(chain[-1], root) for root in roots):
        raise reader.error(where, "does not end at one of the roots")
    return chain


def _issuer(
    reader: _Reader,
    raw: Any,
    index: int,
    roots: Sequence[x509.Certificate],
    now: datetime,
    open_lock: Path,
) -> IssuerMaterial:
    where = f"issuer[{index}]"
    data = reader.table(raw, where, {"id", "certificate", "chain", "alternate_chains", "key"})
    issuer_id = reader.text(data, "id", where)
    if not _ID_RE.fullmatch(issuer_id):
        raise reader.error(f"{where}.id", "must be 1-32 of a-z, 0-9 and '-'")
    cert_path = reader.path(data, "certificate", where)
    cert = reader.cert(cert_path, f"{where}.certificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        # Leaves name their issuer by its SKI (authorityKeyIdentifier, BR 7.1.2.11.1).
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        raise reader.error(
            f"{where}.certificate", "lacks basicConstraints or subjectKeyIdentifier"
        ) from None
    if not constraints.ca:
        raise reader.error(f"{where}.certificate", "is not a CA certificate")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise reader.error(f"{where}.certificate", "is not valid now")
    if "key" not in data:
        raise reader.error(f"{where}.key", "missing")
    signer = _signer(reader, data["key"], f"{where}.key", open_lock)
    if signer.public_key.public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        raise reader.error(f"{where}.key", f"{signer.key_id} is not the certificate's key")
    extra = reader.paths(data.get("chain", []), f"{where}.chain")
    chains = [_chain(reader, [cert_path, *extra], cert, roots, f"{where}.chain")]
    alternates = data.get("alternate_chains", [])
    if not isinstance(alternates, list):
        raise reader.error(f"{where}.alternate_chains", "must be an array of arrays of paths")
    for n, alternate in enumerate(alternates):
        at = f"{where}.alternate_chains[{n}]"
        chains.append(_chain(reader, reader.paths(alternate, at), cert, roots, at))
    return IssuerMaterial(id=issuer_id, cert=cert, signer=signer, chains=tuple(chains))


def load_configured_hierarchy(
    issuers_file: Path,
    data_dir: Path,
    clock: Clock,
    entropy: Entropy,
    server_names: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    listener_urls: ListenerUrls = DEV_LISTENER_URLS,
) -> Hierarchy:
    """The roots and issuers ``issuers_file`` names; a one-line HierarchyError if any is off."""
    file = Path(issuers_file).resolve()
    reader = _Reader(file)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HierarchyError(f"{file}: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise HierarchyError(f"{file.name}: not valid TOML: {exc}") from None
    reader.table(data, "", {"roots", "issuer"})
    root_paths = reader.paths(data.get("roots"), "roots")
    if not root_paths:
        raise reader.error("roots", "at least one root")
    roots = tuple(reader.cert(path, "roots") for path in root_paths)
    for path, root in zip(root_paths, roots, strict=True):
        if root.issuer != root.subject or not _issued_by(root, root):
            raise reader.error("roots", f"{path.name} is not a self-signed root")
    now = truncate_to_seconds(clock.now())
    raw_issuers = data.get("issuer")
    if not isinstance(raw_issuers, list) or not raw_issuers:
        raise reader.error("issuer", "at least one [[issuer]]")
    # serve's processes (parent, CRL updater, workers) open their PKCS#11
    # sessions one at a time through this lock (issuance/pkcs11.py).
    open_lock = Path(data_dir) / "pkcs11.lock"
    issuers = tuple(
        _issuer(reader, raw, index, roots, now, open_lock) for index, raw in enumerate(raw_issuers)
    )
    ids = [issuer.id for issuer in issuers]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise reader.error("issuer", f"id {duplicate!r} is used twice")

    # The listener's own certificate, as the development hierarchy makes it.
    paths = _Paths(ca_dir=Path(data_dir) / "ca", tls_dir=Path(data_dir) / "tls")
    dns, ips = _server_names_split(server_names)
    if not _server_cert_is_current(paths, issuers[0], set(dns) | set(ips), now):
        _issue_server_cert(paths, issuers[0], server_names, now, entropy, listener_urls)
    return Hierarchy(
        roots=roots,
        issuers=issuers,
        root_paths=tuple(root_paths),
        tls_cert_path=paths.server_cert,
        tls_key_path=paths.server_key,
    )
