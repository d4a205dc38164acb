"""Private keys and PEM files on disk, written so that a crash never leaves half a file.

Every write goes to a temporary file in the destination directory, is fsynced,
then ``os.replace``d over the target: readers see the old file or the new one,
never a torn one. Private keys are created 0600 from the first byte (the mode
comes from ``mkstemp``, not from a later chmod, so there is no window in which
the key is world-readable) and their directory is created 0700.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

PRIVATE_KEY_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def _write_atomic(path: Path, data: bytes, mode: int, dir_mode: int) -> None:
    directory = path.parent
    directory.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    # mkstemp: O_EXCL with an unpredictable name, created 0600, so a private
    # key is never readable by others, not even for an instant.
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp created it 0600; public PEM files get the requested mode.
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    # Make the rename itself durable.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    """Write ``key`` as unencrypted PEM PKCS#8, mode 0600, atomically."""
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    _write_atomic(Path(path), pem, PRIVATE_KEY_MODE, PRIVATE_DIR_MODE)


def load_private_key(path: Path) -> PrivateKeyTypes:
    """Load a PEM private key written by :func:`write_private_key`."""
    data = Path(path).read_bytes()
    return serialization.load_pem_private_key(data, password=None)


def write_pem_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write public PEM text (certificates, chains) atomically."""
    _write_atomic(Path(path), text.encode("ascii"), mode, 0o755)
