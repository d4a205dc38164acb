"""The CRL updater: builds each issuer's CRL shards when they are due and
stores them for every serving process (Boulder's crl-updater, in-house).

When a shard is due (``due_reason``):

- it has never been built ("missing");
- its CRL is ``interval`` old ("scheduled"; BR 4.9.7 asks for at least every
  seven days, Let's Encrypt does it every few hours, certmint's default is
  six);
- a revocation touched it ("revocation"): every revocation marks its
  certificate's shard and the issuer's complete CRL dirty in its own
  transaction (``StorageAuthority.revoke_*``). A dirty shard is rebuilt once
  its CRL is ``update_after_revocation / 2`` old, so a burst of revocations
  costs one rebuild per half-period while each one still shows within the
  period (the updater looks every ``tick`` ≤ a quarter of it).

Who builds: exactly one process per CA, the updater process ``serve`` forks
next to its workers (``serve.py``), so building a large CRL -- seconds of
CPU for a shard of a million entries -- never runs on a serving event loop.
Each build first takes a lease on its (issuer, shard) row (Boulder's
``LeaseCRLShard``), so several hosts sharing one PostgreSQL database never
build the same shard at once, and a crashed builder's lease simply expires.

A build that fails -- lint refuses it, the signer fails -- is logged and
releases its lease; the previous CRL stays in storage and keeps being
served, and the next tick tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from certmint.ca.issuance.crl import (
    FULL_CRL,
    CrlConfig,
    build_shard_crl,
    crl_number_for,
)
from certmint.ca.issuance.hierarchy import IssuerMaterial
from certmint.ca.issuance.profile import truncate_to_seconds
from certmint.ca.issuance.signing import CrlLint, LintError, SigningError
from certmint.ca.storage.records import CrlShardState, StoredCrl
from certmint.ca.storage.sa import StorageAuthority
from certmint.protocol.b64 import b64url_encode
from certmint.runtime import Clock, Entropy

log = logging.getLogger("certmint.ca.crl")

# Longer than any build takes; a builder that died frees its shard after this.
DEFAULT_LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class CrlBuild:
    """One build attempt: what the updater did with one (issuer, shard)."""

    issuer_id: str
    shard: int
    reason: str  # "missing" | "scheduled" | "revocation"
    entries: int = 0
    crl_number: int | None = None  # None: the build failed or lost its lease
    error: str | None = None


def due_reason(state: CrlShardState | None, now: datetime, config: CrlConfig) -> str | None:
    """Why the shard needs a new CRL now, or None (see the module docstring)."""
    if state is None or state.crl_number is None or state.this_update is None:
        return "missing"
    age = now - state.this_update
    if age >= config.interval:
        return "scheduled"
    if state.dirty_since is not None and age >= config.update_after_revocation / 2:
        return "revocation"
    return None


def tick_seconds(config: CrlConfig) -> float:
    """How often the updater looks for due shards: a quarter of the
    revocation period, at most a second, at least 50 ms."""
    return max(0.05, min(1.0, config.update_after_revocation.total_seconds() / 4))


class CrlUpdater:
    def __init__(
        self,
        *,
        issuers: Sequence[IssuerMaterial],
        sa: StorageAuthority,
        clock: Clock,
        entropy: Entropy,
        config: CrlConfig,
        base_url: str,
        lint: CrlLint | None,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self._issuers = tuple(issuers)
        self._sa = sa
        self._clock = clock
        self._entropy = entropy
        self._config = config
        self._base_url = base_url
        self._lint = lint
        self._lease = lease

    @property
    def config(self) -> CrlConfig:
        return self._config

    def shards_of(self, issuer_id: str) -> range:
        """The complete CRL (0) and shards 1..N, N the configured count or,
        if an operator lowered it, the highest shard a certificate names."""
        highest = self._sa.max_crl_shard(issuer_id) or 0
        return range(0, max(self._config.shards, highest) + 1)

    def run_once(self) -> list[CrlBuild]:
        """Build every due shard of every issuer, one after the other."""
        builds: list[CrlBuild] = []
        for issuer in self._issuers:
            states = self._sa.crl_shard_states(issuer.id)
            for shard in self.shards_of(issuer.id):
                reason = due_reason(states.get(shard), self._clock.now(), self._config)
                if reason is not None:
                    builds.append(self.build(issuer, shard, reason))
        return builds

    def build(self, issuer: IssuerMaterial, shard: int, reason: str = "forced") -> CrlBuild:
        """Lease, read the entries, build, lint, sign and store one CRL."""
        token = b64url_encode(self._entropy.token_bytes(12))
        now = self._clock.now()
        state = self._sa.lease_crl_shard(issuer.id, shard, token, now, now + self._lease)
        if state is None:
            return CrlBuild(issuer.id, shard, reason, error="leased by another builder")
        started = self._clock.monotonic()
        try:
            # Read only after the lease: the dirty_version seen with it is
            # then never newer than these entries.
            entries = self._sa.list_revoked(issuer.id, now, None if shard == FULL_CRL else shard)
            this_update = self._clock.now()
            number = crl_number_for(this_update, state.crl_number)
            der = build_shard_crl(
                issuer,
                shard,
                entries,
                self._clock,
                base_url=self._base_url,
                number=number,
                validity=self._config.validity,
                lint=self._lint,
            )
        except (LintError, SigningError, ValueError) as exc:
            # The previous CRL stays in storage and keeps being served.
            log.error("CRL %s/%d not built (%s): %s", issuer.id, shard, reason, exc)
            self._sa.release_crl_lease(issuer.id, shard, token)
            return CrlBuild(issuer.id, shard, reason, error=str(exc))
        except BaseException:
            self._sa.release_crl_lease(issuer.id, shard, token)
            raise
        stamp = truncate_to_seconds(this_update)
        stored = self._sa.store_crl(
            StoredCrl(
                issuer_id=issuer.id,
                shard=shard,
                crl_number=number,
                this_update=stamp,
                next_update=stamp + self._config.validity,
                der=der,
            ),
            token=token,
            entries=len(entries),
            read_version=state.dirty_version,
        )
        if not stored:
            log.warning("CRL %s/%d built but its lease was lost; not stored", issuer.id, shard)
            return CrlBuild(issuer.id, shard, reason, len(entries), error="lease lost")
        log.info(
            "CRL %s/%d (%s): %d entries, number %d, %d bytes in %.2f s",
            issuer.id,
            shard,
            reason,
            len(entries),
            number,
            len(der),
            self._clock.monotonic() - started,
        )
        return CrlBuild(issuer.id, shard, reason, len(entries), number)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set: look for due shards every tick. Meant
        for a process of its own (builds run on this loop's thread)."""
        tick = tick_seconds(self._config)
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end the updater
                log.exception("CRL updater pass failed; trying again")
            await _sleep_unless(self._clock, tick, stop)


async def _sleep_unless(clock: Clock, seconds: float, stop: asyncio.Event) -> None:
    """``clock.sleep(seconds)``, cut short when ``stop`` is set."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, stopper):
            task.cancel()
