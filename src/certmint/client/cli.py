"""``certmint``: the agent (certbot's role). It arrives in the next release."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print(
        "certmint: the agent is not there yet; until it is, use certbot or lego "
        "with certmint-ca (see README.md)",
        file=sys.stderr,
    )
    return 2
