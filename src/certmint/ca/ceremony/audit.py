"""The ceremony's audit log: one JSON object per line, appended, fsynced.

Every run appends a ``start`` record, one record per step (``done``, or
``already done`` on a rerun), and ``finish``, or ``refused`` with the reason
when the ceremony stops. Nothing is ever rewritten: the file is the
witnesses' record of what happened, in order, including the runs that
failed. Each record carries the ceremony file's SHA-256 so that it names the
exact script it followed, and the time from the injected clock. See
docs/ceremony.md for the fields.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

AUDIT_FORMAT = "certmint-ceremony-audit/1"


class AuditLockedError(Exception):
    """Another run of the ceremony is in progress."""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def rfc3339(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


class AuditLog:
    """Appends records to ``path`` (created 0600 on first use).

    ``open()`` holds an exclusive lock on the file for the whole run, so two
    runs of one ceremony cannot interleave (nor both generate a key)."""

    def __init__(
        self, path: Path, *, ceremony: str, config_path: Path, config_sha256: str, run: str
    ) -> None:
        self._path = Path(path)
        self._fd: int | None = None
        self._common: dict[str, Any] = {
            "format": AUDIT_FORMAT,
            "ceremony": ceremony,
            "config": str(config_path),
            "config_sha256": config_sha256,
            "run": run,
        }

    @property
    def path(self) -> Path:
        return self._path

    def open(self) -> None:
        """Open and lock the log; AuditLockedError if another run holds it."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: each record lands whole at the end of the file.
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditLockedError(f"another ceremony run holds {self._path}") from None
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def append(self, event: str, when: datetime, **fields: Any) -> dict[str, Any]:
        assert self._fd is not None, "AuditLog.open() first"
        record = {**self._common, "event": event, "time": rfc3339(when), **fields}
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode("utf-8"))
        # Durable before the ceremony moves on to the next step.
        os.fsync(self._fd)
        return record


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of an audit log, in order (for tests and reviewers)."""
    records: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            value = json.loads(line)
            if not isinstance(value, dict):
                raise ValueError(f"{path}: a record is not a JSON object")
            records.append(value)
    return records
