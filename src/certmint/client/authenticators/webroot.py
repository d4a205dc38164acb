"""The ``webroot`` authenticator: put http-01 answers where a web server serves them.

RFC 8555 §8.3: the CA fetches ``http://<domain>/.well-known/acme-challenge/<token>``
and expects the key authorization. Like certbot's webroot plugin, this writes
``<webroot>/.well-known/acme-challenge/<token>`` for the web server already
running there (directories 0755 and files 0644, so a server running as another
user can read them) and later removes exactly what it created, nothing else.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from certmint.client.authenticators.base import ChallengeTask
from certmint.client.errors import ClientError
from certmint.protocol.challenges import is_valid_token

CHALLENGE_DIR = (".well-known", "acme-challenge")
DIR_MODE = 0o755
FILE_MODE = 0o644


class WebrootAuthenticator:
    name = "webroot"

    def __init__(self, webroot_map: Mapping[str, str]) -> None:
        # Names compare as the CA writes them: lower case, no trailing dot.
        self._webroots = {_normalise(d): Path(p) for d, p in webroot_map.items()}
        self._lock = threading.Lock()
        self._created_files: set[Path] = set()
        # Directories we made, deepest last, so cleanup removes them deepest first.
        self._created_dirs: list[Path] = []

    @property
    def challenge_types(self) -> tuple[str, ...]:
        return ("http-01",)

    def perform(self, tasks: Sequence[ChallengeTask]) -> None:
        with self._lock:
            for task in tasks:
                self._write_answer(task)

    def _write_answer(self, task: ChallengeTask) -> None:
        if task.challenge_type != "http-01":
            raise ClientError(
                f"the webroot authenticator answers only http-01, not {task.challenge_type} "
                f"for {task.domain}"
            )
        # The token becomes a file name: only the base64url alphabet may pass
        # (RFC 8555 §8.3), so no "..", "/" or NUL can reach the file system.
        if not is_valid_token(task.token):
            raise ClientError(f"the CA sent a malformed challenge token for {task.domain}")
        webroot = self._webroots.get(_normalise(task.domain))
        if webroot is None:
            raise ClientError(f"no webroot given for {task.domain}: pass -w DIR before -d name")
        if not webroot.is_dir():
            raise ClientError(f"the webroot {webroot} for {task.domain} is not a directory")
        directory = self._make_challenge_dir(webroot)
        target = directory / task.token
        try:
            _write_public(target, task.validation_value.encode())
        except OSError as exc:
            raise ClientError(
                f"cannot write the http-01 answer for {task.domain} to {target}: {exc.strerror}"
            ) from exc
        self._created_files.add(target)

    def _make_challenge_dir(self, webroot: Path) -> Path:
        directory = webroot
        for part in CHALLENGE_DIR:
            directory = directory / part
            try:
                directory.mkdir()
            except FileExistsError:
                if not directory.is_dir():
                    raise ClientError(f"{directory} exists and is not a directory") from None
                continue
            except OSError as exc:
                raise ClientError(f"cannot create {directory}: {exc.strerror}") from exc
            self._created_dirs.append(directory)
            # mkdir honours the umask; the web server must be able to enter it.
            os.chmod(directory, DIR_MODE)
        return directory

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        with self._lock:
            for task in tasks:
                if task.challenge_type != "http-01" or not is_valid_token(task.token):
                    continue
                webroot = self._webroots.get(_normalise(task.domain))
                if webroot is None:
                    continue
                target = webroot.joinpath(*CHALLENGE_DIR, task.token)
                if target in self._created_files:
                    self._created_files.discard(target)
                    with contextlib.suppress(FileNotFoundError):
                        target.unlink()
            # Remove the directories we created once none of our answers remain;
            # rmdir refuses a directory someone else has put files into, and that
            # is the point: it stays.
            for directory in list(reversed(self._created_dirs)):
                if any(path.is_relative_to(directory) for path in self._created_files):
                    continue
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    continue
                self._created_dirs.remove(directory)


def _normalise(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


def _write_public(path: Path, data: bytes) -> None:
    """Write 0644 via a temporary file in the same directory, fsync, rename: a
    web server never serves a half-written answer."""
    temp = path.with_name(f".{path.name}.certmint-tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask must not hide it from the web server
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, path)
