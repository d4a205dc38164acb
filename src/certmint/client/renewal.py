"""When to renew: a pure function of the certificate, the ARI window and now
(DESIGN.md §4).

With ACME Renewal Information (RFC 9773) the CA suggests a window. §4.2: the
client picks a uniformly random moment inside it and renews once that moment
has come; a window that has already ended means "renew now". The random draw
is the caller's (``pick`` in [0, 1)), so this function stays deterministic and
tests replay it exactly.

Without a usable window we renew when a third of the certificate's lifetime
or less remains: 30 days of a 90-day certificate (certbot's default), 2 days
of a 6-day one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RenewalDecision:
    renew: bool
    reason: str
    # When renewal is or was due: in the past (or now) when ``renew``, else
    # the future moment to look again.
    at: datetime


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"


def _require_aware(**values: datetime) -> None:
    for name, value in values.items():
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware")


def decide_renewal(
    *,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    ari_window: tuple[datetime, datetime] | None,
    pick: float,
) -> RenewalDecision:
    """Whether to renew now, why, and when renewal is (or was) due."""
    _require_aware(not_before=not_before, not_after=not_after, now=now)
    if not 0.0 <= pick < 1.0:
        raise ValueError(f"pick must be in [0, 1), got {pick}")

    if now >= not_after:
        return RenewalDecision(True, f"the certificate expired on {not_after:%Y-%m-%d}", not_after)

    if ari_window is not None:
        start, end = ari_window
        _require_aware(ari_window_start=start, ari_window_end=end)
        # RFC 9773 §4.2: a window whose end is not after its start is invalid;
        # the client then proceeds as if the CA offered none.
        if end > start:
            if end <= now:
                return RenewalDecision(
                    True, f"the CA's renewal window ended on {end:%Y-%m-%d %H:%M} UTC (ARI)", end
                )
            chosen = start + (end - start) * pick
            if now >= chosen:
                return RenewalDecision(
                    True, "inside the renewal window the CA suggests (ARI)", chosen
                )
            return RenewalDecision(
                False,
                f"the CA suggests renewing from {chosen:%Y-%m-%d %H:%M} UTC (ARI)",
                chosen,
            )

    lifetime = not_after - not_before
    if lifetime <= timedelta(0):
        return RenewalDecision(True, "the certificate's validity period is empty", now)
    due = not_after - lifetime / 3
    left = not_after - now
    if now >= due:
        return RenewalDecision(
            True,
            f"{_days(left)} left of a {_days(lifetime)} lifetime (a third or less)",
            due,
        )
    return RenewalDecision(
        False,
        f"{_days(left)} left; due when a third of the {_days(lifetime)} lifetime remains",
        due,
    )
