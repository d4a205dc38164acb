"""Every AcmeClient operation against the real certmint CA on loopback sockets.

The CA runs as ``certmint-ca serve`` with one worker and nonce chaos on (a
fixed seed), so badNonce retries happen for real; the challenge test server
answers http-01 on the port the CA's VA dials.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmint.client.acme import AcmeClient, ari_cert_id
from certmint.client.errors import AcmeProblemError
from certmint.client.session import AcmeSession
from certmint.protocol.b64 import b64url_decode
from certmint.protocol.jwk import generate_private_key
from certmint.protocol.messages import Identifier
from certmint.testing.harness import LoopbackCA, program_path, running_ca

from .acme_flow import authorize_http01, obtain, san_names

NONCE_REJECT_PERCENT = "20"
CHAOS_SEED = "20260501"

ClientFactory = Callable[..., AcmeClient]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCA]:
    serve_args = (
        "--workers", "1",
        "--chaos-nonce-reject", NONCE_REJECT_PERCENT,
        "--chaos-seed", CHAOS_SEED,
    )  # fmt: skip
    with running_ca(
        tmp_path_factory.mktemp("certmint-ca"),
        serve_args=serve_args,
        challtestsrv_answers_challenges=True,
    ) as loopback:
        yield loopback


@pytest.fixture
def new_client(ca: LoopbackCA) -> Iterator[ClientFactory]:
    sessions: list[AcmeSession] = []

    def make(*, register: bool = True, key: object = None) -> AcmeClient:
        session = AcmeSession(
            ca.directory_url,
            key or generate_private_key("ES256"),  # type: ignore[arg-type]
            verify=str(ca.root_pem_path),
            timeout=10,
        )
        sessions.append(session)
        client = AcmeClient(session)
        if register:
            client.register(contact=["mailto:ops@client.example.com"], agree_tos=True)
        return client

    yield make
    for session in sessions:
        session.close()


def test_full_issuance_with_bad_nonce_retries(ca: LoopbackCA, new_client: ClientFactory) -> None:
    client = new_client(register=False)
    account_url, account = client.register(contact=["mailto:a@client.example.com"], agree_tos=True)
    assert account.status == "valid" and account.contact == ("mailto:a@client.example.com",)
    assert client.session.kid == account_url

    names = ["one.client.example.com", "two.client.example.com"]
    issued = obtain(client, names, ca.challtestsrv_management_url)
    assert issued.order.status == "valid"
    assert san_names(issued.leaf) == set(names)
    chain = x509.load_pem_x509_certificates(issued.fullchain_pem.encode())
    assert len(chain) >= 2 and chain[0].issuer == chain[1].subject

    # With 20 % of nonces refused a flow this long all but always meets one;
    # a few more requests make sure the retry path ran (bounded).
    for _ in range(40):
        if client.session.bad_nonce_retries:
            break
        client.account()
    assert client.session.bad_nonce_retries > 0


def test_register_again_returns_the_same_account(new_client: ClientFactory) -> None:
    client = new_client()
    first_url = client.session.kid
    again = new_client(register=False, key=client.session.key)
    url, _ = again.register(agree_tos=True, only_return_existing=True)
    assert url == first_url


def test_only_return_existing_for_an_unknown_key(new_client: ClientFactory) -> None:
    client = new_client(register=False)
    with pytest.raises(AcmeProblemError) as caught:
        client.register(agree_tos=True, only_return_existing=True)
    assert caught.value.problem.type == "accountDoesNotExist"


def test_account_update_key_change_and_deactivation(new_client: ClientFactory) -> None:
    client = new_client()
    assert client.account().status == "valid"
    updated = client.update_account(["mailto:new@client.example.com"])
    assert updated.contact == ("mailto:new@client.example.com",)
    assert client.account().contact == ("mailto:new@client.example.com",)

    old_key = client.session.key
    new_key = ec.generate_private_key(ec.SECP384R1())
    client.key_change(new_key)
    assert client.session.key is new_key
    assert client.account().status == "valid"
    # The old key no longer names an account.
    stale = new_client(register=False, key=old_key)
    with pytest.raises(AcmeProblemError) as caught:
        stale.register(agree_tos=True, only_return_existing=True)
    assert caught.value.problem.type == "accountDoesNotExist"

    assert client.deactivate_account().status == "deactivated"
    with pytest.raises(AcmeProblemError) as refused:
        client.account()
    assert refused.value.problem.type == "unauthorized"


def test_deactivate_authorization_invalidates_the_order(new_client: ClientFactory) -> None:
    client = new_client()
    order_url, order = client.new_order([Identifier("dns", "deact.client.example.com")])
    (authz_url,) = order.authorizations
    assert client.get_authorization(authz_url).status == "pending"
    assert client.deactivate_authorization(authz_url).status == "deactivated"
    assert client.get_order(order_url).status == "invalid"


def test_failed_validation_is_reported_on_the_challenge(new_client: ClientFactory) -> None:
    client = new_client()
    _, order = client.new_order([Identifier("dns", "unanswered.client.example.com")])
    (authz_url,) = order.authorizations
    authz = client.get_authorization(authz_url)
    challenge = next(c for c in authz.challenges if c.type == "http-01")
    client.answer_challenge(challenge.url)  # nothing provisioned: the VA finds 404
    settled = client.poll_authorization(authz_url, timeout=30)
    assert settled.status == "invalid"
    failed = next(c for c in settled.challenges if c.type == "http-01")
    assert failed.status == "invalid" and failed.error is not None


def test_rejected_identifier_is_a_problem(new_client: ClientFactory) -> None:
    client = new_client()
    with pytest.raises(AcmeProblemError) as caught:
        client.new_order([Identifier("dns", "bad..name.example.com")])
    assert caught.value.problem.type in ("rejectedIdentifier", "malformed")
    assert caught.value.url == client.session.directory.new_order


def test_revoke_by_account_and_by_certificate_key(
    ca: LoopbackCA, new_client: ClientFactory
) -> None:
    client = new_client()
    first = obtain(client, ["revoke1.client.example.com"], ca.challtestsrv_management_url)
    second = obtain(client, ["revoke2.client.example.com"], ca.challtestsrv_management_url)
    first_der = first.leaf.public_bytes(serialization.Encoding.DER)
    client.revoke(first_der, reason=4)  # superseded
    with pytest.raises(AcmeProblemError) as again:
        client.revoke(first_der, reason=4)
    assert again.value.problem.type == "alreadyRevoked"

    # Anyone holding the certificate's key may revoke it, account or not.
    stranger = new_client(register=False)
    stranger.revoke(second.leaf.public_bytes(serialization.Encoding.DER), cert_key=second.cert_key)
    with pytest.raises(AcmeProblemError) as done:
        client.revoke(second.leaf.public_bytes(serialization.Encoding.DER))
    assert done.value.problem.type == "alreadyRevoked"


def test_preferred_chain_picks_the_chain_up_to_the_named_root(
    ca: LoopbackCA, new_client: ClientFactory
) -> None:
    client = new_client()
    root = x509.load_pem_x509_certificate(Path(ca.root_pem_path).read_bytes())
    root_cn = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    issued = obtain(
        client, ["chain.client.example.com"], ca.challtestsrv_management_url,
        preferred_chain=str(root_cn),
    )  # fmt: skip
    top = x509.load_pem_x509_certificates(issued.fullchain_pem.encode())[-1]
    assert top.issuer == root.subject
    assert issued.order.certificate is not None
    unknown = client.download_certificate(issued.order.certificate, preferred_chain="No Such CA")
    assert unknown == client.download_certificate(issued.order.certificate)


def test_renewal_info_and_replaces(ca: LoopbackCA, new_client: ClientFactory) -> None:
    client = new_client()
    issued = obtain(client, ["ari.client.example.com"], ca.challtestsrv_management_url)
    info = client.renewal_info(issued.fullchain_pem)
    assert info is not None
    leaf = issued.leaf
    assert leaf.not_valid_before_utc <= info.start < info.end <= leaf.not_valid_after_utc

    cert_id = ari_cert_id(leaf)
    _, order = client.new_order([Identifier("dns", "ari.client.example.com")], replaces=cert_id)
    assert order.replaces == cert_id


def test_profile_is_sent(new_client: ClientFactory) -> None:
    client = new_client()
    profiles = client.session.directory.meta.get("profiles", {})
    name = next(iter(profiles))
    _, order = client.new_order([Identifier("dns", "profile.client.example.com")], profile=name)
    assert order.profile == name
    with pytest.raises(AcmeProblemError) as caught:
        client.new_order([Identifier("dns", "profile.client.example.com")], profile="nope")
    assert caught.value.problem.type == "invalidProfile"


def test_authorization_reuse_is_handled(ca: LoopbackCA, new_client: ClientFactory) -> None:
    client = new_client()
    names = ["reuse.client.example.com"]
    obtain(client, names, ca.challtestsrv_management_url)
    _, order = client.new_order([Identifier("dns", names[0])])
    for authz_url in order.authorizations:
        assert authorize_http01(client, authz_url, ca.challtestsrv_management_url).status == "valid"


def test_external_account_binding(tmp_path: Path) -> None:
    with running_ca(tmp_path / "eab-ca", serve_args=("--workers", "1", "--eab-required")) as eab_ca:
        created = subprocess.run(
            [program_path("certmint-ca"), "eab", "create", "--data-dir", str(eab_ca.data_dir)],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        fields = dict(line.split(": ", 1) for line in created.stdout.splitlines())
        eab = (fields["kid"], b64url_decode(fields["hmac-key"]))
        keys = [generate_private_key("ES256") for _ in range(3)]
        sessions = [
            AcmeSession(eab_ca.directory_url, key, verify=str(eab_ca.root_pem_path)) for key in keys
        ]
        try:
            refused, bound, second = (AcmeClient(s) for s in sessions)
            with pytest.raises(AcmeProblemError) as caught:
                refused.register(agree_tos=True)
            assert caught.value.problem.type == "externalAccountRequired"
            url, account = bound.register(agree_tos=True, eab=eab)
            assert account.status == "valid" and bound.session.kid == url
            # The key binds one account only.
            with pytest.raises(AcmeProblemError):
                second.register(agree_tos=True, eab=eab)
        finally:
            for session in sessions:
                session.close()
