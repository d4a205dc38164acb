"""The person at the terminal: progress lines, prompts, one-line errors.

With a terminal attached, steps show a spinner while they run and a tick
when done; without one (cron, CI) each finished step is a plain line, and
``--quiet`` keeps only errors. Prompts are only ever shown on a terminal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import IO

from rich.console import Console
from rich.status import Status

# What the person saw also goes to <logs>/certmint.log (cli.py attaches the
# handler), so a failed cron run can be read afterwards, as with certbot's
# letsencrypt.log; without this the log held almost nothing.
_log = logging.getLogger("certmint.ui")
# Before that handler exists (or in library use) nothing may reach Python's
# last-resort stderr handler, which would print every error line twice.
_log.addHandler(logging.NullHandler())


class Terminal:
    def __init__(
        self,
        *,
        interactive: bool,
        quiet: bool = False,
        verbose: bool = False,
        stream: IO[str] | None = None,
        read_line: Callable[[], str] | None = None,
    ) -> None:
        self.interactive = interactive
        self.quiet = quiet
        self.verbose = verbose
        self._console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        self._errors = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self._read_line = read_line or (lambda: sys.stdin.readline())
        self._status: Status | None = None

    # -- Progress (client.flow) -------------------------------------------

    def step(self, message: str) -> None:
        if self.quiet:
            return
        if self.interactive and self._console.is_terminal:
            if self._status is None:
                self._status = self._console.status(message, spinner="dots")
                self._status.start()
            else:
                self._status.update(message)
        elif self.verbose:
            self._console.print(f"… {message}")

    def done(self, message: str) -> None:
        _log.info("%s", message)
        if self.quiet:
            return
        self._stop_status()
        self._console.print(f"[green]✓[/green] {message}" if self._fancy else f"- {message}")

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    @property
    def _fancy(self) -> bool:
        return self._console.is_terminal

    # -- messages -----------------------------------------------------------

    def say(self, message: str) -> None:
        self._stop_status()
        if not self.quiet:
            self._console.print(message)

    def error(self, message: str) -> None:
        _log.error("%s", message)
        self._stop_status()
        self._errors.print(f"certmint: {message}", markup=False)

    # -- questions (only on a terminal) ------------------------------------

    def ask(self, question: str) -> str:
        self._stop_status()
        self._console.print(question, end=" ", markup=False)
        return self._read_line().strip()

    def confirm(self, question: str) -> bool:
        answer = self.ask(f"{question} [y/N]")
        return answer.lower() in ("y", "yes")

    def pause(self, instructions: str) -> None:
        self._stop_status()
        self._console.print(instructions, markup=False)
        self.ask("Press Enter to continue")
