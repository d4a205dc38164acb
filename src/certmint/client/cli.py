"""``certmint``: the agent (certbot's role).

The top of the program: reads flags, the terminal and the environment, and
turns every failure into one plain line (``-v`` adds the traceback).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path

from certmint.client.errors import ClientError
from certmint.client.options import parse
from certmint.client.ui import Terminal
from certmint.runtime import SystemClock, SystemEntropy


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    term = Terminal(
        interactive=not args.non_interactive and sys.stdin.isatty() and sys.stdout.isatty(),
        quiet=args.quiet,
        verbose=args.verbose > 0,
    )
    from certmint.client.commands import COMMANDS
    from certmint.client.context import Context

    # The top of the program: the only place that reads the real environment,
    # clock, randomness and user; everything below gets them from ``ctx``.
    ctx = Context.from_args(
        args,
        term,
        environ=dict(os.environ),
        is_root=os.geteuid() == 0,
        home=Path.home(),
        clock=SystemClock(),
        entropy=SystemEntropy(),
        sleep=time.sleep,
    )
    try:
        _log_to_file(ctx)
        logging.getLogger("certmint").info("certmint %s", args.verb)
        return COMMANDS[args.verb](ctx)
    except ClientError as exc:
        term.error(str(exc))
        return 1
    except KeyboardInterrupt:
        term.error("interrupted; nothing was left half-done")
        return 130
    except Exception as exc:  # one line; -v shows the traceback
        logging.getLogger("certmint").exception("unexpected error")
        if args.verbose:
            traceback.print_exc()
        term.error(f"unexpected error: {type(exc).__name__}: {exc}")
        return 1
    finally:
        ctx.close()


def _log_to_file(ctx: object) -> None:
    from certmint.client.context import Context

    assert isinstance(ctx, Context)
    try:
        ctx.paths.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = RotatingFileHandler(
            ctx.paths.logs_dir / "certmint.log", maxBytes=1 << 20, backupCount=5
        )
    except OSError as exc:
        raise ClientError(f"cannot write logs to {ctx.paths.logs_dir}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("certmint")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
