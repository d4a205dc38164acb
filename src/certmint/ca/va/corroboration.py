"""Multi-perspective issuance corroboration (CA/B Forum BR 3.2.2.9).

The primary VA and every remote perspective validate concurrently; the
primary must succeed, and at most ``allowed_non_corroborating`` remotes may
disagree (BR 3.2.2.9's table: with 2-5 remote perspectives one may fail to
corroborate, with 6 or more two). CAA is corroborated the same way (BR
3.2.2.9 applies to the CAA check of BR 3.2.2.8 too).

Like the VA, this never raises for anything the network, an applicant or a
remote perspective can cause: a remote that times out, crashes or answers
garbage is a non-corroborating perspective, never an agreement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

from certmint.ca.va.model import (
    PerspectiveOutcome,
    VAConfig,
    ValidationChecks,
    ValidationRequest,
    ValidationResult,
    Validator,
)
from certmint.protocol.problems import Problem, ProblemType
from certmint.runtime import Clock

log = logging.getLogger(__name__)
T = TypeVar("T")

PRIMARY_REGION = "primary"
# Bounds on what a refusal's detail carries (it is shown to the applicant).
_DETAIL_PER_REMOTE = 200
_DETAIL_TOTAL = 1000


class RemoteValidator(ValidationChecks, Protocol):
    """A remote perspective as corroboration sees it (``RemotePerspective``,
    or an in-process fake in tests)."""

    region: str
    timeout: float


def allowed_non_corroborating(remote_count: int) -> int:
    """BR 3.2.2.9's table: remote perspectives that may fail to corroborate."""
    if remote_count < 2:
        return 0  # BR requires at least 2 remotes; with fewer all must agree
    if remote_count <= 5:
        return 1
    return 2


def quorum_allows(remote_count: int, failures: int) -> bool:
    """True when ``failures`` of ``remote_count`` remotes still meet BR 3.2.2.9."""
    if not 0 <= failures <= remote_count:
        raise ValueError(f"{failures} failures of {remote_count} remotes")
    return failures <= allowed_non_corroborating(remote_count)


class MultiPerspectiveVA:
    """The ``Validator`` the RA uses when remote perspectives are configured."""

    def __init__(
        self,
        primary: Validator,
        remotes: Sequence[RemoteValidator],
        clock: Clock,
        *,
        primary_region: str = PRIMARY_REGION,
    ) -> None:
        regions = [r.region for r in remotes]
        if len(set(regions)) != len(regions) or primary_region in regions:
            raise ValueError("every perspective needs its own region name")
        self._primary = primary
        self._remotes = tuple(remotes)
        self._clock = clock
        self._primary_region = primary_region
        if len(self._remotes) < 2:
            log.warning(
                "%d remote VA perspective(s): BR 3.2.2.9 requires at least 2",
                len(self._remotes),
            )

    @property
    def config(self) -> VAConfig:
        return self._primary.config

    @property
    def supported_challenge_types(self) -> tuple[str, ...]:
        return self._primary.supported_challenge_types

    @property
    def remote_regions(self) -> tuple[str, ...]:
        return tuple(r.region for r in self._remotes)

    async def aclose(self) -> None:
        await asyncio.gather(
            self._primary.aclose(), *(r.aclose() for r in self._remotes), return_exceptions=True
        )

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        started = self._clock.monotonic()
        primary, remote_results = await self._fan_out(
            self._primary.validate(request),
            lambda remote: remote.validate(request),
            lambda region, problem: ValidationResult(valid=False, problem=problem),
        )
        outcomes = [_outcome(self._primary_region, primary.valid, primary.problem)]
        failures: list[tuple[str, Problem]] = []
        for remote, result in remote_results:
            outcomes.append(_outcome(remote.region, result.valid, result.problem))
            if not result.valid:
                failures.append((remote.region, result.problem or _no_problem(remote.region)))
        perspectives = tuple(outcomes)
        log.info(
            "corroboration %s %s: primary valid=%s, %d of %d remotes disagree, %.3fs",
            request.challenge_type,
            request.identifier_value,
            primary.valid,
            len(failures),
            len(self._remotes),
            self._clock.monotonic() - started,
        )
        if not primary.valid:
            return replace(primary, perspectives=perspectives)
        if quorum_allows(len(self._remotes), len(failures)):
            return replace(primary, perspectives=perspectives)
        return ValidationResult(
            valid=False,
            problem=self._refusal(failures),
            records=primary.records,
            perspectives=perspectives,
        )

    async def check_caa(
        self,
        identifier_type: str,
        identifier_value: str,
        *,
        challenge_type: str,
        account_uri: str | None,
        wildcard: bool,
    ) -> Problem | None:
        def ask(v: Validator | RemoteValidator) -> Awaitable[Problem | None]:
            return v.check_caa(
                identifier_type,
                identifier_value,
                challenge_type=challenge_type,
                account_uri=account_uri,
                wildcard=wildcard,
            )

        def refused(region: str, problem: Problem) -> Problem | None:
            return problem

        primary, remote_problems = await self._fan_out(ask(self._primary), ask, refused)
        if primary is not None:
            return primary
        failures = [
            (remote.region, problem) for remote, problem in remote_problems if problem is not None
        ]
        if quorum_allows(len(self._remotes), len(failures)):
            return None
        return self._refusal(failures)

    async def _fan_out(
        self,
        primary_call: Awaitable[T],
        remote_call: Callable[[RemoteValidator], Awaitable[T]],
        failed: Callable[[str, Problem], T],
    ) -> tuple[T, list[tuple[RemoteValidator, T]]]:
        """Run the primary and every remote concurrently; each remote bounded
        by its timeout. Returns the primary's answer and each remote's, in
        order, leaving out remotes cancelled because the primary failed first."""
        remote_tasks = [
            asyncio.create_task(self._bounded(remote, remote_call, failed))
            for remote in self._remotes
        ]
        try:
            primary = await primary_call
        except BaseException:
            for task in remote_tasks:
                task.cancel()
            await asyncio.gather(*remote_tasks, return_exceptions=True)
            raise
        if _primary_failed(primary):
            # BR 3.2.2.9 needs the primary to succeed: no remote can change
            # the outcome, so stop asking. Keep what is already in.
            for task in remote_tasks:
                task.cancel()
        answers: list[tuple[RemoteValidator, T]] = []
        try:
            for remote, task in zip(self._remotes, remote_tasks, strict=True):
                try:
                    answers.append((remote, await task))
                except asyncio.CancelledError:
                    if not task.cancelled():
                        raise  # we are being cancelled ourselves
        finally:
            for task in remote_tasks:
                task.cancel()  # a no-op for finished ones
        return primary, answers

    @staticmethod
    async def _bounded(
        remote: RemoteValidator,
        call: Callable[[RemoteValidator], Awaitable[T]],
        failed: Callable[[str, Problem], T],
    ) -> T:
        try:
            async with asyncio.timeout(remote.timeout):
                return await call(remote)
        except TimeoutError:
            return failed(
                remote.region,
                Problem(
                    ProblemType.CONNECTION,
                    f"Remote perspective {remote.region} did not answer within "
                    f"{remote.timeout:g} seconds",
                    400,
                ),
            )
        except Exception:  # a remote client must not raise; if one does, it failed
            log.exception("remote perspective %s crashed", remote.region)
            return failed(
                remote.region,
                Problem(
                    ProblemType.SERVER_INTERNAL,
                    f"Remote perspective {remote.region} failed inside the CA",
                    500,
                ),
            )

    def _refusal(self, failures: list[tuple[str, Problem]]) -> Problem:
        """The problem when too many remotes disagree: their common type if
        they all agree on one, else ``unauthorized``."""
        types = {problem.type for _, problem in failures}
        if len(types) == 1:
            kind, status = types.pop(), failures[0][1].status or 400
        else:
            kind, status = ProblemType.UNAUTHORIZED, 403
        parts = [f"{region}: {_clip(problem.detail)}" for region, problem in failures]
        detail = (
            f"During multi-perspective corroboration, {len(failures)} of "
            f"{len(self._remotes)} remote perspectives did not agree: " + "; ".join(parts)
        )
        if len(detail) > _DETAIL_TOTAL:
            detail = detail[: _DETAIL_TOTAL - 3] + "..."
        return Problem(type=kind, detail=detail, status=status)


def _primary_failed(answer: object) -> bool:
    if isinstance(answer, ValidationResult):
        return not answer.valid
    return answer is not None  # check_caa: a Problem means refused


def _outcome(region: str, valid: bool, problem: Problem | None) -> PerspectiveOutcome:
    if valid or problem is None:
        return PerspectiveOutcome(region=region, valid=valid)
    return PerspectiveOutcome(
        region=region, valid=False, problem_type=problem.type, detail=_clip(problem.detail)
    )


def _no_problem(region: str) -> Problem:
    return Problem(ProblemType.SERVER_INTERNAL, f"{region} failed without a problem", 500)


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_PER_REMOTE else text[: _DETAIL_PER_REMOTE - 3] + "..."
