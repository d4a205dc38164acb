"""``certmint-ca admin revoke``: the operator revokes, straight in storage.

    certmint-ca admin revoke --serial HEX [--serial HEX ...] [--reason NAME]
    certmint-ca admin revoke --account ID [--reason NAME]
    certmint-ca admin revoke --key-file PEM

Like ``admin renewal-window`` it talks to the database directly (no running
CA needed); a running CA's CRL updater sees the revocations through the
marks each one leaves on its CRL shards and publishes them within
``--crl-update-after-revocation``. It prints one line per revoked serial,
``SERIAL revoked (REASON)``, and exits 1 when it revoked nothing.

Rules (BR 4.9.1.1, 7.2.2): the operator may use every subscriber reason and
privilegeWithdrawn (9). keyCompromise -- given with ``--reason`` or implied by
``--key-file`` -- blocks the key (it is then refused for accounts and
certificates) and revokes every unexpired certificate with it, whichever
account holds it; certificates already revoked for another reason are
re-revoked for keyCompromise (their revocation date stays), as Boulder's
admin tool does. ``--key-file`` takes a PEM public key, private key or
certificate: the key, not the file, is what is blocked.

This is the CLI layer: it reads the real clock.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from certmint.ca.issuance.profile import SERIAL_BYTES, serial_to_string
from certmint.ca.ra_revocation import (
    KEY_COMPROMISE,
    OPERATOR_REVOCATION_REASONS,
    REASON_NAMES,
)
from certmint.ca.storage.records import BLOCKED_BY_ADMIN, CERT_REVOKED
from certmint.ca.storage.sa import StorageAuthority

DEFAULT_DATA_DIR = "certmint-ca-data"
_BY_NAME = {name.lower(): code for code, name in REASON_NAMES.items()}


class AdminError(Exception):
    """A failure to report as one plain line."""


def add_revoke_parser(admin_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``revoke`` under ``certmint-ca admin``."""
    revoke = admin_sub.add_parser(
        "revoke",
        help="revoke certificates by serial, by account, or every one of a key (and block it)",
    )
    revoke.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    revoke.add_argument("--database-url")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", action="append", metavar="HEX", help="repeatable")
    which.add_argument("--account", metavar="ID", help="every unexpired certificate of it")
    which.add_argument(
        "--key-file",
        metavar="PEM",
        help="block this key (public key, private key or certificate PEM) and revoke "
        "every unexpired certificate with it, for keyCompromise",
    )
    revoke.add_argument(
        "--reason",
        default="unspecified",
        metavar="NAME",
        help="unspecified (default), keyCompromise, affiliationChanged, superseded, "
        "cessationOfOperation or privilegeWithdrawn",
    )


def run(args: argparse.Namespace) -> int:
    """``certmint-ca admin revoke``; the exit code."""
    from certmint.ca.storage import open_storage

    try:
        reason = parse_reason(args.reason)
        serials = [parse_serial(text) for text in args.serial or ()]
        key_digest = None if args.key_file is None else _key_digest(Path(args.key_file))
        if key_digest is not None and args.reason != "unspecified" and reason != KEY_COMPROMISE:
            raise AdminError("--key-file revokes for keyCompromise; drop --reason")
        data_dir = Path(args.data_dir).resolve()
        url = args.database_url or f"sqlite:///{data_dir / 'certmint.db'}"
        sa = open_storage(url)
    except AdminError as exc:
        print(f"certmint-ca: {exc}", file=sys.stderr)
        return 2
    try:
        revoker = OperatorRevoker(sa)
        if key_digest is not None:
            lines = revoker.revoke_key(
                key_digest, comment=f"admin revoke --key-file {args.key_file}"
            )
        elif args.account is not None:
            lines = revoker.revoke_account(args.account, reason)
        else:
            lines = revoker.revoke_serials(serials, reason)
    except AdminError as exc:
        print(f"certmint-ca: {exc}", file=sys.stderr)
        return 1
    finally:
        sa.close()
    for line in lines:
        print(line)
    for note in revoker.notes:
        print(f"certmint-ca: {note}", file=sys.stderr)
    return 0 if lines else 1


def parse_reason(text: str) -> int:
    code = _BY_NAME.get(text.lower())
    if code is None or code not in OPERATOR_REVOCATION_REASONS:
        names = ", ".join(REASON_NAMES[c] for c in sorted(OPERATOR_REVOCATION_REASONS))
        raise AdminError(f"--reason must be one of {names}, not {text!r}")
    return code


def parse_serial(text: str) -> str:
    cleaned = text.lower().removeprefix("0x").replace(":", "")
    if not cleaned or len(cleaned) > 40 or any(c not in "0123456789abcdef" for c in cleaned):
        raise AdminError(f"--serial must be a certificate serial in hex, not {text!r}")
    value = int(cleaned, 16)
    if value <= 0 or value.bit_length() > SERIAL_BYTES * 8:
        raise AdminError(f"no certificate of this CA has serial {cleaned}")
    return serial_to_string(value)


def _public_key_of(data: bytes) -> PublicKeyTypes | None:
    try:
        return x509.load_pem_x509_certificate(data).public_key()
    except ValueError:
        pass
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        pass
    try:
        return serialization.load_pem_private_key(data, password=None).public_key()
    except (ValueError, TypeError):
        return None


def _key_digest(path: Path) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo in a PEM key or certificate."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AdminError(f"cannot read --key-file {path}: {exc.strerror}") from None
    public_key = _public_key_of(data)
    if public_key is None:
        raise AdminError(f"--key-file {path} holds no PEM certificate, public or private key")
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


class OperatorRevoker:
    """The operator's revocations (see the module docstring for the rules)."""

    def __init__(self, sa: StorageAuthority) -> None:
        from certmint.runtime import SystemClock

        self._sa = sa
        self._now = SystemClock().now()  # the CLI layer reads the real clock
        self.notes: list[str] = []

    def revoke_key(self, key_digest: str, *, comment: str, serial: str | None = None) -> list[str]:
        outcome = self._sa.revoke_key(
            key_digest, self._now, source=BLOCKED_BY_ADMIN, comment=comment, revoked_serial=serial
        )
        self.notes.append(
            f"key {key_digest} {'blocked' if outcome.newly_blocked else 'was already blocked'}"
        )
        return [f"{s} revoked (keyCompromise)" for s in outcome.revoked] + [
            f"{s} revoked (keyCompromise; was revoked for another reason)"
            for s in outcome.reason_updated
        ]

    def revoke_serials(self, serials: Iterable[str], reason: int) -> list[str]:
        lines: list[str] = []
        for serial in serials:
            record = self._sa.get_certificate(serial)
            if record is None:
                raise AdminError(f"no certificate with serial {serial}")
            if record.not_after <= self._now:
                self.notes.append(f"{serial} has expired; not revoked")
                continue
            if reason == KEY_COMPROMISE:
                comment = f"admin revoke --serial {serial} --reason keyCompromise"
                done = self.revoke_key(record.key_spki_sha256, comment=comment, serial=serial)
                if not any(line.startswith(serial) for line in done):
                    self.notes.append(f"{serial} was already revoked for keyCompromise")
                lines += done
                continue
            if record.status == CERT_REVOKED or not self._sa.revoke_certificate(
                serial, reason, self._now
            ):
                self.notes.append(f"{serial} was already revoked")
                continue
            lines.append(f"{serial} revoked ({REASON_NAMES[reason]})")
        return lines

    def revoke_account(self, account_id: str, reason: int) -> list[str]:
        if self._sa.get_account(account_id) is None:
            raise AdminError(f"no account {account_id}")
        if reason == KEY_COMPROMISE:
            # Every key of the account's unexpired certificates is compromised.
            serials = self._sa.good_serials_for_account(account_id, self._now)
            return self.revoke_serials(serials, KEY_COMPROMISE)
        revoked = self._sa.revoke_account_certificates(account_id, reason, self._now)
        if not revoked:
            self.notes.append(f"account {account_id} has no unexpired certificate to revoke")
        return [f"{serial} revoked ({REASON_NAMES[reason]})" for serial in revoked]
