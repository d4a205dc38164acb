"""ACME accounts on disk, in certbot's layout, so either tool can use the other's.

::

    <config>/accounts/<server netloc>/<server path>/<account id>/
        private_key.json   the account key as a JWK with private members (0600)
        regr.json          {"body": {...}, "uri": "<account URL>"}
        meta.json          {"creation_dt": "...Z", "creation_host": "...", "register_to_eff": null}

``<server netloc>/<server path>`` is certbot's ``server_path``: for
``https://acme-v02.api.letsencrypt.org/directory`` it is
``acme-v02.api.letsencrypt.org/directory``. The account id is certbot's too:
the MD5 hex digest of the account public key's SubjectPublicKeyInfo in PEM
(certbot/_internal/account.py, ``Account.__init__``) — an identifier, not a
security measure.

Files are written key first and ``regr.json`` last: a directory without
``regr.json`` is an interrupted save and is not listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from certmint.client.atomic import ensure_directory, fsync_directory, write_atomically
from certmint.client.errors import ClientError
from certmint.client.keys import private_key_from_jwk, private_key_to_jwk
from certmint.protocol.jwk import PrivateKey
from certmint.runtime import Clock, SystemClock

if TYPE_CHECKING:
    from certmint.client.storage import Paths

logger = logging.getLogger(__name__)

_DIRECTORY_MODE = 0o700
_KEY_MODE = 0o600
_PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class StoredAccount:
    id: str
    account_url: str
    key: PrivateKey
    body: dict[str, Any] = field(default_factory=dict)
    creation_dt: str | None = None
    creation_host: str | None = None


def account_id(key: PrivateKey) -> str:
    """certbot's account id: MD5 of the public key's SubjectPublicKeyInfo PEM."""
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.md5(pem, usedforsecurity=False).hexdigest()


def server_path(server_url: str) -> Path:
    """certbot's ``server_path``: netloc, then the URL path, as directories.

    The URL comes from the command line or a renewal conf; a ``..`` segment
    would put account files outside the accounts directory, so it is refused.
    """
    parts = urlsplit(server_url)
    if not parts.netloc:
        raise ClientError(f"{server_url!r} is not an ACME directory URL")
    segments = [parts.netloc, *(s for s in parts.path.split("/") if s)]
    for segment in segments:
        if segment in (".", "..") or "\x00" in segment:
            raise ClientError(f"{server_url!r} cannot be used as an accounts directory")
    return Path(*segments)


class AccountStore:
    """Accounts under ``paths.accounts_dir``, one directory per server."""

    def __init__(self, paths: Paths, *, clock: Clock | None = None) -> None:
        self.paths = paths
        self._clock: Clock = clock or SystemClock()

    def _server_dir(self, server_url: str) -> Path:
        return self.paths.accounts_dir / server_path(server_url)

    def save(
        self, server_url: str, account_url: str, private_key: PrivateKey, body: dict[str, Any]
    ) -> str:
        """Store (or update) the account; returns its id."""
        ident = account_id(private_key)
        directory = self._server_dir(server_url) / ident
        # Every level 0700, as certbot makes them: the key is the account.
        level = self.paths.accounts_dir
        ensure_directory(level, _DIRECTORY_MODE)
        for part in directory.relative_to(self.paths.accounts_dir).parts:
            level = level / part
            ensure_directory(level, _DIRECTORY_MODE)
        jwk_text = json.dumps(private_key_to_jwk(private_key), sort_keys=True)
        write_atomically(directory / "private_key.json", jwk_text.encode(), _KEY_MODE)
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            meta = {
                # certbot writes whole seconds, RFC 3339, UTC ("Z").
                "creation_dt": self._clock.now()
                .astimezone(UTC)
                .replace(microsecond=0)
                .strftime("%Y-%m-%dT%H:%M:%SZ"),
                "creation_host": socket.gethostname(),
                "register_to_eff": None,
            }
            write_atomically(meta_path, json.dumps(meta).encode(), _PUBLIC_MODE)
        regr = {"body": body, "uri": account_url}
        write_atomically(directory / "regr.json", json.dumps(regr).encode(), _PUBLIC_MODE)
        return ident

    def load_for_server(self, server_url: str) -> list[StoredAccount]:
        """Every complete account for ``server_url``, oldest first (then by id)."""
        server_dir = self._server_dir(server_url)
        try:
            entries = sorted(os.listdir(server_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        accounts: list[StoredAccount] = []
        for entry in entries:
            directory = server_dir / entry
            if entry.startswith(".") or not (directory / "regr.json").is_file():
                continue  # not an account, or an interrupted save
            try:
                accounts.append(self._load(entry, directory))
            except ClientError as exc:
                logger.warning("skipping account %s: %s", directory, exc)
        accounts.sort(key=lambda a: (a.creation_dt or "", a.id))
        return accounts

    def _load(self, ident: str, directory: Path) -> StoredAccount:
        try:
            regr = json.loads((directory / "regr.json").read_text(encoding="utf-8"))
            jwk = json.loads((directory / "private_key.json").read_text(encoding="utf-8"))
            meta_path = directory / "meta.json"
            meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise ClientError(f"account files do not load: {exc}") from None
        if not isinstance(regr, dict) or not isinstance(regr.get("uri"), str):
            raise ClientError("regr.json has no account URL")
        if not isinstance(jwk, dict) or not isinstance(meta, dict):
            raise ClientError("private_key.json or meta.json is not a JSON object")
        body = regr.get("body")
        creation_dt, creation_host = meta.get("creation_dt"), meta.get("creation_host")
        return StoredAccount(
            id=ident,
            account_url=regr["uri"],
            key=private_key_from_jwk(jwk),
            body=body if isinstance(body, dict) else {},
            creation_dt=creation_dt if isinstance(creation_dt, str) else None,
            creation_host=creation_host if isinstance(creation_host, str) else None,
        )

    def delete(self, server_url: str, id: str) -> None:
        """Remove the account's files, and server directories left empty."""
        server_dir = self._server_dir(server_url)
        directory = server_dir / id
        if not id or "/" in id or id.startswith(".") or not directory.is_dir():
            raise ClientError(f"no account {id} for {server_url}")
        shutil.rmtree(directory)
        fsync_directory(server_dir)
        level = server_dir
        while level != self.paths.accounts_dir and self.paths.accounts_dir in level.parents:
            with contextlib.suppress(OSError):
                level.rmdir()  # only succeeds when empty
            if level.exists():
                break
            level = level.parent
