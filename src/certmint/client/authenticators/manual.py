"""The ``manual`` authenticator: a person, or the user's own scripts, publish the answers.

With ``--manual-auth-hook`` (and optionally ``--manual-cleanup-hook``) it runs
the hooks through the shell with certbot's documented environment, so scripts
written for certbot work unchanged:

- ``CERTBOT_DOMAIN``: the name being validated
- ``CERTBOT_VALIDATION``: the http-01 file content or the dns-01 TXT value
- ``CERTBOT_TOKEN``: the http-01 token (http-01 only)
- ``CERTBOT_REMAINING_CHALLENGES``: how many challenges follow this one
- ``CERTBOT_ALL_DOMAINS``: every name being validated, comma-separated
- ``CERTBOT_AUTH_OUTPUT``: (cleanup hook only) what the auth hook printed

Without hooks, on a terminal, it shows what to publish and waits for Enter.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from certmint.client.authenticators.base import ChallengeTask
from certmint.client.errors import ClientError

SUPPORTED = ("http-01", "dns-01")
DEFAULT_HOOK_TIMEOUT = 300.0
# Without an environment from the CLI, hooks still find the usual programs.
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_KILL_DEADLINE = 5.0


class ManualAuthenticator:
    name = "manual"

    def __init__(
        self,
        *,
        auth_hook: str | None,
        cleanup_hook: str | None,
        interactive: bool,
        prompt: Callable[[str], None],
        preferred: tuple[str, ...] = ("http-01", "dns-01"),
        environment: Mapping[str, str] | None = None,
        hook_timeout: float = DEFAULT_HOOK_TIMEOUT,
    ) -> None:
        """``environment`` is the base environment hooks run in; the CLI passes its
        own user environment, as certbot does. ``prompt`` shows instructions and
        returns once the person presses Enter."""
        unknown = [kind for kind in preferred if kind not in SUPPORTED]
        if unknown or not preferred:
            raise ClientError(
                f"the manual authenticator answers {' and '.join(SUPPORTED)}, "
                f"not {', '.join(unknown) or 'nothing'}"
            )
        self._auth_hook = auth_hook or None
        self._cleanup_hook = cleanup_hook or None
        self._interactive = interactive
        self._prompt = prompt
        self._preferred = preferred
        self._environment = dict(environment) if environment is not None else None
        self._hook_timeout = hook_timeout
        self._lock = threading.Lock()
        # The CERTBOT_* variables each performed task's auth hook saw, plus its
        # output: the cleanup hook gets the same (certbot's behaviour).
        self._performed: dict[ChallengeTask, dict[str, str]] = {}

    @property
    def challenge_types(self) -> tuple[str, ...]:
        return self._preferred

    def perform(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            if task.challenge_type not in self._preferred:
                raise ClientError(
                    f"the manual authenticator cannot answer {task.challenge_type} "
                    f"for {task.domain}"
                )
        if self._auth_hook is None and not self._interactive:
            raise ClientError(
                "manual authentication needs --manual-auth-hook when running non-interactively"
            )
        all_domains = ",".join(dict.fromkeys(task.domain for task in tasks))
        with self._lock:
            for index, task in enumerate(tasks):
                if task in self._performed:
                    continue  # already published; running a hook twice helps no one
                variables = {
                    "CERTBOT_DOMAIN": task.domain,
                    "CERTBOT_VALIDATION": task.validation_value,
                    "CERTBOT_REMAINING_CHALLENGES": str(len(tasks) - index - 1),
                    "CERTBOT_ALL_DOMAINS": all_domains,
                }
                if task.challenge_type == "http-01":
                    variables["CERTBOT_TOKEN"] = task.token
                if self._auth_hook is not None:
                    output = self._run_hook("manual-auth-hook", self._auth_hook, task, variables)
                    variables["CERTBOT_AUTH_OUTPUT"] = output.strip()
                else:
                    self._prompt(instructions(task))
                self._performed[task] = variables

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        failures: list[ClientError] = []
        with self._lock:
            for task in tasks:
                variables = self._performed.pop(task, None)
                if variables is None or self._cleanup_hook is None:
                    continue
                try:
                    self._run_hook("manual-cleanup-hook", self._cleanup_hook, task, variables)
                except ClientError as exc:
                    failures.append(exc)  # run every cleanup before reporting
        if failures:
            raise failures[0]

    def _run_hook(
        self, which: str, command: str, task: ChallengeTask, variables: Mapping[str, str]
    ) -> str:
        base = self._environment if self._environment is not None else {"PATH": _DEFAULT_PATH}
        env = {key: value for key, value in base.items() if not key.startswith("CERTBOT_")}
        env.update(variables)
        try:
            # A session of its own, so a timeout kills the hook's children too.
            process = subprocess.Popen(
                ["/bin/sh", "-c", command],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ClientError(f"cannot run the {which} for {task.domain}: {exc.strerror}") from exc
        try:
            out, err = process.communicate(timeout=self._hook_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=_KILL_DEADLINE)
            raise ClientError(
                f"the {which} for {task.domain} did not finish within "
                f"{self._hook_timeout:g} seconds and was stopped"
            ) from None
        if process.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            detail = f": {lines[-1].strip()}" if lines else ""
            raise ClientError(
                f"the {which} for {task.domain} failed with exit code {process.returncode}{detail}"
            )
        return out.decode("utf-8", "replace")


def instructions(task: ChallengeTask) -> str:
    """What a person must publish for ``task``, in certbot's words."""
    if task.challenge_type == "http-01":
        url = f"http://{task.domain}/.well-known/acme-challenge/{task.token}"
        return (
            "Create a file containing just this data:\n\n"
            f"{task.validation_value}\n\n"
            "And make it available on your web server at this URL:\n\n"
            f"{url}\n"
        )
    return (
        "Please deploy a DNS TXT record under the name:\n\n"
        f"{task.validation_name}.\n\n"
        "with the following value:\n\n"
        f"{task.validation_value}\n\n"
        "Before continuing, verify the TXT record has been deployed; it may take "
        "a while for your DNS provider's servers to publish it.\n"
    )
