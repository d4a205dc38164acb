"""The operator's key lists (``certmint-ca serve --blocked-keys-file`` and
``--weak-keys-file``) reach the whole CA: a listed key is refused with
``badPublicKey`` as an account key and as a certificate key (BR 6.1.1.3)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certmint.ca.cli import CliError, _parser, _policy_config
from certmint.ca.keypolicy import KeyPolicy, debian_weak_fingerprint, spki_sha256
from certmint.testing.acme_client import RawAcmeClient, make_csr

from .conftest import BASE_URL, TEST_POLICY, CAEnv, problem_type
from .flows import certificate_count, validate_order

pytestmark = pytest.mark.anyio

NAMES = ["listed.example.com"]


def policy_from_flags(*flags: str) -> object:
    return _policy_config(_parser().parse_args(["serve", *flags]))


async def refused_as_account_key(env: CAEnv, key: object) -> str:
    client = RawAcmeClient(env.http, f"{BASE_URL}/directory", key=key)  # type: ignore[arg-type]
    await client.load_directory()
    response = await client.new_account()
    assert response.status_code == 400, response.text
    assert problem_type(response) == "badPublicKey", response.text
    return str(response.json()["detail"])


async def test_blocked_keys_file_refuses_pem_and_digest_entries(
    env_factory: object, tmp_path: Path
) -> None:
    by_pem = ec.generate_private_key(ec.SECP256R1())
    by_digest = ec.generate_private_key(ec.SECP384R1())
    listed = tmp_path / "blocked-keys.txt"
    listed.write_text(
        "# compromised keys\n"
        + by_pem.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        + spki_sha256(by_digest.public_key()).hex(":")
        + "  # reported 2026-11-01\n"
    )
    policy = policy_from_flags("--blocked-keys-file", str(listed))
    env: CAEnv = await env_factory(  # type: ignore[operator]
        policy=replace(TEST_POLICY, blocked_key_digests=policy.blocked_key_digests)  # type: ignore[attr-defined]
    )
    for key in (by_pem, by_digest):
        assert "blocked" in await refused_as_account_key(env, key)
    # As a certificate key: refused at finalize; the order stays ready.
    client = await env.client()
    order, order_url = await validate_order(env, client, NAMES)
    csr, _ = make_csr(NAMES, key=by_pem)
    response = await client.finalize(order, csr)
    assert problem_type(response) == "badPublicKey", response.text
    assert (await client.get(order_url)).json()["status"] == "ready"
    assert certificate_count(env) == 0


async def test_weak_keys_file_adds_fingerprints(env_factory: object, tmp_path: Path) -> None:
    # An ordinary key the shipped list does not know, listed by the operator
    # in openssl-vulnkey's format (last 20 hex digits of SHA-1).
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    listed = tmp_path / "weak.txt"
    listed.write_text(debian_weak_fingerprint(key.public_key().public_numbers().n) + "\n")
    policy = policy_from_flags("--weak-keys-file", str(listed))
    KeyPolicy.default().check_account_key(key.public_key())  # not weak unless listed
    env: CAEnv = await env_factory(  # type: ignore[operator]
        policy=replace(
            TEST_POLICY,
            extra_weak_rsa_fingerprints=policy.extra_weak_rsa_fingerprints,  # type: ignore[attr-defined]
        )
    )
    assert "CVE-2008-0166" in await refused_as_account_key(env, key)


@pytest.mark.parametrize(
    ("flag", "content", "words"),
    [
        ("--blocked-keys-file", "not a key\n", "line 1"),
        ("--blocked-keys-file", None, "cannot use --blocked-keys-file"),
        ("--weak-keys-file", "zz-not-hex\n", "cannot use --weak-keys-file"),
    ],
)
def test_bad_key_list_files_are_one_line_errors(
    tmp_path: Path, flag: str, content: str | None, words: str
) -> None:
    path = tmp_path / "list.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CliError, match=words):
        policy_from_flags(flag, str(path))


def test_allow_private_network_flag_is_checked_cidr() -> None:
    args = _parser().parse_args(
        ["serve", "--allow-private-network", "10.20.0.0/16", "--allow-private-network", "fd00::1/8"]
    )
    assert args.allow_private_network == ["10.20.0.0/16", "fd00::/8"]
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--allow-private-network", "ten.0/8"])
    perspective = _parser().parse_args(
        ["va-perspective", "--listen", "127.0.0.1:0", "--region", "r1", "--secret-file", "s",
         "--allow-private-network", "192.168.7.0/24"]
    )  # fmt: skip
    assert perspective.allow_private_network == ["192.168.7.0/24"]
