"""The CA's configuration: plain frozen values, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class ProfileConfig:
    """A certificate profile (draft-ietf-acme-profiles) and everything it governs.

    The RA and PA apply the order-side limits (identifier types, names,
    authorization lifetimes); the CA builds the certificate's shape from
    ``validity``, ``common_name`` and ``rsa_key_encipherment``, and its lint
    refuses any certificate that outlives ``validity``.
    """

    name: str
    description: str
    # The whole validity period, both ends included (RFC 5280 §4.1.2.5):
    # notAfter - notBefore + 1 second.
    validity: timedelta
    max_names: int = 100
    # ACME identifier types an order under this profile may carry.
    identifier_types: tuple[str, ...] = ("dns",)
    # A valid authorization is reused for a new order only if it was
    # validated at most this long ago (BR 3.2.2.4 caps reuse at 398 days;
    # Let's Encrypt's profiles use far less).
    authz_reuse: timedelta = timedelta(days=30)
    # How long a new authorization stays pending.
    pending_authz_lifetime: timedelta = timedelta(days=7)
    # Subject commonName = the first DNS name. BR 7.1.2.7.2 makes it NOT
    # RECOMMENDED and pkilint warns (cabf.serverauth.dv.common_name_attribute
    # _present), and lint refuses warnings: only for a profile that is meant
    # to fail lint, or after pkilint changes. Off in every shipped profile.
    common_name: bool = False
    # keyEncipherment beside digitalSignature for RSA keys (BR 7.1.2.7.11
    # MAY); pkilint warns (subscriber_rsa_digitalsignature_and_keyencipherment
    # _present), so, like common_name, off in every shipped profile.
    rsa_key_encipherment: bool = False


# The three profiles Let's Encrypt offers (letsencrypt.org/docs/profiles),
# with its limits. Where certmint's certificates differ (classic has no CN
# and no keyEncipherment: both draw pkilint warnings, which refuse issuance
# here), docs/divergences.md says so.
CLASSIC = ProfileConfig(
    name="classic",
    description=(
        "90-day DV certificate for DNS names (up to 100); authorizations reused for 30 days"
    ),
    validity=timedelta(days=90),
    max_names=100,
    identifier_types=("dns",),
    authz_reuse=timedelta(days=30),
    pending_authz_lifetime=timedelta(days=7),
)
TLSSERVER = ProfileConfig(
    name="tlsserver",
    description=(
        "45-day DV certificate for DNS names (up to 100); authorizations reused for 7 days"
    ),
    validity=timedelta(days=45),
    max_names=100,
    identifier_types=("dns",),
    authz_reuse=timedelta(days=7),
    pending_authz_lifetime=timedelta(days=7),
)
SHORTLIVED = ProfileConfig(
    name="shortlived",
    description=(
        "160-hour DV certificate for DNS names and IP addresses (RFC 8738, up to 25 "
        "identifiers); authorizations reused for 7 hours"
    ),
    validity=timedelta(hours=160),
    max_names=25,
    identifier_types=("dns", "ip"),
    authz_reuse=timedelta(hours=7),
    pending_authz_lifetime=timedelta(hours=7),
)
DEFAULT_PROFILES = (CLASSIC, TLSSERVER, SHORTLIVED)


# Every challenge type certmint-ca can validate. The RFC ones (RFC 8555 §8,
# RFC 8737) are on by default; the drafts (draft-ietf-acme-dns-account-label,
# BR 3.2.2.4.21; draft-ietf-acme-dns-persist, BR 3.2.2.4.22) only when the
# operator enables them: few clients speak them and their drafts still change.
DEFAULT_CHALLENGES = ("http-01", "dns-01", "tls-alpn-01")
CHALLENGE_TYPES = (*DEFAULT_CHALLENGES, "dns-account-01", "dns-persist-01")


@dataclass(frozen=True)
class PolicyConfig:
    """What the policy authority (PA) accepts."""

    max_names_per_order: int = 100
    # Only challenge types the VA can check are ever offered (intersection).
    enabled_challenges: tuple[str, ...] = DEFAULT_CHALLENGES
    profiles: tuple[ProfileConfig, ...] = DEFAULT_PROFILES
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
    # Added to the shipped Debian weak-key list (openssl-vulnkey or Boulder
    # format fingerprints), and SPKI SHA-256 digests refused for account and
    # certificate keys alike (BR 6.1.1.3).
    extra_weak_rsa_fingerprints: frozenset[str] = frozenset()
    blocked_key_digests: frozenset[bytes] = frozenset()
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
    # CA-wide ceilings; each profile may set shorter ones (ProfileConfig).
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
    # The optional OCSP responder (RFC 6960) on the management port, and the
    # OCSP URL in every certificate's AIA; off by default (ca/ocsp.py).
    ocsp_enabled: bool = False
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    chaos: ChaosConfig = field(default_factory=ChaosConfig)
