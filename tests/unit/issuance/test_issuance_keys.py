from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certmint.ca.issuance.keys import load_private_key, write_pem_atomic, write_private_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_private_key_round_trip_mode_0600_in_0700_dir(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "secret" / "nested" / "k.pem"
    write_private_key(path, key)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    loaded = load_private_key(path)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert _raw(loaded) == _raw(key)


def test_overwrite_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = ec.generate_private_key(ec.SECP256R1())
    second = ec.generate_private_key(ec.SECP256R1())
    write_private_key(path, first)
    write_private_key(path, second)
    loaded = load_private_key(path)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert _raw(loaded) == _raw(second)
    assert _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]


def test_private_key_mode_even_over_a_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("old")
    path.chmod(0o644)
    write_private_key(path, ec.generate_private_key(ec.SECP256R1()))
    assert _mode(path) == 0o600


def test_write_pem_atomic_mode(tmp_path: Path) -> None:
    path = tmp_path / "pub" / "c.pem"
    write_pem_atomic(path, "-----BEGIN CERTIFICATE-----\n")
    assert _mode(path) == 0o644
    write_pem_atomic(path, "second\n", mode=0o640)
    assert path.read_text() == "second\n"
    assert _mode(path) == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["c.pem"]
