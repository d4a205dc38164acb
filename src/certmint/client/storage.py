"""The agent's certificates on disk, in certbot's layout (DESIGN.md §4).

::

    <config>/live/<name>/{cert,chain,fullchain,privkey}.pem  → ../../archive/<name>/<kind>N.pem
    <config>/archive/<name>/<kind>N.pem                      numbered versions
    <config>/renewal/<name>.conf                              how to renew (renewal_conf.py)
    <config>/accounts/<server>/<id>/…                         accounts.py

Users, web server configurations and scripts point at ``live/``; a renewal
writes version N+1 into ``archive/`` and then switches the ``live/`` symlinks.

Crash safety. Every file is written atomically (atomic.py). The order of the
steps makes every interruption harmless:

- ``save_new``: archive files, live symlinks, README, and the renewal conf
  *last* — the conf is the commit point. A lineage without a conf is debris
  of a killed run; the next ``save_new`` of that name sweeps it away.
- ``save_renewal``: archive files of version N+1, the conf, then the four
  symlinks, each switched atomically. Until the first switch the previous
  certificate is live and untouched; half-written higher versions are never
  referenced, so ``load`` (which follows the symlinks) ignores them.
- Four symlinks cannot switch in one step. If a run dies between switches,
  the next run, on taking the lock, points all four at the newest version
  that is referenced and complete in the archive, so key and certificate
  always match again before anything else happens.

A lock (``fcntl.flock`` on ``.certmint.lock`` in the work and config
directories) keeps two runs from interleaving.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

import certmint
from certmint.client.accounts import AccountStore, StoredAccount
from certmint.client.atomic import (
    ensure_directory,
    fsync_directory,
    is_temp_name,
    remove_stale_temp_files,
    replace_symlink,
    write_atomically,
)
from certmint.client.errors import ClientError
from certmint.client.lineage import Lineage, Paths, default_paths
from certmint.client.renewal_conf import (
    ConfSection,
    ConfSyntaxError,
    RenewalParams,
    format_conf,
    params_from_section,
    params_to_section,
    parse_conf,
)

__all__ = [
    "AccountStore",
    "CertStore",
    "Lineage",
    "Paths",
    "RenewalParams",
    "StoredAccount",
    "default_paths",
]

logger = logging.getLogger(__name__)

KINDS = ("cert", "chain", "fullchain", "privkey")
VERSIONS_KEPT = 6  # the current version and five previous ones
LOCK_FILE_NAME = ".certmint.lock"
_ARCHIVE_FILE = re.compile(r"(cert|chain|fullchain|privkey)([0-9]+)\.pem")
_LIVE_NAMES = frozenset({*(f"{kind}.pem" for kind in KINDS), "README"})
_MAX_NAME_SUFFIX = 9999
PRIVATE_KEY_MODE = 0o600
PUBLIC_FILE_MODE = 0o644

README_TEXT = """\
This directory contains your keys and certificates.

`{prefix}privkey.pem`  : the private key for your certificate.
`{prefix}fullchain.pem`: the certificate file used in most server software.
`{prefix}chain.pem`    : used for OCSP stapling in Nginx >=1.3.7.
`{prefix}cert.pem`     : will break many server configurations, and should not be used
                 without reading further documentation (see link below).

WARNING: DO NOT MOVE OR RENAME THESE FILES!
         certmint (like Certbot) expects these files to remain in this location
         in order to function properly!

We recommend not moving these files. For more information, see the Certbot
User Guide at https://certbot.eff.org/docs/using.html#where-are-my-certificates.
"""


@dataclass
class _HeldLock:
    descriptors: list[int]
    depth: int = 1


# Locks this process holds, by lock file paths. flock belongs to an open file
# description, so a second open-and-flock from this same process would fail;
# the registry lets every CertStore of one run share the run's lock.
_HELD_LOCKS: dict[tuple[str, ...], _HeldLock] = {}


def _version_of(target: str, kind: str) -> int | None:
    match = _ARCHIVE_FILE.fullmatch(os.path.basename(target))
    if match is None or match.group(1) != kind:
        return None
    return int(match.group(2))


def _check_name(name: str) -> None:
    if (
        not name
        or name.startswith(".")
        or "/" in name
        or "\x00" in name
        or name != name.strip()
        or len(name) > 255
    ):
        raise ClientError(f"{name!r} is not a usable certificate name")


class CertStore:
    """Lineages under ``paths.config_dir``. Methods that change files hold the
    lock (taking it for the call if the process does not hold it already)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    # ------------------------------------------------------------ the lock

    def _lock_paths(self) -> list[Path]:
        found: dict[str, Path] = {}
        for directory in (self.paths.work_dir, self.paths.config_dir):
            path = directory / LOCK_FILE_NAME
            found.setdefault(os.path.realpath(path), path)
        return list(found.values())

    def _lock_key(self) -> tuple[str, ...]:
        return tuple(os.path.realpath(p) for p in self._lock_paths())

    def holds_lock(self) -> bool:
        return self._lock_key() in _HELD_LOCKS

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive, non-blocking: a second run fails at once with a clear message.

        The first acquisition in a process also finishes what a killed run
        left half done (symlinks switched part way, temporary files).
        """
        key = self._lock_key()
        held = _HELD_LOCKS.get(key)
        if held is not None:
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
            return
        descriptors: list[int] = []
        try:
            for path in self._lock_paths():
                ensure_directory(path.parent, 0o755, enforce=False)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                descriptors.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ClientError(f"another certmint run holds {path}") from None
        except BaseException:
            for fd in descriptors:
                os.close(fd)
            raise
        _HELD_LOCKS[key] = _HeldLock(descriptors)
        try:
            self._recover()
            yield
        finally:
            del _HELD_LOCKS[key]
            for fd in reversed(descriptors):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.holds_lock():
            yield
        else:
            with self.lock():
                yield

    def _recover(self) -> None:
        remove_stale_temp_files(self.paths.renewal_dir)
        for name in self._conf_names():
            try:
                self._repair_links(name)
            except (ClientError, OSError, ConfSyntaxError) as exc:
                # A broken lineage must not stop the others; load() reports it.
                logger.warning("could not check the files of %s: %s", name, exc)

    # ------------------------------------------------------------ reading

    def _conf_path(self, name: str) -> Path:
        return self.paths.renewal_dir / f"{name}.conf"

    def _conf_names(self) -> list[str]:
        try:
            entries = os.listdir(self.paths.renewal_dir)
        except FileNotFoundError:
            return []
        return sorted(
            e[: -len(".conf")] for e in entries if e.endswith(".conf") and not e.startswith(".")
        )

    def exists(self, name: str) -> bool:
        _check_name(name)
        return self._conf_path(name).is_file()

    def _read_conf(self, name: str) -> ConfSection:
        path = self._conf_path(name)
        try:
            return parse_conf(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClientError(f"no certificate named {name} (expected {path})") from None
        except (OSError, UnicodeDecodeError, ConfSyntaxError) as exc:
            raise ClientError(f"{path} cannot be read: {exc}") from None

    def _layout(self, name: str, conf: ConfSection) -> tuple[Path, dict[str, Path]]:
        """The archive directory and the live paths, as the conf says (certbot
        honours them) or else the default layout."""

        def path_from(key: str, default: Path) -> Path:
            value = conf.get(key)
            return Path(value) if isinstance(value, str) and value else default

        archive = path_from("archive_dir", self.paths.archive_dir / name)
        live = {k: path_from(k, self.paths.live_dir / name / f"{k}.pem") for k in KINDS}
        return archive, live

    def load(self, name: str) -> Lineage:
        _check_name(name)
        conf = self._read_conf(name)
        archive, live = self._layout(name, conf)
        section = conf.get("renewalparams", {})
        if not isinstance(section, dict):
            raise ClientError(f"{self._conf_path(name)} has no [renewalparams] section")
        try:
            params = params_from_section(section)
        except ConfSyntaxError as exc:
            raise ClientError(f"{self._conf_path(name)}: {exc}") from None
        # The live symlinks say which version is current; archive files of a
        # higher version that nothing points at are a killed run's leftovers.
        try:
            version = _version_of(os.readlink(live["cert"]), "cert")
        except OSError:
            version = None
        if version is None:
            raise ClientError(f"certificate {name}: {live['cert']} is not a link into the archive")
        for kind in KINDS:
            if not live[kind].is_file():
                raise ClientError(f"certificate {name}: {live[kind]} is missing")
        try:
            cert_pem = live["cert"].read_bytes()
            x509.load_pem_x509_certificate(cert_pem)
        except (OSError, ValueError) as exc:
            raise ClientError(f"certificate {name}: {live['cert']} does not load: {exc}") from None
        if not params.domains:
            params = _with_domains(params, cert_pem)
        return Lineage(
            name=name,
            live_dir=live["cert"].parent,
            cert_path=live["cert"],
            chain_path=live["chain"],
            fullchain_path=live["fullchain"],
            privkey_path=live["privkey"],
            version=version,
            params=params,
            archive_dir=archive,
            renewal_conf_path=self._conf_path(name),
            cert_pem=cert_pem,
        )

    def lineages(self) -> list[Lineage]:
        """Every lineage that loads, by name; broken ones are logged and skipped
        (as certbot does) so that one bad file does not stop every renewal."""
        return [lineage for lineage, _ in self._scan() if lineage is not None]

    def invalid_lineages(self) -> list[tuple[str, str]]:
        """(name, reason) for each renewal conf whose lineage does not load."""
        return [(name, reason) for lineage, (name, reason) in self._scan() if lineage is None]

    def _scan(self) -> list[tuple[Lineage | None, tuple[str, str]]]:
        results: list[tuple[Lineage | None, tuple[str, str]]] = []
        for name in self._conf_names():
            try:
                results.append((self.load(name), (name, "")))
            except ClientError as exc:
                logger.warning("skipping certificate %s: %s", name, exc)
                results.append((None, (name, str(exc))))
        return results

    # ------------------------------------------------------------ writing

    def save_new(
        self,
        name: str,
        *,
        key_pem: bytes,
        cert_pem: bytes,
        chain_pem: bytes,
        fullchain_pem: bytes,
        params: RenewalParams,
    ) -> Lineage:
        """Create a lineage (version 1); ``<name>-0001`` etc. if ``name`` is taken."""
        _check_name(name)
        contents = {"cert": cert_pem, "chain": chain_pem, "fullchain": fullchain_pem}
        contents["privkey"] = key_pem
        with self._locked():
            name = self._free_name(name)
            self._prepare_top_directories()
            archive = self.paths.archive_dir / name
            live_dir = self.paths.live_dir / name
            ensure_directory(archive, 0o700)
            ensure_directory(live_dir, 0o755, enforce=False)
            for kind in KINDS:
                self._write_archive_file(archive, kind, 1, contents[kind])
            for kind in KINDS:
                replace_symlink(live_dir / f"{kind}.pem", _relative(archive, kind, 1, live_dir))
            write_atomically(live_dir / "README", README_TEXT.format(prefix="").encode(), 0o644)
            links = {kind: live_dir / f"{kind}.pem" for kind in KINDS}
            self._write_conf(name, None, archive, links, params)
            return self.load(name)

    def save_renewal(
        self,
        name: str,
        *,
        key_pem: bytes,
        cert_pem: bytes,
        chain_pem: bytes,
        fullchain_pem: bytes,
        params: RenewalParams,
    ) -> Lineage:
        """Add version N+1 and make it live; keep the current and five previous."""
        contents = {"cert": cert_pem, "chain": chain_pem, "fullchain": fullchain_pem}
        contents["privkey"] = key_pem
        with self._locked():
            current = self.load(name)
            conf = self._read_conf(name)
            archive, links = self._layout(name, conf)
            ensure_directory(archive, 0o700)
            version = max([current.version, *self._archive_versions(archive)]) + 1
            group, key_mode = _private_key_owner(links["privkey"])
            # The key first, so that every later file of this version has its key.
            for kind in ("privkey", "cert", "chain", "fullchain"):
                self._write_archive_file(
                    archive, kind, version, contents[kind], group=group, key_mode=key_mode
                )
            self._write_conf(name, conf, archive, links, params)
            for kind in ("privkey", "fullchain", "chain", "cert"):
                link = links[kind]
                replace_symlink(link, _relative(archive, kind, version, link.parent))
            self._prune(archive, version)
            return self.load(name)

    def delete(self, name: str) -> None:
        """Remove the lineage: renewal conf first (so an interruption leaves
        debris, never a half lineage), then live and archive."""
        _check_name(name)
        with self._locked():
            if not self.exists(name):
                raise ClientError(f"no certificate named {name}")
            conf_path = self._conf_path(name)
            conf_path.unlink()
            fsync_directory(conf_path.parent)
            # Only the default layout is removed wholesale: a conf that points
            # elsewhere must not make us delete a directory we do not own.
            for directory in (self.paths.live_dir / name, self.paths.archive_dir / name):
                if directory.is_dir() and not directory.is_symlink():
                    shutil.rmtree(directory)
                    fsync_directory(directory.parent)

    # ------------------------------------------------------------ steps

    def _prepare_top_directories(self) -> None:
        ensure_directory(self.paths.config_dir, 0o755, enforce=False)
        ensure_directory(self.paths.archive_dir, 0o700)
        ensure_directory(self.paths.live_dir, 0o700, enforce=False)
        ensure_directory(self.paths.renewal_dir, 0o755, enforce=False)
        readme = self.paths.live_dir / "README"
        if not readme.exists():
            write_atomically(readme, README_TEXT.format(prefix="[cert name]/").encode(), 0o644)

    def _write_archive_file(
        self,
        archive: Path,
        kind: str,
        version: int,
        data: bytes,
        *,
        group: int | None = None,
        key_mode: int = PRIVATE_KEY_MODE,
    ) -> None:
        path = archive / f"{kind}{version}.pem"
        if kind == "privkey":
            write_atomically(path, data, key_mode, group=group)
        else:
            write_atomically(path, data, PUBLIC_FILE_MODE)

    def _write_conf(
        self,
        name: str,
        previous: ConfSection | None,
        archive: Path,
        links: dict[str, Path],
        params: RenewalParams,
    ) -> None:
        # Keep what we do not write ourselves (comments aside), as certbot's
        # atomic_rewrite does, but replace [renewalparams] wholesale.
        doc: ConfSection = {}
        doc["version"] = certmint.__version__
        doc["archive_dir"] = str(archive)
        for kind in ("cert", "privkey", "chain", "fullchain"):
            doc[kind] = str(links[kind])
        for key, value in (previous or {}).items():
            if key not in doc and key != "renewalparams":
                doc[key] = value
        doc["renewalparams"] = params_to_section(params)
        try:
            text = format_conf(doc)
        except ConfSyntaxError as exc:
            raise ClientError(f"cannot record the renewal parameters of {name}: {exc}") from None
        write_atomically(self._conf_path(name), text.encode("utf-8"), 0o644)

    def _free_name(self, wanted: str) -> str:
        """``wanted``, or certbot's ``wanted-0001``… if a lineage has it."""
        for index in range(_MAX_NAME_SUFFIX + 1):
            name = wanted if index == 0 else f"{wanted}-{index:04d}"
            if self._conf_path(name).exists():
                continue
            archive, live_dir = self.paths.archive_dir / name, self.paths.live_dir / name
            if _is_debris(archive, live_dir):
                # A killed save_new of this name: nothing refers to it yet.
                for directory in (archive, live_dir):
                    if directory.is_dir():
                        shutil.rmtree(directory)
                return name
        raise ClientError(f"no free certificate name left for {wanted}")

    def _archive_versions(self, archive: Path) -> set[int]:
        versions: set[int] = set()
        for entry in os.listdir(archive):
            match = _ARCHIVE_FILE.fullmatch(entry)
            if match is not None:
                versions.add(int(match.group(2)))
        return versions

    def _prune(self, archive: Path, current: int) -> None:
        """Keep the current version and the five complete versions before it;
        drop older ones, incomplete ones (a killed run's) and any higher. A kept
        file that certbot made a symlink to an older key (--reuse-key) keeps
        its target."""
        files: dict[int, list[str]] = {}
        for entry in os.listdir(archive):
            match = _ARCHIVE_FILE.fullmatch(entry)
            if match is not None:
                files.setdefault(int(match.group(2)), []).append(entry)
        complete_before = sorted(
            (v for v, entries in files.items() if v < current and len(entries) == len(KINDS)),
            reverse=True,
        )
        keep_versions = {current, *complete_before[: VERSIONS_KEPT - 1]}
        kept = [e for v in keep_versions for e in files.get(v, [])]
        protected: set[str] = set()
        for entry in kept:
            target = archive / entry
            for _ in range(VERSIONS_KEPT + 2):  # bounded: no symlink loops
                if not target.is_symlink():
                    break
                target = archive / os.path.basename(os.readlink(target))
                protected.add(target.name)
        for version, entries in files.items():
            if version in keep_versions:
                continue
            for entry in entries:
                if entry not in protected:
                    with contextlib.suppress(FileNotFoundError):
                        (archive / entry).unlink()
        fsync_directory(archive)

    def _repair_links(self, name: str) -> None:
        """Point all four live symlinks at one version after an interrupted switch."""
        conf = self._read_conf(name)
        archive, links = self._layout(name, conf)
        remove_stale_temp_files(archive)
        remove_stale_temp_files(links["cert"].parent)
        versions: dict[str, int | None] = {}
        for kind, link in links.items():
            try:
                versions[kind] = _version_of(os.readlink(link), kind)
            except OSError:
                versions[kind] = None
        referenced = {v for v in versions.values() if v is not None}
        if len(referenced) == 1 and None not in versions.values():
            return
        for version in sorted(referenced, reverse=True):
            if all((archive / f"{kind}{version}.pem").is_file() for kind in KINDS):
                logger.warning("%s: finishing an interrupted switch to version %d", name, version)
                for kind, link in links.items():
                    if versions[kind] != version:
                        replace_symlink(link, _relative(archive, kind, version, link.parent))
                return


def _relative(archive: Path, kind: str, version: int, live_dir: Path) -> str:
    # certbot's links are relative (../../archive/<name>/cert1.pem), so the
    # whole config directory can be moved or backed up and restored elsewhere.
    return os.path.relpath(archive / f"{kind}{version}.pem", live_dir)


def _is_debris(archive: Path, live_dir: Path) -> bool:
    """True if neither directory holds anything but what our own save_new writes."""
    for directory, allowed in ((archive, None), (live_dir, _LIVE_NAMES)):
        try:
            info = directory.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            return False
        for entry in os.listdir(directory):
            if is_temp_name(entry):
                continue
            if allowed is None:
                if _ARCHIVE_FILE.fullmatch(entry) is None:
                    return False
            elif entry not in allowed:
                return False
    return True


def _private_key_owner(live_privkey: Path) -> tuple[int | None, int]:
    """The previous key's group, and 0600 plus its group-read bit: an
    administrator who let a server's group read the key keeps that (certbot
    carries group and group-read over the same way). Never anything for others."""
    try:
        info = live_privkey.stat()
    except OSError:
        return None, PRIVATE_KEY_MODE
    return info.st_gid, PRIVATE_KEY_MODE | (stat.S_IMODE(info.st_mode) & 0o040)


def _with_domains(params: RenewalParams, cert_pem: bytes) -> RenewalParams:
    """certbot keeps no list of names: it takes them from the certificate."""
    from dataclasses import replace

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return params
    names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return replace(params, domains=tuple(dict.fromkeys(names)))
