"""``certmint-ca admin revoke`` as an operator runs it: a real subprocess on a
real SQLite data directory, checked through the SA afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.ca.keypolicy import spki_sha256
from certmint.ca.storage import StorageAuthority, open_storage
from certmint.ca.storage.records import (
    ACCOUNT_VALID,
    BLOCKED_BY_ADMIN,
    CERT_GOOD,
    CERT_REVOKED,
    FINALIZE_NONE,
    AccountRecord,
    CertificateRecord,
    OrderRecord,
)
from certmint.runtime import SystemClock
from certmint.testing.harness import program_path

TIMEOUT = 60


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    path.mkdir()
    yield path


def db(data_dir: Path) -> StorageAuthority:
    return open_storage(f"sqlite:///{data_dir / 'certmint.db'}")


_counter = iter(range(1, 10_000))


def add_certificate(
    sa: StorageAuthority, account_id: str, key_digest: str, *, expired: bool = False
) -> str:
    """A certificate row (the CLI reads rows, not DER) for ``account_id``."""
    n = next(_counter)
    now = SystemClock().now()
    if sa.get_account(account_id) is None:
        sa.create_account(
            AccountRecord(
                account_id, f"thumb-{account_id}", "{}", ACCOUNT_VALID, (), True, None, now
            )
        )
    order = OrderRecord(
        id=f"order-{n}",
        account_id=account_id,
        identifiers=(("dns", f"n{n}.example.com"),),
        authz_ids=(),
        profile="classic",
        not_before=None,
        not_after=None,
        expires=now + timedelta(days=7),
        created_at=now,
        finalize_state=FINALIZE_NONE,
    )
    sa.create_order(order, [])
    assert sa.begin_finalize(order.id)
    serial = f"{n:036x}"
    sa.complete_finalize(
        order.id,
        CertificateRecord(
            serial=serial,
            account_id=account_id,
            order_id=order.id,
            issuer_id="e1",
            der=b"\x30\x00",
            names=(f"n{n}.example.com",),
            not_before=now - timedelta(days=100 if expired else 1),
            not_after=now - timedelta(days=10) if expired else now + timedelta(days=89),
            key_spki_sha256=key_digest,
            issued_at=now,
            crl_shard=n % 16 + 1,
        ),
    )
    return serial


def admin_revoke(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program_path("certmint-ca"), "admin", "revoke", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def state(sa: StorageAuthority, serial: str) -> tuple[str, int | None]:
    record = sa.get_certificate(serial)
    assert record is not None
    return record.status, record.revocation_reason


def test_revoke_by_serial(data_dir: Path) -> None:
    sa = db(data_dir)
    try:
        first = add_certificate(sa, "alice", "11" * 32)
        second = add_certificate(sa, "alice", "22" * 32)
    finally:
        sa.close()
    done = admin_revoke(data_dir, "--serial", first, "--serial", "0x" + second.lstrip("0"),
                        "--reason", "privilegeWithdrawn")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{first} revoked (privilegeWithdrawn)",
        f"{second} revoked (privilegeWithdrawn)",
    ]
    again = admin_revoke(data_dir, "--serial", first)
    assert again.returncode == 1
    assert again.stdout == ""
    assert f"{first} was already revoked" in again.stderr
    sa = db(data_dir)
    try:
        assert state(sa, first) == (CERT_REVOKED, 9)
        # The shard the certificate names is marked for its next CRL.
        record = sa.get_certificate(first)
        assert record is not None and record.crl_shard is not None
    finally:
        sa.close()


def test_revoke_by_account(data_dir: Path) -> None:
    sa = db(data_dir)
    try:
        mine = [add_certificate(sa, "bob", f"{i:02x}" * 32) for i in range(3)]
        expired = add_certificate(sa, "bob", "44" * 32, expired=True)
        other = add_certificate(sa, "carol", "55" * 32)
    finally:
        sa.close()
    done = admin_revoke(data_dir, "--account", "bob", "--reason", "superseded")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"{s} revoked (superseded)" for s in mine)
    sa = db(data_dir)
    try:
        assert all(state(sa, s) == (CERT_REVOKED, 4) for s in mine)
        assert state(sa, expired) == (CERT_GOOD, None)
        assert state(sa, other) == (CERT_GOOD, None)
    finally:
        sa.close()
    nobody = admin_revoke(data_dir, "--account", "nobody")
    assert nobody.returncode == 1 and "no account nobody" in nobody.stderr


@pytest.mark.parametrize("form", ["private", "public", "certificate"])
def test_revoke_by_key_file_blocks_the_key(data_dir: Path, tmp_path: Path, form: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    digest = spki_sha256(key.public_key()).hex()
    sa = db(data_dir)
    try:
        with_key = [add_certificate(sa, "dave", digest), add_certificate(sa, "erin", digest)]
        superseded = add_certificate(sa, "dave", digest)
        assert sa.revoke_certificate(superseded, 4, SystemClock().now())
        unrelated = add_certificate(sa, "dave", "66" * 32)
    finally:
        sa.close()
    key_file = tmp_path / "key.pem"
    if form == "private":
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    elif form == "public":
        key_file.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    else:  # e.g. a self-signed "please revoke this key" certificate
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "compromised")])
        now = SystemClock().now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        key_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    done = admin_revoke(data_dir, "--key-file", str(key_file))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(lines[:2]) == sorted(f"{s} revoked (keyCompromise)" for s in with_key)
    assert lines[2] == f"{superseded} revoked (keyCompromise; was revoked for another reason)"
    assert f"key {digest} blocked" in done.stderr
    sa = db(data_dir)
    try:
        for serial in (*with_key, superseded):
            assert state(sa, serial) == (CERT_REVOKED, 1)
        assert state(sa, unrelated) == (CERT_GOOD, None)
        blocked = sa.get_blocked_key(digest)
        assert blocked is not None and blocked.source == BLOCKED_BY_ADMIN
    finally:
        sa.close()
    again = admin_revoke(data_dir, "--key-file", str(key_file))
    assert again.returncode == 1 and "already blocked" in again.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--serial", "zz"), "--serial must be"),
        (("--serial", "01", "--reason", "cACompromise"), "--reason must be one of"),
        (("--serial", "01", "--reason", "certificateHold"), "--reason must be one of"),
        (("--key-file", "/nonexistent.pem"), "cannot read --key-file"),
    ],
)
def test_refusals_are_one_line(data_dir: Path, args: tuple[str, ...], complaint: str) -> None:
    done = admin_revoke(data_dir, *args)
    assert done.returncode == 2
    assert complaint in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_an_unknown_serial_is_one_line(data_dir: Path) -> None:
    db(data_dir).close()
    done = admin_revoke(data_dir, "--serial", "abcdef")
    assert done.returncode == 1
    assert done.stderr.strip() == f"certmint-ca: no certificate with serial {'abcdef':0>36}"


def test_the_options_exclude_each_other(data_dir: Path) -> None:
    done = admin_revoke(data_dir, "--serial", "01", "--account", "x")
    assert done.returncode == 2
    assert "not allowed with" in done.stderr
