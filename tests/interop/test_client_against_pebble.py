"""Our agent's protocol layers against Pebble (Debian), with Pebble's chaos on:
5 % of good nonces refused and a real (shortened) validation delay."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.client.acme import AcmeClient
from certmint.client.errors import AcmeProblemError
from certmint.client.session import AcmeSession
from certmint.protocol.jwk import PrivateKey, generate_private_key
from certmint.protocol.messages import Identifier
from certmint.testing.pebble import RunningPebble, issuing_roots_pem, running_pebble

from ..inprocess.client.acme_flow import obtain, san_names

pytestmark = pytest.mark.interop

ClientFactory = Callable[..., AcmeClient]


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPebble]:
    # Default nonce chaos (5 %), validation delay of 0 or 1 s, one extra chain.
    with running_pebble(tmp_path_factory.mktemp("pebble"), alternate_roots=1) as running:
        yield running


def client_factory(pebble: RunningPebble) -> tuple[ClientFactory, list[AcmeSession]]:
    sessions: list[AcmeSession] = []

    def make(*, register: bool = True, key: PrivateKey | None = None) -> AcmeClient:
        session = AcmeSession(
            pebble.directory_url,
            key or generate_private_key("ES256"),
            verify=str(pebble.tls_root_pem_path),
            timeout=10,
        )
        sessions.append(session)
        client = AcmeClient(session)
        if register:
            client.register(contact=["mailto:ops@pebble.example.com"], agree_tos=True)
        return client

    return make, sessions


@pytest.fixture
def new_client(pebble: RunningPebble) -> Iterator[ClientFactory]:
    make, sessions = client_factory(pebble)
    yield make
    for session in sessions:
        session.close()


def common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_full_issuance_and_preferred_chain(
    pebble: RunningPebble, new_client: ClientFactory
) -> None:
    client = new_client()
    names = ["one.pebble.example.com", "two.pebble.example.com"]
    issued = obtain(client, names, pebble.challtestsrv_management_url)
    assert san_names(issued.leaf) == set(names)
    chain = x509.load_pem_x509_certificates(issued.fullchain_pem.encode())
    assert chain[0].issuer == chain[1].subject

    default_root, alternate_root = (
        x509.load_pem_x509_certificate(pem) for pem in issuing_roots_pem(pebble, count=2)
    )
    assert chain[-1].issuer == default_root.subject
    assert issued.order.certificate is not None
    preferred = client.download_certificate(
        issued.order.certificate, preferred_chain=common_name(alternate_root.subject)
    )
    top = x509.load_pem_x509_certificates(preferred.encode())[-1]
    assert top.issuer == alternate_root.subject
    assert x509.load_pem_x509_certificates(preferred.encode())[0] == chain[0]
    # Pebble has no ARI (renewalInfo) in its directory.
    assert client.renewal_info(issued.leaf) is None


def test_bad_nonce_retries_under_heavy_rejection(tmp_path: Path) -> None:
    # 30 % refused: retries are certain to happen, exhausting 11 tries is not.
    with running_pebble(tmp_path / "pebble", nonce_reject_percent=30) as heavy:
        make, sessions = client_factory(heavy)
        try:
            client = make()
            obtain(client, ["nonce.pebble.example.com"], heavy.challtestsrv_management_url)
            for _ in range(40):  # bounded: top up until a retry was seen
                if client.session.bad_nonce_retries:
                    break
                client.account()
            assert client.session.bad_nonce_retries > 0
        finally:
            for session in sessions:
                session.close()


def test_account_operations(new_client: ClientFactory) -> None:
    client = new_client()
    assert client.account().status == "valid"
    assert client.update_account(["mailto:new@pebble.example.com"]).contact == (
        "mailto:new@pebble.example.com",
    )
    old_key = client.session.key
    client.key_change(ec.generate_private_key(ec.SECP256R1()))
    assert client.account().status == "valid"
    stale = new_client(register=False, key=old_key)
    with pytest.raises(AcmeProblemError) as caught:
        stale.register(agree_tos=True, only_return_existing=True)
    assert caught.value.problem.type == "accountDoesNotExist"
    assert client.deactivate_account().status == "deactivated"
    with pytest.raises(AcmeProblemError):
        client.account()


def test_authorization_deactivation(new_client: ClientFactory) -> None:
    client = new_client()
    _, order = client.new_order([Identifier("dns", "deact.pebble.example.com")])
    (authz_url,) = order.authorizations
    assert client.deactivate_authorization(authz_url).status == "deactivated"


def test_revocation_by_account_and_by_certificate_key(
    pebble: RunningPebble, new_client: ClientFactory
) -> None:
    client = new_client()
    first = obtain(client, ["revoke1.pebble.example.com"], pebble.challtestsrv_management_url)
    second = obtain(client, ["revoke2.pebble.example.com"], pebble.challtestsrv_management_url)
    client.revoke(first.leaf.public_bytes(serialization.Encoding.DER), reason=1)
    with pytest.raises(AcmeProblemError) as again:
        client.revoke(first.leaf.public_bytes(serialization.Encoding.DER))
    assert again.value.problem.type == "alreadyRevoked"
    stranger = new_client(register=False)
    stranger.revoke(second.leaf.public_bytes(serialization.Encoding.DER), cert_key=second.cert_key)


def test_external_account_binding(tmp_path: Path) -> None:
    hmac_key = b"certmint-pebble-eab-key-32-bytes"
    with running_pebble(tmp_path / "pebble", eab_keys={"kid-1": hmac_key}) as eab_pebble:
        make, sessions = client_factory(eab_pebble)
        try:
            refused = make(register=False)
            with pytest.raises(AcmeProblemError) as caught:
                refused.register(agree_tos=True)
            assert caught.value.problem.type == "externalAccountRequired"
            bound = make(register=False)
            url, account = bound.register(agree_tos=True, eab=("kid-1", hmac_key))
            assert account.status == "valid" and bound.session.kid == url
        finally:
            for session in sessions:
                session.close()
