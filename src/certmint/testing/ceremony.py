"""A ready-made key ceremony for tests and benches: Let's Encrypt's shape, in small.

Two roots (X1 and X2, ECDSA P-384), two issuing intermediates under X1
(E7: ECDSA P-384, R7: RSA 2048, the pair the issue asks for), each
cross-signed by X2 so that every issued certificate has an alternate chain
to X2, and X1's CA CRL. Keys are in SoftHSM2 (roots on an "offline" token,
intermediates on an "online" one) or in 0600 files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from certmint.testing.softhsm import SoftHsm

# Public-looking URLs: pkilint refuses internal names in CA certificates
# (TLS BR 7.1.2.11.1), and nothing in the tests fetches them.
PUBLIC_BASE = "http://ca.ceremony.example.com"
ROOT_X1 = "certmint Ceremony Root X1"
ROOT_X2 = "certmint Ceremony Root X2"
# Token labels (CKA_LABEL of the token), not secrets.
OFFLINE_TOKEN = "ceremony-offline"  # noqa: S105
ONLINE_TOKEN = "ceremony-online"  # noqa: S105
OFFLINE_PIN = "offline-pin-1"
ONLINE_PIN = "online-pin-22"


@dataclass(frozen=True)
class CeremonyFiles:
    directory: Path
    config: Path
    audit_log: Path
    issuers_file: Path

    def out(self, name: str) -> Path:
        return self.directory / "out" / name


def _secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def _key(hsm: bool, token: str, name: str, algorithm: str) -> str:
    if hsm:
        return f'key = {{ algorithm = "{algorithm}", hsm = "{token}", label = "{name}" }}'
    return f'key = {{ algorithm = "{algorithm}", file = "keys/{name}.key" }}'


def _subject(common_name: str) -> str:
    return (
        f'subject = {{ country = "XX", organization = "certmint", common_name = "{common_name}" }}'
    )


def ceremony_toml(*, hsm: SoftHsm | None, with_crl: bool = True) -> str:
    """The ceremony file's text (paths relative to its directory)."""
    in_hsm = hsm is not None
    parts = [
        "[ceremony]",
        'name = "certmint test ceremony"',
        'audit_log = "audit.jsonl"',
        'issuers_file = "out/issuers.toml"',
        "",
    ]
    if hsm is not None:
        for name, token in (("offline", OFFLINE_TOKEN), ("online", ONLINE_TOKEN)):
            parts += [
                f"[hsm.{name}]",
                f'module = "{hsm.module_path}"',
                f'token = "{token}"',
                f'pin_file = "pins/{name}.pin"',
                "",
            ]

    def step(*lines: str) -> None:
        parts.extend(["[[step]]", *lines, ""])

    for root, name in (("x1", ROOT_X1), ("x2", ROOT_X2)):
        step(
            'kind = "root"',
            f'id = "{root}"',
            f'certificate = "out/root-{root}.pem"',
            "validity_days = 7305",
            _subject(name),
            _key(in_hsm, "offline", root, "ecdsa-p384"),
        )
    for inter, algorithm in (("e7", "ecdsa-p384"), ("r7", "rsa-2048")):
        step(
            'kind = "intermediate"',
            f'id = "{inter}"',
            'issuer = "x1"',
            f'certificate = "out/{inter}.pem"',
            "validity_days = 1095",
            f'crl_url = "{PUBLIC_BASE}/x1.crl"',
            f'ca_issuers_url = "{PUBLIC_BASE}/x1.der"',
            _subject(f"certmint Ceremony {inter.upper()}"),
            _key(in_hsm, "online", inter, algorithm),
        )
    for inter in ("e7", "r7"):
        step(
            'kind = "cross-sign"',
            f'id = "{inter}-x2"',
            f'subject_step = "{inter}"',
            'issuer = "x2"',
            f'certificate = "out/{inter}-cross-x2.pem"',
            "validity_days = 1095",
            f'crl_url = "{PUBLIC_BASE}/x2.crl"',
            f'ca_issuers_url = "{PUBLIC_BASE}/x2.der"',
        )
    if with_crl:
        step(
            'kind = "crl"',
            'id = "x1-crl"',
            'issuer = "x1"',
            'crl = "out/x1.crl"',
            "number = 1",
            "next_update_days = 365",
        )
    return "\n".join(parts)


def write_ceremony(
    directory: Path, *, hsm: SoftHsm | None, init_tokens: bool = True, with_crl: bool = True
) -> CeremonyFiles:
    """Write the ceremony file (and PIN files, tokens) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if hsm is not None:
        _secret(directory / "pins" / "offline.pin", OFFLINE_PIN)
        _secret(directory / "pins" / "online.pin", ONLINE_PIN)
        if init_tokens:
            hsm.init_token(OFFLINE_TOKEN, OFFLINE_PIN)
            hsm.init_token(ONLINE_TOKEN, ONLINE_PIN)
    config = directory / "ceremony.toml"
    config.write_text(ceremony_toml(hsm=hsm, with_crl=with_crl))
    return CeremonyFiles(
        directory=directory,
        config=config,
        audit_log=directory / "audit.jsonl",
        issuers_file=directory / "out" / "issuers.toml",
    )
