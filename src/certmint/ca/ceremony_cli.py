"""``certmint-ca ceremony run CONFIG.toml``: the key ceremony, from one declarative file.

The CLI layer: the real clock and the operating system's randomness come in
here, each step's line goes to the terminal, and every failure is one line
(exit 2) with nothing half-made (see ``ceremony/steps.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register ``ceremony`` on ``certmint-ca``'s subparsers."""
    cmd = sub.add_parser(
        "ceremony",
        help="key ceremony: roots, intermediates, cross-signs and CA CRLs from one config file",
    )
    ceremony_sub = cmd.add_subparsers(dest="ceremony_command", required=True)
    run_cmd = ceremony_sub.add_parser(
        "run",
        help="carry out the ceremony file's steps (safe to rerun: finished steps are "
        "checked and reported 'already done')",
    )
    run_cmd.add_argument(
        "config", metavar="CONFIG.toml", help="the ceremony file (docs/ceremony.md)"
    )


def run(args: argparse.Namespace) -> int:
    from certmint.ca.ceremony.config import CeremonyError, load_ceremony_config
    from certmint.ca.ceremony.steps import ALREADY_DONE, DONE, Ceremony
    from certmint.ca.issuance.pkcs11 import release_modules
    from certmint.runtime import SystemClock, SystemEntropy

    def say(line: str) -> None:
        print(f"certmint-ca: {line}", flush=True)

    try:
        config = load_ceremony_config(Path(args.config))
        say(f"ceremony {config.name!r} from {config.path} (sha256 {config.sha256})")
        result = Ceremony(config, SystemClock(), SystemEntropy(), report=say).run()
    except CeremonyError as exc:
        print(f"certmint-ca: ceremony: {exc}", file=sys.stderr)
        return 2
    finally:
        release_modules()
    done = sum(1 for state in result.states if state.status == DONE)
    already = sum(1 for state in result.states if state.status == ALREADY_DONE)
    say(f"ceremony finished: {done} done, {already} already done; audit log {result.audit_log}")
    return 0
