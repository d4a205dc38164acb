"""decide_renewal: RFC 9773 §4.2 windows, the one-third rule, edge cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certmint.client.renewal import decide_renewal

NB = datetime(2026, 1, 1, tzinfo=UTC)
NA = NB + timedelta(days=90)  # due without ARI at day 60
D = timedelta(days=1)


def window(start_day: float, end_day: float) -> tuple[datetime, datetime]:
    return NB + start_day * D, NB + end_day * D


CASES = [
    # (now as day, ARI window, pick, renew?, due at (day), reason contains)
    (10, None, 0.5, False, 60, "due when a third"),
    (59.9, None, 0.0, False, 60, "due when a third"),
    (60, None, 0.0, True, 60, "a third or less"),
    (89, None, 0.0, True, 60, "a third or less"),
    (90, None, 0.0, True, 90, "expired"),
    (120, window(50, 55), 0.5, True, 90, "expired"),  # expiry wins over ARI
    (10, window(20, 30), 0.0, False, 20, "ARI"),  # future window, earliest pick
    (10, window(20, 30), 0.5, False, 25, "ARI"),
    (25, window(20, 30), 0.5, True, 25, "inside the renewal window"),  # now == chosen
    (24, window(20, 30), 0.5, False, 25, "ARI"),  # inside, before the chosen time
    (21, window(20, 30), 0.05, True, 20.5, "inside the renewal window"),
    (40, window(20, 30), 0.99, True, 30, "window ended"),  # window in the past
    (30, window(20, 30), 0.5, True, 30, "window ended"),  # ends exactly now
    (65, window(70, 80), 0.5, False, 75, "ARI"),  # ARI overrides the one-third rule
    (10, window(30, 20), 0.5, False, 60, "due when a third"),  # invalid window: ignored
    (65, window(30, 30), 0.5, True, 60, "a third or less"),  # empty window: ignored
]


@pytest.mark.parametrize(("now_day", "ari", "pick", "renew", "at_day", "reason"), CASES)
def test_decide_renewal(
    now_day: float,
    ari: tuple[datetime, datetime] | None,
    pick: float,
    renew: bool,
    at_day: float,
    reason: str,
) -> None:
    decision = decide_renewal(
        not_before=NB, not_after=NA, now=NB + now_day * D, ari_window=ari, pick=pick
    )
    assert decision.renew is renew
    assert decision.at == NB + at_day * D
    assert reason in decision.reason


def test_short_lived_certificate_uses_a_third_of_its_lifetime() -> None:
    not_after = NB + timedelta(days=6)
    early = decide_renewal(
        not_before=NB, not_after=not_after, now=NB + 3.9 * D, ari_window=None, pick=0.0
    )
    late = decide_renewal(
        not_before=NB, not_after=not_after, now=NB + 4 * D, ari_window=None, pick=0.0
    )
    assert (early.renew, late.renew) == (False, True)
    assert late.at == NB + 4 * D


def test_empty_validity_renews_now() -> None:
    now = NB - D
    decision = decide_renewal(not_before=NB, not_after=NB, now=now, ari_window=None, pick=0.0)
    assert decision.renew and decision.at == now and "empty" in decision.reason


@pytest.mark.parametrize("pick", [-0.1, 1.0, 2.0])
def test_pick_outside_unit_interval(pick: float) -> None:
    with pytest.raises(ValueError, match="pick"):
        decide_renewal(not_before=NB, not_after=NA, now=NB, ari_window=None, pick=pick)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_renewal(
            not_before=NB, not_after=NA, now=datetime(2026, 1, 2), ari_window=None, pick=0.0
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_renewal(
            not_before=NB,
            not_after=NA,
            now=NB,
            ari_window=(datetime(2026, 1, 2), datetime(2026, 1, 3)),
            pick=0.0,
        )


def test_picks_spread_uniformly_over_the_window() -> None:
    start, end = window(20, 30)
    ats = [
        decide_renewal(not_before=NB, not_after=NA, now=NB, ari_window=(start, end), pick=i / 10).at
        for i in range(10)
    ]
    assert ats == [start + i * D for i in range(10)]
