"""The CA's configuration: plain frozen values, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class ProfileConfig:
    """A certificate profile (draft-ietf-acme-profiles) and its limits."""

    name: str
    description: str
    validity: timedelta
    max_names: int = 100


CLASSIC = ProfileConfig(
    name="classic",
    description="90-day DV certificate, the Let's Encrypt default shape",
    validity=timedelta(days=90),
)


@dataclass(frozen=True)
class PolicyConfig:
    """What the policy authority (PA) accepts."""

    max_names_per_order: int = 100
    # Only challenge types the VA can check are ever offered (intersection).
    enabled_challenges: tuple[str, ...] = ("http-01", "dns-01", "tls-alpn-01")
    profiles: tuple[ProfileConfig, ...] = (CLASSIC,)
    default_profile: str = "classic"
    # Exact names refused, and names refused together with all subdomains.
    blocked_names: frozenset[str] = frozenset()
    blocked_suffixes: frozenset[str] = frozenset()
    # Names whose TLD is not in the Public Suffix List's ICANN section
    # (".test", ".example", ".local", ".internal") are not public names and
    # are refused, as Boulder does; development and tests turn this on.
    allow_unlisted_tlds: bool = False
    # IP identifiers in special-purpose ranges (loopback, RFC 1918, CGNAT,
    # documentation, ...) are refused unless the operator allows them
    # (loopback tests, a private CA for an internal network).
    allow_private_ip_identifiers: bool = False
    max_contacts: int = 10
    # How far into the future a requested notBefore may lie.
    max_not_before_ahead: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class ChaosConfig:
    """Seeded misbehaviour that forces clients to be correct; all off by default."""

    nonce_reject_percent: float = 0.0
    validation_delay_seconds: float = 0.0
    # When set, each reusable valid authorization is reused only with this
    # probability (percent); when None, reuse is deterministic (always).
    authz_reuse_percent: float | None = None
    seed: int | None = None

    @property
    def enabled(self) -> bool:
        return (
            self.nonce_reject_percent > 0
            or self.validation_delay_seconds > 0
            or self.authz_reuse_percent is not None
        )


@dataclass(frozen=True)
class CAConfig:
    base_url: str  # e.g. "https://127.0.0.1:14000", no trailing slash
    management_base_url: str  # e.g. "http://127.0.0.1:15000"
    terms_of_service: str | None = None
    website: str | None = "https://github.com/certmint/certmint"
    caa_identities: tuple[str, ...] = ("certmint.invalid",)
    eab_required: bool = False
    order_lifetime: timedelta = timedelta(days=7)
    pending_authz_lifetime: timedelta = timedelta(days=7)
    valid_authz_lifetime: timedelta = timedelta(days=30)
    # A reused authorization must stay valid at least this long (Boulder: a day).
    authz_reuse_min_remaining: timedelta = timedelta(days=1)
    orders_page_size: int = 100
    max_body_bytes: int = 64 * 1024
    retry_after_seconds: int = 1
    # How long a challenge POST waits for its validation before answering
    # "processing" (RFC 8555 §7.5.1 allows either); 0 answers at once.
    inline_validation_wait_seconds: float = 1.0
    # CAA is re-checked at finalize for authorizations validated longer ago
    # than this (BR 3.2.2.8 allows reuse of a CAA check for 8 hours; Boulder
    # uses the same window).
    caa_recheck_after: timedelta = timedelta(hours=8)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    chaos: ChaosConfig = field(default_factory=ChaosConfig)
