"""The policy authority (PA): which identifiers, keys, contacts, challenge
types, profiles and validity periods this CA accepts. Config only; no I/O."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certmint.ca import errors
from certmint.ca.config import PolicyConfig, ProfileConfig
from certmint.protocol.identifiers import IdentifierError, normalize_dns_identifier
from certmint.protocol.jwk import PublicKey
from certmint.protocol.messages import Identifier
from certmint.protocol.problems import Problem, ProblemType

# Certificate subject keys (Baseline Requirements §6.1.5): RSA with these
# modulus sizes, ECDSA on P-256 and P-384.
ALLOWED_RSA_BITS = frozenset({2048, 3072, 4096})
ALLOWED_EC_CURVES = frozenset({"secp256r1", "secp384r1"})
# Account keys may also use the JWS algorithms RFC 8555 lets clients pick.
ALLOWED_ACCOUNT_EC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})

# A deliberately plain address check: one "@", a non-empty local part without
# spaces or separators, and a dotted domain that normalises as a DNS name.
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=^_`{|}~-]{1,64}$")


class PolicyAuthority:
    def __init__(self, config: PolicyConfig, supported_challenges: tuple[str, ...]) -> None:
        self._config = config
        self._profiles = {p.name: p for p in config.profiles}
        if config.default_profile not in self._profiles:
            raise ValueError(f"default profile {config.default_profile!r} is not configured")
        self.challenge_types = tuple(
            t for t in config.enabled_challenges if t in supported_challenges
        )

    @property
    def profiles(self) -> tuple[ProfileConfig, ...]:
        return self._config.profiles

    # -- identifiers -----------------------------------------------------

    def check_order_identifiers(
        self, identifiers: tuple[Identifier, ...], profile: ProfileConfig
    ) -> tuple[tuple[str, str], ...]:
        """Normalise and vet every identifier; refuse the lot with one
        subproblem per bad identifier (RFC 8555 §6.7.1)."""
        problems: list[Problem] = []
        accepted: set[tuple[str, str]] = set()
        for ident in identifiers:
            try:
                accepted.add(("dns", self._check_identifier(ident)))
            except errors.AcmeError as exc:
                problems.append(
                    Problem(
                        type=exc.problem_type,
                        detail=exc.detail,
                        status=exc.status,
                        identifier=(ident.type, ident.value),
                    )
                )
        if problems:
            kinds = {p.type for p in problems}
            detail = (
                problems[0].detail
                if len(problems) == 1
                else f"{len(problems)} identifiers were refused; see subproblems"
            )
            if kinds == {ProblemType.UNSUPPORTED_IDENTIFIER}:
                raise errors.UnsupportedIdentifier(detail, subproblems=tuple(problems))
            raise errors.RejectedIdentifier(detail, subproblems=tuple(problems))
        limit = min(self._config.max_names_per_order, profile.max_names)
        if len(accepted) > limit:
            raise errors.RejectedIdentifier(
                f"order contains {len(accepted)} identifiers; at most {limit} are allowed"
            )
        return tuple(sorted(accepted))

    def _check_identifier(self, ident: Identifier) -> str:
        if ident.type != "dns":
            raise errors.UnsupportedIdentifier(
                f"identifier type {ident.type!r} is not supported (only \"dns\")"
            )
        try:
            name = normalize_dns_identifier(ident.value, allow_wildcard=True)
        except IdentifierError as exc:
            raise errors.RejectedIdentifier(str(exc)) from None
        if name.startswith("*."):
            # Wildcards need a DNS-based challenge (BR 3.2.2.6).
            if "dns-01" not in self.challenge_types:
                raise errors.RejectedIdentifier(
                    f"{ident.value}: wildcard names need dns-01, which is not enabled here"
                )
        base = name.removeprefix("*.")
        if base in self._config.blocked_names or self._under_blocked_suffix(base):
            raise errors.RejectedIdentifier(
                f"{ident.value}: this CA's policy forbids issuing for this name"
            )
        return name

    def _under_blocked_suffix(self, name: str) -> bool:
        return any(name == s or name.endswith("." + s) for s in self._config.blocked_suffixes)

    def challenge_types_for(self, identifier_value: str, wildcard: bool) -> tuple[str, ...]:
        if wildcard:
            return tuple(t for t in self.challenge_types if t == "dns-01")
        return self.challenge_types

    # -- keys ------------------------------------------------------------

    @staticmethod
    def check_certificate_key(key: object) -> None:
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size not in ALLOWED_RSA_BITS:
                raise errors.BadPublicKey(
                    f"RSA key of {key.key_size} bits is not allowed; use 2048, 3072 or 4096"
                )
            return
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in ALLOWED_EC_CURVES:
                raise errors.BadPublicKey(
                    f"ECDSA curve {key.curve.name} is not allowed; use P-256 or P-384"
                )
            return
        raise errors.BadPublicKey(
            "certificate key type is not allowed; use RSA 2048/3072/4096 or ECDSA P-256/P-384"
        )

    @staticmethod
    def check_account_key(key: PublicKey) -> None:
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size not in ALLOWED_RSA_BITS:
                raise errors.BadPublicKey(
                    f"RSA account key of {key.key_size} bits is not allowed; "
                    "use 2048, 3072 or 4096"
                )
            return
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in ALLOWED_ACCOUNT_EC_CURVES:
                raise errors.BadPublicKey(f"ECDSA curve {key.curve.name} is not allowed")
            return
        if isinstance(key, ed25519.Ed25519PublicKey):
            return
        raise errors.BadPublicKey("account key type is not allowed")

    # -- contacts (RFC 8555 §7.3) ----------------------------------------

    def check_contacts(self, contacts: tuple[str, ...]) -> tuple[str, ...]:
        if len(contacts) > self._config.max_contacts:
            raise errors.InvalidContact(
                f"too many contacts ({len(contacts)}); at most {self._config.max_contacts}"
            )
        return tuple(self._check_contact(c) for c in contacts)

    @staticmethod
    def _check_contact(contact: str) -> str:
        scheme, sep, address = contact.partition(":")
        if not sep or scheme.lower() != "mailto":
            raise errors.UnsupportedContact(
                f"contact {contact!r} is not supported; only mailto: URIs are"
            )
        # RFC 6068 allows several addresses and header fields; an ACME
        # contact is exactly one address (Boulder refuses the rest too).
        if "?" in address or "," in address or "%" in address:
            raise errors.InvalidContact(f"contact {contact!r} must be a single plain address")
        local, at, domain = address.rpartition("@")
        if not at or not _EMAIL_LOCAL.match(local):
            raise errors.InvalidContact(f"contact {contact!r} is not a valid email address")
        try:
            normalize_dns_identifier(domain)
        except IdentifierError:
            raise errors.InvalidContact(
                f"contact {contact!r} does not have a valid domain"
            ) from None
        return f"mailto:{address}"

    # -- profiles and validity ------------------------------------------

    def profile(self, name: str | None) -> ProfileConfig:
        chosen = name or self._config.default_profile
        try:
            return self._profiles[chosen]
        except KeyError:
            known = ", ".join(sorted(self._profiles))
            raise errors.InvalidProfile(
                f"profile {chosen!r} is not offered; choose one of: {known}"
            ) from None

    def check_validity(
        self,
        not_before: datetime | None,
        not_after: datetime | None,
        profile: ProfileConfig,
        now: datetime,
    ) -> None:
        """RFC 8555 §7.4 lets clients ask for a validity window; honour it
        only inside the profile's limits."""
        if not_before is None and not_after is None:
            return
        start = not_before or now
        if not_before is not None:
            if not_before < now - timedelta(minutes=5):
                raise errors.Malformed("notBefore must not lie in the past")
            if not_before > now + self._config.max_not_before_ahead:
                days = self._config.max_not_before_ahead.days
                raise errors.Malformed(f"notBefore may be at most {days} days ahead")
        if not_after is not None:
            if not_after <= start:
                raise errors.Malformed("notAfter must be later than notBefore")
            # RFC 5280 §4.1.2.5 / BR 7.1.2.7: the validity period includes
            # both notBefore and notAfter, so a window of exactly the
            # profile's span would be one second longer than the profile.
            if not_after - start >= profile.validity:
                raise errors.Malformed(
                    f"requested validity exceeds the {profile.name} profile's "
                    f"{profile.validity.days} days"
                )
