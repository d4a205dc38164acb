"""The Validation Authority: does the applicant control this identifier?

Boulder's VA role (DESIGN.md §2). It talks to the network only — resolver,
HTTP fetcher, TLS dialer — never to storage, and it reports failure as data:
``validate`` always returns a ``ValidationResult`` and never raises for
anything an applicant or the network can cause.

Network deadlines (``VAConfig`` timeouts) run on the event loop's clock, not
the injected ``Clock``: they bound real socket waits, which a fake clock
cannot shorten. The injected clock times validations for the log.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace

from certmint.ca.va.addresses import normalize_hostname, parse_ip
from certmint.ca.va.caa import CAAChecker
from certmint.ca.va.dns01 import Dns01Validator
from certmint.ca.va.dns_account01 import DnsAccount01Validator
from certmint.ca.va.dns_persist01 import DnsPersist01Validator
from certmint.ca.va.http01 import Http01Validator
from certmint.ca.va.model import VAConfig, ValidationRequest, ValidationResult
from certmint.ca.va.resolver import VAResolver
from certmint.ca.va.tlsalpn01 import TlsAlpn01Validator
from certmint.protocol.challenges import is_valid_token
from certmint.protocol.problems import Problem, ProblemType
from certmint.runtime import Clock

log = logging.getLogger(__name__)

HTTP_01 = "http-01"
DNS_01 = "dns-01"
TLS_ALPN_01 = "tls-alpn-01"
DNS_ACCOUNT_01 = "dns-account-01"  # draft-ietf-acme-dns-account-label, BR 3.2.2.4.21
DNS_PERSIST_01 = "dns-persist-01"  # draft-ietf-acme-dns-persist, BR 3.2.2.4.22
# The methods whose proof lives in DNS at (a label under) the base name: the
# only ones that can prove a wildcard (RFC 8555 §7.1.3; BR 3.2.2.6), and none
# can prove an IP address, which has no name to put a record under (RFC 8738 §7).
DNS_BASED = (DNS_01, DNS_ACCOUNT_01, DNS_PERSIST_01)
# dns-persist-01 has no token (draft-ietf-acme-dns-persist-00 §3.1): its record
# names the account, not a key authorization.
_KEY_AUTHORIZATION_FREE = (DNS_PERSIST_01,)

# RFC 7638 thumbprints are base64url; SHA-256 gives 43 characters, and we
# leave room for longer hashes without letting arbitrary text through.
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{16,128}")


def malformed(detail: str) -> ValidationResult:
    return ValidationResult(
        valid=False,
        problem=Problem(type=ProblemType.MALFORMED, detail=detail, status=400),
        records=(),
    )


class ValidationAuthority:
    def __init__(self, config: VAConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._resolver = VAResolver(config)
        self._http01 = Http01Validator(config, self._resolver)
        self._dns01 = Dns01Validator(config, self._resolver)
        self._dns_account01 = DnsAccount01Validator(config, self._resolver)
        self._dns_persist01 = DnsPersist01Validator(config, self._resolver, clock)
        self._tlsalpn01 = TlsAlpn01Validator(config, self._resolver)
        self._caa = CAAChecker(self._resolver, config.caa_identities)

    @property
    def config(self) -> VAConfig:
        return self._config

    @property
    def supported_challenge_types(self) -> tuple[str, ...]:
        """Everything this VA can check; the PA offers the operator-enabled
        subset. dns-persist-01 needs at least one issuer domain name (§3.1:
        the challenge's list MUST NOT be empty)."""
        kinds = (HTTP_01, DNS_01, TLS_ALPN_01, DNS_ACCOUNT_01, DNS_PERSIST_01)
        if self._dns_persist01.issuer_domain_names:
            return kinds
        return kinds[:-1]

    async def aclose(self) -> None:
        """Nothing is pooled: every lookup and fetch opens and closes its own
        sockets. Kept so callers need not know that."""

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        started = self._clock.monotonic()
        result = await self._dispatch(request)
        log.info(
            "va %s %s:%s valid=%s problem=%s in %.3fs",
            request.challenge_type,
            request.identifier_type,
            request.identifier_value,
            result.valid,
            result.problem.type if result.problem else None,
            self._clock.monotonic() - started,
        )
        return result

    async def check_caa(
        self,
        identifier_type: str,
        identifier_value: str,
        *,
        challenge_type: str,
        account_uri: str | None,
        wildcard: bool,
    ) -> Problem | None:
        """CAA alone (RFC 8659), for the RA's re-check at finalize: None when
        issuance is permitted (or CAA does not apply: IP identifiers, or
        checking is off), else a ``caa`` or ``dns`` problem. Never raises for
        anything the network causes."""
        if not self._config.check_caa or identifier_type != "dns":
            return None
        value = identifier_value
        if value.startswith("*."):
            value, wildcard = value[2:], True
        if parse_ip(value) is not None:
            return None
        host = normalize_hostname(value)
        if host is None:
            return Problem(
                type=ProblemType.MALFORMED,
                detail=f"Cannot check CAA for {echo(identifier_value)!r}",
                status=400,
            )
        return await self._caa.check(
            host, challenge_type=challenge_type, account_uri=account_uri, wildcard=wildcard
        )

    async def _dispatch(self, request: ValidationRequest) -> ValidationResult:
        """The challenge check and, concurrently, CAA (BR 3.2.2.8: checked
        at validation time); a CAA refusal makes a good challenge invalid."""
        host = self._target_host(request)
        caa_task: asyncio.Task[Problem | None] | None = None
        if host is not None and self._config.check_caa and request.identifier_type == "dns":
            caa_task = asyncio.create_task(
                self._caa.check(
                    host,
                    challenge_type=request.challenge_type,
                    account_uri=request.account_uri,
                    wildcard=request.wildcard or request.identifier_value.startswith("*."),
                )
            )
        try:
            result = await self._check_challenge(request)
        except BaseException:
            if caa_task is not None:
                caa_task.cancel()
            raise
        if caa_task is None:
            return result
        if not result.valid:
            caa_task.cancel()
            return result
        problem = await caa_task
        if problem is not None:
            return ValidationResult(valid=False, problem=problem, records=result.records)
        return replace(result, caa_checked_at=self._clock.now())

    async def _check_challenge(self, request: ValidationRequest) -> ValidationResult:
        kind = request.challenge_type
        if kind not in self.supported_challenge_types:
            return malformed(f"Unsupported challenge type {echo(kind)!r}")
        if kind not in _KEY_AUTHORIZATION_FREE:
            if not is_valid_token(request.token):
                return malformed("Challenge token is not a base64url string of at least 128 bits")
            thumbprint = request.key_authorization.removeprefix(request.token + ".")
            if thumbprint == request.key_authorization or not _THUMBPRINT.fullmatch(thumbprint):
                return malformed('Key authorization is not "<token>.<account key thumbprint>"')
        host = self._target_host(request)
        if host is None:
            return malformed(
                f"Cannot validate {echo(request.identifier_type)} identifier "
                f"{echo(request.identifier_value)!r} with {kind}"
            )
        if kind == HTTP_01:
            return await self._http01.validate(host, request.token, request.key_authorization)
        if kind == TLS_ALPN_01:
            return await self._tlsalpn01.validate(host, request.key_authorization)
        if kind == DNS_01:
            return await self._dns01.validate(host, request.key_authorization)
        # Both newer DNS methods are bound to the account's URL: the record
        # name (dns-account-01) or the record's accounturi (dns-persist-01).
        if request.account_uri is None:
            return malformed(f"{kind} needs the account URL, and the request has none")
        if kind == DNS_ACCOUNT_01:
            return await self._dns_account01.validate(
                host, request.key_authorization, request.account_uri
            )
        return await self._dns_persist01.validate(
            host,
            account_uri=request.account_uri,
            wildcard=request.wildcard or request.identifier_value.startswith("*."),
        )

    def _target_host(self, request: ValidationRequest) -> str | None:
        """The lower-case name or canonical IP text to validate, or None.

        Wildcards are only provable with the DNS-based methods (RFC 8555
        §7.1.3, BR 3.2.2.6), whose records live at the base name. IP
        identifiers (RFC 8738 §7) are provable with http-01 and tls-alpn-01
        only.
        """
        value = request.identifier_value
        if request.identifier_type == "ip":
            if request.challenge_type in DNS_BASED:
                return None
            address = parse_ip(value)
            return str(address) if address is not None and "[" not in value else None
        if request.identifier_type != "dns":
            return None
        wildcard = value.startswith("*.")
        if wildcard or request.wildcard:
            if request.challenge_type not in DNS_BASED:
                return None
            value = value.removeprefix("*.")
        if parse_ip(value) is not None:
            return None
        return normalize_hostname(value)


def echo(text: str, limit: int = 64) -> str:
    """Bounded, printable rendering of caller-supplied text for a detail."""
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return shown + ("..." if len(text) > limit else "")
