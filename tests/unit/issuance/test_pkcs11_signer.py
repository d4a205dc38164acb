"""Pkcs11Signer against SoftHSM2, a real PKCS#11 token: each key type signs
certificates and CRLs that verify, keys are generated non-extractable, and
every failure is a one-line SignerError."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certmint.ca.issuance.pkcs11 import (
    KEY_SPECS,
    Pkcs11Signer,
    generate_key_pair,
    key_exists,
    release_modules,
)
from certmint.ca.issuance.signer import SignerError, spki_fingerprint, verify_signature
from certmint.ca.issuance.signing import sign_certificate, sign_crl
from certmint.testing.softhsm import SoftHsm, SoftHsmToken, softhsm_session

NOW = datetime(2026, 3, 1, tzinfo=UTC)
PIN = "4321"


@pytest.fixture
def hsm(tmp_path: Path) -> Iterator[SoftHsm]:
    # SOFTHSM2_CONF set for this test only, the module released around it.
    with softhsm_session(tmp_path / "hsm") as hsm:
        yield hsm


@pytest.fixture
def token(hsm: SoftHsm) -> SoftHsmToken:
    return hsm.init_token("certmint-test", PIN)


def _self_signed(signer: Pkcs11Signer, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .serial_number(1)
        .issuer_name(subject)
        .subject_name(subject)
        .public_key(signer.public_key)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return sign_certificate(builder, signer)


@pytest.mark.parametrize("spec", sorted(KEY_SPECS))
def test_each_key_type_signs_a_certificate_and_a_crl_that_verify(
    hsm: SoftHsm, token: SoftHsmToken, spec: str
) -> None:
    public = generate_key_pair(hsm.module_path, token.label, token.pin, f"key-{spec}", spec)
    signer = Pkcs11Signer(hsm.module_path, token.label, token.pin, f"key-{spec}")
    assert spki_fingerprint(signer.public_key) == spki_fingerprint(public)
    assert signer.key_id == f"pkcs11:token=certmint-test;object=key-{spec};type=private"

    family, size = KEY_SPECS[spec]
    key = signer.public_key
    if family == "rsa":
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == size
        assert isinstance(signer.hash_algorithm, hashes.SHA256)
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == family
        expected = hashes.SHA384 if size == 384 else hashes.SHA256
        assert isinstance(signer.hash_algorithm, expected)

    cert = _self_signed(signer, f"PKCS#11 {spec}")
    cert.verify_directly_issued_by(cert)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == signer.hash_algorithm.name

    crl = sign_crl(
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=7)),
        signer,
    )
    assert crl.is_signature_valid(key)


def test_ecdsa_signature_is_der_and_randomised(hsm: SoftHsm, token: SoftHsmToken) -> None:
    generate_key_pair(hsm.module_path, token.label, token.pin, "e", "ecdsa-p384")
    signer = Pkcs11Signer(hsm.module_path, token.label, token.pin, "e")
    first, second = signer.sign(b"tbs"), signer.sign(b"tbs")
    assert first[0] == 0x30  # DER SEQUENCE { r, s }, not raw r || s
    assert first != second  # ECDSA draws a fresh k each time
    assert verify_signature(signer.public_key, first, b"tbs")
    assert verify_signature(signer.public_key, second, b"tbs")
    assert not verify_signature(signer.public_key, first, b"other")


def test_generated_keys_are_sensitive_never_extractable_and_labelled(
    hsm: SoftHsm, token: SoftHsmToken
) -> None:
    public = generate_key_pair(hsm.module_path, token.label, token.pin, "r", "rsa-2048")
    protection = Pkcs11Signer(hsm.module_path, token.label, token.pin, "r").protection()
    assert protection.sensitive and protection.always_sensitive
    assert not protection.extractable and protection.never_extractable
    assert protection.local and protection.hardware_bound

    # CKA_ID is the certificate's SKI (RFC 5280 §4.2.1.2 method 1).
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    # This process is logged in already (the signer's session): no C_Login.
    lib = pkcs11.lib(hsm.module_path)
    with lib.get_token(token_label=token.label).open() as session:
        private = session.get_key(ObjectClass.PRIVATE_KEY, label="r")
        assert private[Attribute.ID] == x509.SubjectKeyIdentifier.from_public_key(public).digest
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            _ = private[Attribute.PRIVATE_EXPONENT]


def test_generating_over_an_existing_label_is_refused(hsm: SoftHsm, token: SoftHsmToken) -> None:
    assert not key_exists(hsm.module_path, token.label, token.pin, "dup")
    generate_key_pair(hsm.module_path, token.label, token.pin, "dup", "ecdsa-p256")
    assert key_exists(hsm.module_path, token.label, token.pin, "dup")
    with pytest.raises(SignerError, match="already holds a key labelled 'dup'"):
        generate_key_pair(hsm.module_path, token.label, token.pin, "dup", "rsa-2048")


def test_unknown_key_spec_is_refused(hsm: SoftHsm, token: SoftHsmToken) -> None:
    with pytest.raises(SignerError, match="unknown key type 'ecdsa-p521'"):
        generate_key_pair(hsm.module_path, token.label, token.pin, "x", "ecdsa-p521")


def _one_line(exc: pytest.ExceptionInfo[SignerError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_wrong_pin_is_one_signer_error_line(hsm: SoftHsm, token: SoftHsmToken) -> None:
    with pytest.raises(SignerError) as exc:
        Pkcs11Signer(hsm.module_path, token.label, "0000", "anything")
    assert _one_line(exc) == "token 'certmint-test': wrong PIN"


def test_wrong_pin_after_a_good_login_is_still_refused(hsm: SoftHsm, token: SoftHsmToken) -> None:
    generate_key_pair(hsm.module_path, token.label, token.pin, "k", "ecdsa-p256")
    Pkcs11Signer(hsm.module_path, token.label, token.pin, "k")
    with pytest.raises(SignerError) as exc:
        Pkcs11Signer(hsm.module_path, token.label, "0000", "k")
    assert _one_line(exc) == "token 'certmint-test': wrong PIN"


def test_missing_token_and_key_are_one_line_each(hsm: SoftHsm, token: SoftHsmToken) -> None:
    with pytest.raises(SignerError) as exc:
        Pkcs11Signer(hsm.module_path, "no-such-token", PIN, "k")
    assert _one_line(exc) == f"no token labelled 'no-such-token' in {hsm.module_path}"
    with pytest.raises(SignerError) as exc:
        Pkcs11Signer(hsm.module_path, token.label, PIN, "no-such-key")
    assert _one_line(exc) == "no private key labelled 'no-such-key' on token 'certmint-test'"


def test_missing_module_is_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "libnothing.so")
    with pytest.raises(SignerError) as exc:
        Pkcs11Signer(missing, "t", PIN, "k")
    assert _one_line(exc).startswith(f"cannot load PKCS#11 module {missing}")


def test_two_tokens_and_threads_share_the_module_safely(hsm: SoftHsm) -> None:
    # Two tokens (an offline root token, an online one) in one process, and
    # several threads signing at once: the module lock serialises the calls
    # SoftHSM2 would otherwise run without its mutexes.
    online = hsm.init_token("online", PIN)
    offline = hsm.init_token("offline", "9999")
    generate_key_pair(hsm.module_path, online.label, online.pin, "e", "ecdsa-p384")
    generate_key_pair(hsm.module_path, online.label, online.pin, "r", "rsa-2048")
    generate_key_pair(hsm.module_path, offline.label, offline.pin, "x", "ecdsa-p384")
    signers = [
        Pkcs11Signer(hsm.module_path, online.label, online.pin, "e"),
        Pkcs11Signer(hsm.module_path, online.label, online.pin, "r"),
        Pkcs11Signer(hsm.module_path, offline.label, offline.pin, "x"),
    ]
    failures: list[str] = []

    def work(index: int) -> None:
        signer = signers[index % len(signers)]
        for round_ in range(20):
            tbs = f"{index}-{round_}".encode()
            if not verify_signature(signer.public_key, signer.sign(tbs), tbs):
                failures.append(f"thread {index} round {round_}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


def test_signer_survives_release_and_reopens_its_session(hsm: SoftHsm, token: SoftHsmToken) -> None:
    generate_key_pair(hsm.module_path, token.label, token.pin, "k", "ecdsa-p256")
    signer = Pkcs11Signer(hsm.module_path, token.label, token.pin, "k")
    release_modules()  # what serve does before forking its workers
    # The old signer finds its key again through a new session...
    assert verify_signature(signer.public_key, signer.sign(b"x"), b"x")
    # ... and a new one sees the same key.
    fresh = Pkcs11Signer(hsm.module_path, token.label, token.pin, "k")
    assert verify_signature(fresh.public_key, fresh.sign(b"y"), b"y")
    assert spki_fingerprint(fresh.public_key) == spki_fingerprint(signer.public_key)
    release_modules()
    assert signer.protection().hardware_bound


def _open_sign_release(module_path: str, token: SoftHsmToken, open_lock: Path, rounds: int) -> None:
    """A child process: open a signer, sign, release; ``rounds`` times. Exit
    code = the number of rounds that failed."""
    import os

    failed = 0
    for _ in range(rounds):
        try:
            signer = Pkcs11Signer(module_path, token.label, token.pin, "k", open_lock=open_lock)
            if not verify_signature(signer.public_key, signer.sign(b"tbs"), b"tbs"):
                failed += 1
        except SignerError:
            failed += 1
        release_modules()
    os._exit(min(failed, 100))


def test_processes_opening_sessions_at_once_all_find_the_token(
    hsm: SoftHsm, token: SoftHsmToken, tmp_path: Path
) -> None:
    # serve's parent, CRL updater and workers open their sessions at the same
    # moment. SoftHSM2 rewrites the token file on C_Login, and a process that
    # looked the token up meanwhile was told it does not exist (a quarter of
    # such rounds failed without the lock); with the shared open lock none does.
    import multiprocessing

    generate_key_pair(hsm.module_path, token.label, token.pin, "k", "ecdsa-p256")
    release_modules()  # the children initialise the module themselves
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(
            target=_open_sign_release,
            args=(hsm.module_path, token, tmp_path / "pkcs11.lock", 25),
        )
        for _ in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0, 0]
