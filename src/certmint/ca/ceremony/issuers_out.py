"""The ceremony's hand-over to the online CA: the issuers file ``serve`` reads.

Written (atomically, the same bytes on every rerun) when the ceremony file
names ``ceremony.issuers_file``; read by ``issuance/configured.py`` for
``certmint-ca serve --issuers-file``. It lists the roots (certificates only:
root keys stay with the ceremony, offline), every intermediate marked
``issuing`` with where its key is, and the alternate chains the
cross-signs make:

- a cross-certificate of the intermediate itself: the chain [cross];
- a cross-certificate of the intermediate's root: the chain [intermediate,
  cross], ending at the other root (ISRG Root X2 cross-signed by X1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from certmint.ca.ceremony.config import CeremonyConfig, CertificateStep
from certmint.ca.issuance.keys import write_pem_atomic

if TYPE_CHECKING:
    from certmint.ca.ceremony.steps import StepState


def _toml_string(text: str) -> str:
    # A TOML basic string accepts JSON's escapes (\", \\, \n, \uXXXX).
    return json.dumps(text, ensure_ascii=True)


def _path(target: Path, base: Path) -> str:
    return _toml_string(os.path.relpath(target, base))


def render_issuers_file(config: CeremonyConfig, states: dict[str, StepState]) -> str:
    assert config.issuers_file is not None
    base = config.issuers_file.parent
    steps = [s for s in config.steps if isinstance(s, CertificateStep)]
    issuing = [s for s in steps if s.kind == "intermediate" and s.issuing]
    roots = [s for s in steps if s.kind == "root"]
    # roots[0] is the default the management API serves at /roots/0: the
    # root of the first issuing intermediate, so the listener's TLS
    # certificate (issued by that intermediate) chains to it.
    if issuing:
        first_root = issuing[0].issuer
        roots.sort(key=lambda s: s.id != first_root)
    lines = [
        f"# Written by `certmint-ca ceremony run {config.path.name}` (sha256 {config.sha256}).",
        "# Serve with: certmint-ca serve --issuers-file " + config.issuers_file.name,
        "roots = [" + ", ".join(_path(s.certificate, base) for s in roots) + "]",
    ]
    for step in issuing:
        assert step.key is not None
        alternates: list[list[Path]] = []
        for other in steps:
            if other.kind != "cross-sign":
                continue
            if other.subject_step == step.id:
                alternates.append([other.certificate])
            elif other.subject_step == step.issuer:
                alternates.append([step.certificate, other.certificate])
        lines += [
            "",
            "[[issuer]]",
            f"id = {_toml_string(step.id)}",
            f"certificate = {_path(step.certificate, base)}",
            "alternate_chains = ["
            + ", ".join(
                "[" + ", ".join(_path(p, base) for p in chain) + "]" for chain in alternates
            )
            + "]",
        ]
        if step.key.file is not None:
            lines.append(f"key = {{ file = {_path(step.key.file, base)} }}")
        else:
            hsm = step.key.hsm
            assert hsm is not None and step.key.label is not None
            lines.append(
                f"key = {{ module = {_toml_string(hsm.module)}, token = {_toml_string(hsm.token)}, "
                f"label = {_toml_string(step.key.label)}, pin_file = {_path(hsm.pin_file, base)} }}"
            )
        state = states.get(step.id)
        if state is not None and state.cert is not None:
            subject = state.cert.subject.rfc4514_string().encode("ascii", "backslashreplace")
            lines.append(f"# {subject.decode('ascii')}, serial {state.cert.serial_number:x}")
    return "\n".join(lines) + "\n"


def write_issuers_file(config: CeremonyConfig, states: dict[str, StepState]) -> None:
    assert config.issuers_file is not None
    write_pem_atomic(config.issuers_file, render_issuers_file(config, states))
