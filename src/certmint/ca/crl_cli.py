"""``certmint-ca serve`` flags for CRLs: shards, schedule, delay after a revocation."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

from certmint.ca.issuance.crl import DEFAULT_CRL_SHARDS, CrlConfig

_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def add_crl_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--crl-shards",
        type=int,
        default=DEFAULT_CRL_SHARDS,
        metavar="N",
        help="CRL shards per issuer; each certificate names one in its CRL distribution "
        f"point (default {DEFAULT_CRL_SHARDS})",
    )
    serve.add_argument(
        "--crl-interval",
        default="6h",
        metavar="DURATION",
        help="rebuild every CRL this often, e.g. 6h, 30m, 3600 (default 6h; BR 4.9.7: "
        "at most 7 days)",
    )
    serve.add_argument(
        "--crl-update-after-revocation",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a revocation shows in its CRLs within this time (default 60)",
    )


def parse_duration(text: str) -> timedelta:
    """``6h``, ``30m``, ``90s``, ``2d`` or plain seconds."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 6h, 30m or 3600)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def crl_config(args: argparse.Namespace) -> CrlConfig:
    """The CrlConfig of the flags; ValueError (one sentence) if they do not make one."""
    return CrlConfig(
        shards=args.crl_shards,
        interval=parse_duration(args.crl_interval),
        update_after_revocation=timedelta(seconds=args.crl_update_after_revocation),
    )
