"""AccountStore: certbot's accounts layout, ids and file formats."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import josepy
import pytest
from acme import messages
from certbot._internal.account import Account
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certmint.client.accounts import account_id, server_path
from certmint.client.errors import ClientError
from certmint.client.keys import private_key_to_jwk
from certmint.client.storage import AccountStore, Paths
from certmint.testing.clock import FakeClock

SERVER = "https://127.0.0.1:14000/dir"
ACCOUNT_URL = "https://127.0.0.1:14000/my-account/1"
BODY = {"status": "valid", "contact": ["mailto:admin@example.com"], "orders": "https://x/orders"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "work", tmp_path / "logs")


@pytest.fixture
def accounts(paths: Paths) -> AccountStore:
    return AccountStore(paths, clock=FakeClock(datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=UTC)))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://acme-v02.api.letsencrypt.org/directory",
            "acme-v02.api.letsencrypt.org/directory",
        ),
        ("https://127.0.0.1:14000/dir", "127.0.0.1:14000/dir"),
        ("https://ca.example/acme/v2/directory", "ca.example/acme/v2/directory"),
        ("https://ca.example", "ca.example"),
    ],
)
def test_server_path_is_certbots(url: str, expected: str) -> None:
    assert server_path(url) == Path(expected)


@pytest.mark.parametrize("url", ["https://ca.example/../../etc", "not a url", "https://ca/./x"])
def test_server_path_refuses_escapes(url: str) -> None:
    with pytest.raises(ClientError):
        server_path(url)


def test_save_writes_certbots_layout(accounts: AccountStore, paths: Paths) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ident = accounts.save(SERVER, ACCOUNT_URL, key, BODY)
    directory = paths.config_dir / "accounts" / "127.0.0.1:14000" / "dir" / ident
    assert sorted(os.listdir(directory)) == ["meta.json", "private_key.json", "regr.json"]
    for level in (directory, directory.parent, directory.parent.parent, paths.accounts_dir):
        assert mode(level) == 0o700
    assert mode(directory / "private_key.json") == 0o600
    assert json.loads((directory / "private_key.json").read_text()) == private_key_to_jwk(key)
    assert json.loads((directory / "regr.json").read_text()) == {"body": BODY, "uri": ACCOUNT_URL}
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["creation_dt"] == "2026-03-04T05:06:07Z"
    assert meta["register_to_eff"] is None
    assert isinstance(meta["creation_host"], str)


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)],
    ids=["ec", "rsa"],
)
def test_certbot_reads_our_files_and_agrees_on_the_id(
    accounts: AccountStore, paths: Paths, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> None:
    ident = accounts.save(SERVER, ACCOUNT_URL, key, BODY)
    directory = paths.accounts_dir / server_path(SERVER) / ident
    jwk = josepy.JWK.json_loads(  # type: ignore[attr-defined]
        (directory / "private_key.json").read_text()
    )
    regr = messages.RegistrationResource.json_loads((directory / "regr.json").read_text())
    meta = Account.Meta.json_loads((directory / "meta.json").read_text())
    certbot_account = Account(regr, jwk, meta)
    assert certbot_account.id == ident == account_id(key)
    assert regr.uri == ACCOUNT_URL
    assert meta.creation_dt == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_load_for_server(accounts: AccountStore, paths: Paths) -> None:
    assert accounts.load_for_server(SERVER) == []
    key = ec.generate_private_key(ec.SECP384R1())
    ident = accounts.save(SERVER, ACCOUNT_URL, key, BODY)
    [stored] = accounts.load_for_server(SERVER)
    assert (stored.id, stored.account_url, stored.body) == (ident, ACCOUNT_URL, BODY)
    assert private_key_to_jwk(stored.key) == private_key_to_jwk(key)
    assert stored.creation_dt == "2026-03-04T05:06:07Z"
    assert accounts.load_for_server("https://127.0.0.1:14000/other") == []


def test_saving_again_updates_the_body_and_keeps_meta(accounts: AccountStore) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first = accounts.save(SERVER, ACCOUNT_URL, key, BODY)
    later = AccountStore(accounts.paths, clock=FakeClock(datetime(2027, 1, 1, tzinfo=UTC)))
    assert later.save(SERVER, ACCOUNT_URL, key, {"status": "valid"}) == first
    [stored] = later.load_for_server(SERVER)
    assert stored.body == {"status": "valid"}
    assert stored.creation_dt == "2026-03-04T05:06:07Z"


def test_incomplete_and_broken_accounts_are_skipped(accounts: AccountStore, paths: Paths) -> None:
    good = accounts.save(SERVER, ACCOUNT_URL, ec.generate_private_key(ec.SECP256R1()), BODY)
    server_dir = paths.accounts_dir / server_path(SERVER)
    (server_dir / "interrupted").mkdir()
    (server_dir / "interrupted" / "private_key.json").write_text("{}")
    broken = accounts.save(SERVER, ACCOUNT_URL, ec.generate_private_key(ec.SECP256R1()), BODY)
    (server_dir / broken / "private_key.json").write_text('{"kty": "EC"}')
    assert [a.id for a in accounts.load_for_server(SERVER)] == [good]


def test_delete(accounts: AccountStore, paths: Paths) -> None:
    first = accounts.save(SERVER, ACCOUNT_URL, ec.generate_private_key(ec.SECP256R1()), BODY)
    second = accounts.save(SERVER, ACCOUNT_URL + "2", ec.generate_private_key(ec.SECP256R1()), BODY)
    accounts.delete(SERVER, first)
    assert [a.id for a in accounts.load_for_server(SERVER)] == [second]
    accounts.delete(SERVER, second)
    assert accounts.load_for_server(SERVER) == []
    # Empty server directories go too, as certbot removes them.
    assert os.listdir(paths.accounts_dir) == []
    with pytest.raises(ClientError, match="no account"):
        accounts.delete(SERVER, second)
    with pytest.raises(ClientError, match="no account"):
        accounts.delete(SERVER, "../..")
