"""Multi-perspective corroboration (BR 3.2.2.9): the quorum table and
MultiPerspectiveVA against in-process fake perspectives (through the
Validator / RemoteValidator protocols)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import pytest

from certmint.ca.va.corroboration import (
    MultiPerspectiveVA,
    allowed_non_corroborating,
    quorum_allows,
)
from certmint.ca.va.model import VAConfig, ValidationRecord, ValidationRequest, ValidationResult
from certmint.protocol.problems import Problem, ProblemType
from certmint.testing.clock import FakeClock

REQUEST = ValidationRequest(
    challenge_type="dns-01",
    identifier_type="dns",
    identifier_value="example.com",
    token="t" * 43,
    key_authorization="t" * 43 + "." + "k" * 43,
    account_uri="https://ca.test/acme/acct/1",
)
RECORD = ValidationRecord(
    url=None, hostname="example.com", port=0, addresses_resolved=(), address_used=None
)


def ok() -> ValidationResult:
    return ValidationResult(valid=True, problem=None, records=(RECORD,))


def bad(kind: str = ProblemType.UNAUTHORIZED, detail: str = "wrong TXT") -> ValidationResult:
    return ValidationResult(valid=False, problem=Problem(kind, detail, 403))


class FakePerspective:
    """A perspective whose answer (and when it gives it) the test scripts."""

    def __init__(
        self,
        region: str,
        result: ValidationResult | None = None,
        *,
        caa: Problem | None = None,
        timeout: float = 5.0,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.region = region
        self.timeout = timeout
        self.result = result if result is not None else ok()
        self.caa = caa
        self.before = before
        self.calls = 0
        self.closed = False
        self.cancelled = False

    @property
    def config(self) -> VAConfig:
        return VAConfig()

    @property
    def supported_challenge_types(self) -> tuple[str, ...]:
        return ("http-01", "dns-01")

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        self.calls += 1
        try:
            if self.before is not None:
                await self.before()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.result

    async def check_caa(
        self,
        identifier_type: str,
        identifier_value: str,
        *,
        challenge_type: str,
        account_uri: str | None,
        wildcard: bool,
    ) -> Problem | None:
        self.calls += 1
        if self.before is not None:
            await self.before()
        return self.caa

    async def aclose(self) -> None:
        self.closed = True


def mpva(primary: FakePerspective, *remotes: FakePerspective) -> MultiPerspectiveVA:
    return MultiPerspectiveVA(primary, list(remotes), FakeClock())


# --------------------------------------------------------------------------- quorum table


@pytest.mark.parametrize(
    ("remotes", "allowed"),
    [(0, 0), (1, 0), (2, 1), (3, 1), (4, 1), (5, 1), (6, 2), (7, 2), (10, 2), (20, 2)],
)
def test_allowed_non_corroborating_follows_br_table(remotes: int, allowed: int) -> None:
    assert allowed_non_corroborating(remotes) == allowed


@pytest.mark.parametrize(
    ("remotes", "failures", "allows"),
    [
        (0, 0, True),
        (1, 0, True),
        (1, 1, False),
        (2, 0, True),
        (2, 1, True),
        (2, 2, False),
        (3, 1, True),
        (3, 2, False),
        (5, 1, True),
        (5, 2, False),
        (6, 2, True),
        (6, 3, False),
        (9, 2, True),
        (9, 3, False),
    ],
)
def test_quorum_allows(remotes: int, failures: int, allows: bool) -> None:
    assert quorum_allows(remotes, failures) is allows


def test_quorum_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        quorum_allows(3, 4)
    with pytest.raises(ValueError):
        quorum_allows(3, -1)


def test_regions_must_be_distinct() -> None:
    with pytest.raises(ValueError):
        mpva(FakePerspective("primary"), FakePerspective("a"), FakePerspective("a"))
    with pytest.raises(ValueError):
        mpva(FakePerspective("primary"), FakePerspective("primary"))


# --------------------------------------------------------------------------- validate


@pytest.mark.anyio
async def test_one_of_three_disagreeing_is_still_valid_and_recorded() -> None:
    remotes = [
        FakePerspective("r1"),
        FakePerspective("r2", bad(ProblemType.UNAUTHORIZED, "saw another TXT")),
        FakePerspective("r3"),
    ]
    result = await mpva(FakePerspective("primary"), *remotes).validate(REQUEST)
    assert result.valid and result.problem is None
    assert result.records == (RECORD,)
    assert [(p.region, p.valid) for p in result.perspectives] == [
        ("primary", True),
        ("r1", True),
        ("r2", False),
        ("r3", True),
    ]
    r2 = result.perspectives[2]
    assert r2.problem_type == "unauthorized"
    assert r2.detail == "saw another TXT"
    assert all(r.calls == 1 for r in remotes)


@pytest.mark.anyio
async def test_two_of_three_disagreeing_with_one_type_refuses_with_that_type() -> None:
    remotes = [
        FakePerspective("r1", bad(ProblemType.DNS, "SERVFAIL at r1")),
        FakePerspective("r2"),
        FakePerspective("r3", bad(ProblemType.DNS, "SERVFAIL at r3")),
    ]
    result = await mpva(FakePerspective("primary"), *remotes).validate(REQUEST)
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == "dns"
    assert result.problem.detail == (
        "During multi-perspective corroboration, 2 of 3 remote perspectives did not "
        "agree: r1: SERVFAIL at r1; r3: SERVFAIL at r3"
    )
    assert len(result.perspectives) == 4


@pytest.mark.anyio
async def test_two_disagreeing_for_different_reasons_refuses_as_unauthorized() -> None:
    remotes = [
        FakePerspective("r1", bad(ProblemType.DNS, "SERVFAIL")),
        FakePerspective("r2", bad(ProblemType.INCORRECT_RESPONSE, "wrong TXT")),
        FakePerspective("r3"),
    ]
    result = await mpva(FakePerspective("primary"), *remotes).validate(REQUEST)
    assert result.problem is not None
    assert result.problem.type == "unauthorized"
    assert result.problem.status == 403
    assert "2 of 3 remote perspectives did not agree: r1: SERVFAIL; r2: wrong TXT" in (
        result.problem.detail
    )


@pytest.mark.anyio
async def test_refusal_detail_is_bounded() -> None:
    remotes = [FakePerspective(f"r{i}", bad(detail="x" * 5000)) for i in range(8)]
    result = await mpva(FakePerspective("primary"), *remotes).validate(REQUEST)
    assert result.problem is not None
    assert len(result.problem.detail) <= 1000
    assert all(len(p.detail or "") <= 200 for p in result.perspectives)


@pytest.mark.anyio
async def test_single_remote_must_agree() -> None:
    result = await mpva(FakePerspective("primary"), FakePerspective("r1", bad())).validate(REQUEST)
    assert not result.valid


@pytest.mark.anyio
async def test_six_remotes_tolerate_two() -> None:
    remotes = [FakePerspective(f"r{i}", bad() if i < 2 else ok()) for i in range(6)]
    assert (await mpva(FakePerspective("primary"), *remotes).validate(REQUEST)).valid
    remotes = [FakePerspective(f"r{i}", bad() if i < 3 else ok()) for i in range(6)]
    assert not (await mpva(FakePerspective("primary"), *remotes).validate(REQUEST)).valid


@pytest.mark.anyio
async def test_primary_failing_is_the_answer_even_when_remotes_agree() -> None:
    primary = FakePerspective("primary", bad(ProblemType.INCORRECT_RESPONSE, "primary saw junk"))
    remotes = [FakePerspective(f"r{i}") for i in range(3)]
    result = await mpva(primary, *remotes).validate(REQUEST)
    assert not result.valid
    assert result.problem == Problem(ProblemType.INCORRECT_RESPONSE, "primary saw junk", 403)
    assert result.perspectives[0].region == "primary"
    assert not result.perspectives[0].valid


@pytest.mark.anyio
async def test_primary_failing_stops_waiting_for_remotes() -> None:
    never, r1_started = asyncio.Event(), asyncio.Event()

    async def hang() -> None:
        r1_started.set()
        await never.wait()

    async def after_r1_started() -> None:
        await r1_started.wait()  # r2 (no wait of its own) has answered by now

    remote = FakePerspective("r1", before=hang)
    primary = FakePerspective("primary", bad(), before=after_r1_started)
    with anyio.fail_after(5):
        result = await mpva(primary, remote, FakePerspective("r2")).validate(REQUEST)
    assert not result.valid
    assert remote.cancelled
    assert [p.region for p in result.perspectives] == ["primary", "r2"]


@pytest.mark.anyio
async def test_remote_timeout_counts_as_disagreement() -> None:
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    slow = [FakePerspective(f"slow{i}", timeout=0.05, before=hang) for i in range(2)]
    with anyio.fail_after(5):
        result = await mpva(FakePerspective("primary"), FakePerspective("r1"), *slow).validate(
            REQUEST
        )
    assert not result.valid
    assert result.problem is not None
    assert result.problem.type == "connection"
    assert "slow0: Remote perspective slow0 did not answer within 0.05 seconds" in (
        result.problem.detail
    )
    outcomes = {p.region: p for p in result.perspectives}
    assert outcomes["slow1"].problem_type == "connection"
    assert outcomes["r1"].valid


@pytest.mark.anyio
async def test_one_timeout_of_three_is_tolerated() -> None:
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    with anyio.fail_after(5):
        result = await mpva(
            FakePerspective("primary"),
            FakePerspective("r1"),
            FakePerspective("r2"),
            FakePerspective("slow", timeout=0.05, before=hang),
        ).validate(REQUEST)
    assert result.valid
    assert [p.valid for p in result.perspectives] == [True, True, True, False]


@pytest.mark.anyio
async def test_a_crashing_remote_is_a_failure_not_an_exception() -> None:
    async def crash() -> None:
        raise RuntimeError("bug")

    result = await mpva(
        FakePerspective("primary"),
        FakePerspective("r1", before=crash),
        FakePerspective("r2", before=crash),
        FakePerspective("r3"),
    ).validate(REQUEST)
    assert result.problem is not None
    assert result.problem.type == "serverInternal"


@pytest.mark.anyio
async def test_primary_and_remotes_run_concurrently() -> None:
    """Each perspective waits until every other one has started: run one
    after another, they would deadlock (caught by the bound); concurrently,
    total time is the slowest perspective's, not the sum."""
    names = ["primary", "r1", "r2", "r3"]
    started = {name: asyncio.Event() for name in names}

    def barrier(name: str) -> Callable[[], Awaitable[None]]:
        async def wait_for_all() -> None:
            started[name].set()
            for event in started.values():
                await event.wait()

        return wait_for_all

    perspectives = [FakePerspective(name, before=barrier(name)) for name in names]
    with anyio.fail_after(5):
        result = await mpva(perspectives[0], *perspectives[1:]).validate(REQUEST)
    assert result.valid
    assert len(result.perspectives) == 4


# --------------------------------------------------------------------------- CAA


async def caa(va: MultiPerspectiveVA) -> Problem | None:
    return await va.check_caa(
        "dns", "example.com", challenge_type="dns-01", account_uri=None, wildcard=False
    )


@pytest.mark.anyio
async def test_caa_corroborated_like_validation() -> None:
    refuse = Problem(ProblemType.CAA, "CAA record forbids issuance", 403)
    one = [FakePerspective("r1", caa=refuse), FakePerspective("r2"), FakePerspective("r3")]
    assert await caa(mpva(FakePerspective("primary"), *one)) is None
    two = [
        FakePerspective("r1", caa=refuse),
        FakePerspective("r2", caa=refuse),
        FakePerspective("r3"),
    ]
    problem = await caa(mpva(FakePerspective("primary"), *two))
    assert problem is not None
    assert problem.type == "caa"
    assert problem.detail.startswith(
        "During multi-perspective corroboration, 2 of 3 remote perspectives did not agree: "
        "r1: CAA record forbids issuance"
    )


@pytest.mark.anyio
async def test_caa_primary_refusal_wins() -> None:
    refuse = Problem(ProblemType.CAA, "primary: forbidden", 403)
    remotes = [FakePerspective(f"r{i}") for i in range(3)]
    assert await caa(mpva(FakePerspective("primary", caa=refuse), *remotes)) == refuse


@pytest.mark.anyio
async def test_surface_and_aclose() -> None:
    remotes = [FakePerspective("r1"), FakePerspective("r2")]
    primary = FakePerspective("primary")
    va = mpva(primary, *remotes)
    assert va.supported_challenge_types == ("http-01", "dns-01")
    assert va.config == VAConfig()
    assert va.remote_regions == ("r1", "r2")
    await va.aclose()
    assert primary.closed and all(r.closed for r in remotes)
