"""A ceremony key: a 0600 PEM file or a key labelled on a PKCS#11 token.

Both answer the same questions the steps ask: does it exist, make it, sign
with it, and is it the algorithm the ceremony file says. A key in a token
must be hardware-bound (generated there, sensitive and never extractable):
the ceremony refuses to certify a CA key that was ever outside an HSM.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from certmint.ca.ceremony.config import CeremonyError, HsmConfig, KeyConfig
from certmint.ca.issuance.keys import load_private_key, write_private_key
from certmint.ca.issuance.pkcs11 import (
    KEY_SPECS,
    Pkcs11Signer,
    generate_key_pair,
    key_exists,
)
from certmint.ca.issuance.signer import FileSigner, Signer, SignerError


def read_secret_file(path: Path, what: str) -> str:
    """A PIN from a file only its owner can read; one trailing newline dropped."""
    try:
        info = os.stat(path)
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CeremonyError(f"{what} {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CeremonyError(
            f"{what} {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            "chmod 600 it"
        )
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise CeremonyError(f"{what} {path} is empty")
    return secret


def matches_spec(public_key: CertificateIssuerPublicKeyTypes, spec: str) -> bool:
    family, size = KEY_SPECS[spec]
    if family == "rsa":
        return isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == size
    return isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == family


def spec_of(public_key: CertificateIssuerPublicKeyTypes) -> str:
    for spec in KEY_SPECS:
        if matches_spec(public_key, spec):
            return spec
    return type(public_key).__name__


class CeremonyKey:
    """The key a root or intermediate step names."""

    def __init__(self, config: KeyConfig) -> None:
        self.config = config
        self._signer: Signer | None = None
        self.generated = False

    @property
    def in_hsm(self) -> bool:
        return self.config.hsm is not None

    def _hsm(self) -> tuple[HsmConfig, str, str]:
        hsm, label = self.config.hsm, self.config.label
        assert hsm is not None and label is not None
        return hsm, read_secret_file(hsm.pin_file, f"hsm {hsm.name} pin_file"), label

    def describe(self) -> str:
        if self.config.file is not None:
            return f"file {self.config.file}"
        hsm, label = self.config.hsm, self.config.label
        assert hsm is not None
        return f"pkcs11:token={hsm.token};object={label};type=private"

    def exists(self) -> bool:
        try:
            if self.config.file is not None:
                return self.config.file.exists()
            hsm, pin, label = self._hsm()
            return key_exists(hsm.module, hsm.token, pin, label)
        except SignerError as exc:
            raise CeremonyError(str(exc)) from None

    def generate(self) -> None:
        """Make the key where the ceremony file says. Never overwrites."""
        spec = self.config.algorithm
        try:
            if self.config.file is not None:
                if self.config.file.exists():
                    raise CeremonyError(f"{self.config.file} exists; not overwriting a key")
                family, size = KEY_SPECS[spec]
                key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                if family == "rsa":
                    key = rsa.generate_private_key(public_exponent=65537, key_size=size)
                else:
                    curve = ec.SECP384R1() if size == 384 else ec.SECP256R1()
                    key = ec.generate_private_key(curve)
                # 0600 from the first byte, written atomically (keys.py).
                write_private_key(self.config.file, key)
            else:
                hsm, pin, label = self._hsm()
                generate_key_pair(hsm.module, hsm.token, pin, label, spec)
        except SignerError as exc:
            raise CeremonyError(str(exc)) from None
        self.generated = True

    def signer(self) -> Signer:
        if self._signer is not None:
            return self._signer
        try:
            if self.config.file is not None:
                path = self.config.file
                mode = stat.S_IMODE(os.stat(path).st_mode)
                if mode & 0o077:
                    raise CeremonyError(f"key file {path} has mode {mode:04o}; chmod 600 it")
                key = load_private_key(path)
                if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                    raise CeremonyError(f"{path}: not an RSA or ECDSA key")
                signer: Signer = FileSigner(key, key_id=f"file:{path}")
            else:
                hsm, pin, label = self._hsm()
                hsm_signer = Pkcs11Signer(hsm.module, hsm.token, pin, label)
                protection = hsm_signer.protection()
                if not protection.hardware_bound:
                    raise CeremonyError(
                        f"{hsm_signer.key_id} is not hardware-bound (generated on the token, "
                        f"always sensitive, never extractable): {asdict(protection)}"
                    )
                signer = hsm_signer
        except SignerError as exc:
            raise CeremonyError(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise CeremonyError(f"key {self.describe()}: {exc}") from None
        if not matches_spec(signer.public_key, self.config.algorithm):
            raise CeremonyError(
                f"key {self.describe()} is {spec_of(signer.public_key)}, "
                f"the ceremony file says {self.config.algorithm}"
            )
        self._signer = signer
        return signer

    def audit(self) -> dict[str, Any]:
        """What the audit record says about this key."""
        signer = self.signer()
        record: dict[str, Any] = {
            "id": signer.key_id,
            "algorithm": self.config.algorithm,
            "generated": self.generated,
        }
        if isinstance(signer, Pkcs11Signer):
            hsm = self.config.hsm
            assert hsm is not None
            record["token"] = hsm.token
            record["module"] = hsm.module
            record["protection"] = asdict(signer.protection())
        return record
