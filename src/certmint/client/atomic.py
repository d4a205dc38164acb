"""Crash-safe file operations for the agent's files (DESIGN.md §4).

Every file the agent writes goes through ``write_atomically``: the bytes land
in a temporary file in the same directory (so the rename never crosses a
filesystem), are fsynced, renamed over the target with ``os.replace`` (atomic
on POSIX) and the directory is fsynced so the rename itself survives a power
cut. A reader therefore sees either the old file or the new one, never half of
one. Symlinks are switched the same way (``replace_symlink``).

Temporary names start with a dot and end in ``.tmp``; ``remove_stale_temp_files``
sweeps the ones a killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def fsync_directory(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_directory(path: Path, mode: int, *, enforce: bool = True) -> None:
    """Create ``path`` (and parents) if missing with ``mode``.

    The mode is applied with chmod so the umask cannot widen or narrow it.
    With ``enforce`` an existing directory is set to ``mode`` too (directories
    that hold keys); without, an administrator's choice is left alone. A
    symlink in place of an enforced directory is refused: directories that
    hold private keys must not be redirected elsewhere.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        return
    if enforce and stat.S_ISLNK(info.st_mode):
        raise NotADirectoryError(f"{path} is a symlink, not a directory")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    if enforce and stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def write_atomically(path: Path, data: bytes, mode: int, *, group: int | None = None) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``) in one atomic step.

    ``group``: a group id to give the file (best effort: only root or a member
    of that group may), so an administrator's ``chgrp ssl-cert`` survives.
    """
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        if group is not None:
            with contextlib.suppress(PermissionError):
                os.fchown(fd, -1, group)
        # mkstemp creates the file 0600 with O_EXCL, so a key is never readable
        # by others even for an instant; widen only non-secret files.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    os.close(fd)
    try:
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    fsync_directory(path.parent)


def replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: a new symlink under a temporary
    name, then ``os.replace`` over the old one (rename(2) is atomic)."""
    temp = link.parent / f".{link.name}.link{TEMP_SUFFIX}"
    # Only one run writes at a time (the store's lock), so a leftover of this
    # fixed name can only come from a killed run.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_directory(link.parent)


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_stale_temp_files(directory: Path) -> None:
    """Delete temporary files a killed run left in ``directory`` (not recursive)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    removed = False
    for name in names:
        if is_temp_name(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)
            removed = True
    if removed:
        fsync_directory(directory)
