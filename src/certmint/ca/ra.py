"""The registration authority (RA): every state change a client causes.

The RA owns the business rules and orchestration; it asks the PA what is
allowed, the VA whether control was shown, the CA to sign, and the SA to
record each step atomically. It never touches HTTP: the WFE authenticates the
request and hands the RA checked values (DESIGN.md §2).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from certmint.ca import errors
from certmint.ca.ari import RenewalInfoService
from certmint.ca.config import CAConfig, ProfileConfig
from certmint.ca.issuance.authority import CertificateAuthority
from certmint.ca.issuance.signing import LintError
from certmint.ca.policy import PolicyAuthority
from certmint.ca.ra_accounts import AccountRegistrar
from certmint.ca.ra_revocation import RevocationAuthority
from certmint.ca.storage.errors import (
    AlreadyReplaced,
    StaleState,
)
from certmint.ca.storage.records import (
    FINALIZE_NONE,
    PENDING,
    VALID,
    AccountRecord,
    AuthzRecord,
    CertificateRecord,
    ChallengeRecord,
    OrderRecord,
)
from certmint.ca.storage.sa import StorageAuthority
from certmint.ca.urls import AcmeUrls
from certmint.ca.va.model import PerspectiveOutcome, ValidationRequest, Validator
from certmint.protocol.b64 import b64url_encode
from certmint.protocol.challenges import key_authorization, new_token
from certmint.protocol.csr import CSRError, parse_csr
from certmint.protocol.jwk import (
    PublicKey,
    public_key_from_jwk,
    public_keys_equal,
    spki_sha256_hex,
)
from certmint.protocol.messages import (
    NewOrderRequest,
)
from certmint.protocol.problems import Problem, ProblemType
from certmint.protocol.status import derive_order_status, effective_authz_status
from certmint.runtime import Clock, Entropy

log = logging.getLogger("certmint.ca.ra")
T = TypeVar("T")

ID_BYTES = 12  # 96 bits: unguessable resource ids


@dataclass(frozen=True)
class OrderView:
    order: OrderRecord
    status: str


@dataclass(frozen=True)
class AuthzView:
    authz: AuthzRecord
    status: str  # effective: may be "expired"


class RegistrationAuthority:
    def __init__(
        self,
        *,
        config: CAConfig,
        sa: StorageAuthority,
        pa: PolicyAuthority,
        va: Validator,
        ca: CertificateAuthority,
        urls: AcmeUrls,
        clock: Clock,
        entropy: Entropy,
        chaos_entropy: Entropy | None = None,
    ) -> None:
        self._config = config
        self._sa = sa
        self._pa = pa
        self._va = va
        self._ca = ca
        self._urls = urls
        self._clock = clock
        self._entropy = entropy
        self._chaos = chaos_entropy
        # Revocation rules (RFC 8555 §7.6, BR 4.9): ra_revocation.py.
        self.revocations = RevocationAuthority(sa=sa, clock=clock)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.accounts = AccountRegistrar(
            config=config, sa=sa, pa=pa, urls=urls, clock=clock, new_id=self._new_id
        )
        issuers = {issuer_id: ca.issuer_cert(issuer_id) for issuer_id in ca.issuer_ids}
        self.renewals = RenewalInfoService(
            sa=sa, issuer_key_ids=RenewalInfoService.issuer_key_ids(issuers), clock=clock
        )

    def _new_id(self) -> str:
        return b64url_encode(self._entropy.token_bytes(ID_BYTES))

    # -- orders (RFC 8555 §7.4) ------------------------------------------

    def new_order(self, account: AccountRecord, request: NewOrderRequest) -> OrderView:
        now = self._clock.now()
        profile = self._pa.profile(request.profile)
        identifiers = self._pa.check_order_identifiers(request.identifiers, profile)
        self._pa.check_validity(request.not_before, request.not_after, profile, now)
        if request.replaces is not None:
            # RFC 9773 §5: vet the replaced certificate before creating anything.
            self.renewals.check_replacement(account.id, identifiers, request.replaces)
        plain_request = request.not_before is None and request.not_after is None
        if plain_request and request.replaces is None:
            reusable = self._sa.find_reusable_order(account.id, identifiers, profile.name, now)
            if reusable is not None:
                view = self.order_view(reusable)
                if view.status in ("pending", "ready") and self._fresh_for(reusable, profile, now):
                    return view
        wanted = [(t, v.removeprefix("*."), v.startswith("*.")) for t, v in identifiers]
        reused = self._sa.find_reusable_authzs(
            account.id, wanted, (VALID,), now + self._config.authz_reuse_min_remaining
        )
        authz_ids: list[str] = []
        new_authzs: list[AuthzRecord] = []
        expires = now + self._config.order_lifetime
        for key in wanted:
            found = reused.get(key)
            if (
                found is not None
                and _validated_within(found, profile.authz_reuse, now)
                and self._chaos_allows_reuse()
            ):
                authz_ids.append(found.id)
                expires = min(expires, found.expires)
                continue
            authz = self._new_authz(account.id, key, now, profile)
            new_authzs.append(authz)
            authz_ids.append(authz.id)
            # The order cannot outlive what it still needs (Boulder does the same).
            expires = min(expires, authz.expires)
        order = OrderRecord(
            id=self._new_id(),
            account_id=account.id,
            identifiers=identifiers,
            authz_ids=tuple(authz_ids),
            profile=profile.name,
            not_before=request.not_before,
            not_after=request.not_after,
            expires=expires,
            created_at=now,
            finalize_state=FINALIZE_NONE,
            replaces=request.replaces,
        )
        stored = self._sa.create_order(order, new_authzs)
        statuses = [VALID if a not in {n.id for n in new_authzs} else PENDING for a in authz_ids]
        return OrderView(stored, derive_order_status(FINALIZE_NONE, expires, statuses, now))

    def _fresh_for(self, order: OrderRecord, profile: ProfileConfig, now: datetime) -> bool:
        """An order is reused only while its valid authorizations are within
        the profile's reuse window, as a new order's would have to be."""
        authzs = self._sa.get_authzs(order.authz_ids)
        return all(
            _validated_within(a, profile.authz_reuse, now) for a in authzs if a.status == VALID
        )

    def _chaos_allows_reuse(self) -> bool:
        percent = self._config.chaos.authz_reuse_percent
        if percent is None or self._chaos is None:
            return True
        return self._chaos.randbelow(10_000) < int(percent * 100)

    def _new_authz(
        self, account_id: str, key: tuple[str, str, bool], now: datetime, profile: ProfileConfig
    ) -> AuthzRecord:
        id_type, value, wildcard = key
        authz_id = self._new_id()
        challenges = tuple(
            ChallengeRecord(
                id=self._new_id(),
                authz_id=authz_id,
                type=ctype,
                token=new_token(self._entropy),
                status=PENDING,
            )
            for ctype in self._pa.challenge_types_for(value, wildcard, id_type)
        )
        return AuthzRecord(
            id=authz_id,
            account_id=account_id,
            identifier_type=id_type,
            identifier_value=value,
            wildcard=wildcard,
            status=PENDING,
            # The profile's pending lifetime, within the CA-wide ceiling.
            expires=now + min(self._config.pending_authz_lifetime, profile.pending_authz_lifetime),
            created_at=now,
            challenges=challenges,
        )

    def order_view(self, order: OrderRecord) -> OrderView:
        now = self._clock.now()
        if order.finalize_state != FINALIZE_NONE:
            return OrderView(order, order.finalize_state)
        authzs = self._sa.get_authzs(order.authz_ids)
        statuses = [effective_authz_status(a.status, a.expires, now) for a in authzs]
        if len(statuses) != len(order.authz_ids):
            statuses.append("invalid")  # a vanished authorization cannot be valid
        return OrderView(
            order, derive_order_status(order.finalize_state, order.expires, statuses, now)
        )

    def get_order(self, account: AccountRecord, order_id: str) -> OrderView:
        order = self._sa.get_order(order_id)
        if order is None:
            raise errors.NotFound(f"no order {order_id}")
        if order.account_id != account.id:
            raise errors.Unauthorized("this order belongs to another account")
        return self.order_view(order)

    def list_orders(
        self, account: AccountRecord, cursor: int | None
    ) -> tuple[list[OrderView], int | None]:
        """One page of the account's orders list (RFC 8555 §7.1.2.1): those
        not invalid; ``next`` cursor when more may follow."""
        limit = self._config.orders_page_size
        page = self._sa.list_orders(account.id, cursor, limit)
        views = [self.order_view(o) for o in page]
        shown = [v for v in views if v.status != "invalid"]
        next_cursor = page[-1].seq if len(page) == limit else None
        return shown, next_cursor

    # -- authorizations and challenges (RFC 8555 §7.5) -------------------

    def get_authz(self, account: AccountRecord, authz_id: str) -> AuthzView:
        authz = self._sa.get_authz(authz_id)
        if authz is None:
            raise errors.NotFound(f"no authorization {authz_id}")
        if authz.account_id != account.id:
            raise errors.Unauthorized("this authorization belongs to another account")
        now = self._clock.now()
        return AuthzView(authz, effective_authz_status(authz.status, authz.expires, now))

    def deactivate_authz(self, account: AccountRecord, authz_id: str) -> AuthzView:
        self.get_authz(account, authz_id)
        try:
            authz = self._sa.deactivate_authz(authz_id)
        except StaleState:
            raise errors.Malformed(
                "only pending or valid authorizations can be deactivated"
            ) from None
        return AuthzView(authz, authz.status)

    def start_challenge(
        self, account: AccountRecord, authz_id: str, challenge_id: str, jwk_thumbprint_: str
    ) -> tuple[AuthzView, ChallengeRecord, asyncio.Task[AuthzRecord | None] | None]:
        """§7.5.1: the client says it is ready; validate asynchronously.

        Returns the validation task when this call started one, so the WFE
        may wait a moment for it (see ``await_validation``)."""
        view = self.get_authz(account, authz_id)
        challenge = _find_challenge(view.authz, challenge_id)
        if view.status == "expired":
            raise errors.Malformed("this authorization has expired")
        if view.status != PENDING or challenge.status != PENDING:
            # Idempotent: a repeated POST reports the current state.
            return view, challenge, None
        authz, started = self._sa.start_challenge(authz_id, challenge_id)
        challenge = _find_challenge(authz, challenge_id)
        task = None
        if started:
            request = ValidationRequest(
                challenge_type=challenge.type,
                identifier_type=authz.identifier_type,
                identifier_value=authz.identifier_value,
                token=challenge.token,
                key_authorization=key_authorization(challenge.token, jwk_thumbprint_),
                account_uri=self._urls.account(account.id),  # RFC 8657 §3 accounturi
                wildcard=authz.wildcard,  # RFC 8659 §4.3 issuewild
            )
            task = self._spawn(self._validate(authz.id, challenge.id, request))
        return AuthzView(authz, authz.status), challenge, task

    @staticmethod
    async def await_validation(
        task: asyncio.Task[AuthzRecord | None], timeout: float
    ) -> AuthzRecord | None:
        """The authorization after validation, if it finishes within
        ``timeout`` seconds; otherwise None and validation goes on."""
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            return None

    async def _validate(
        self, authz_id: str, challenge_id: str, request: ValidationRequest
    ) -> AuthzRecord | None:
        delay = self._config.chaos.validation_delay_seconds
        if delay > 0:
            await self._clock.sleep(delay)
        try:
            result = await self._va.validate(request)
            valid, problem, records = result.valid, result.problem, result.records
            perspectives: tuple[PerspectiveOutcome, ...] = result.perspectives
        except Exception:  # the VA returns failure as data; anything else is a bug
            log.exception("validation of %s crashed", request.identifier_value)
            valid, problem, records = (
                False,
                Problem(ProblemType.SERVER_INTERNAL, "validation failed inside the CA", 500),
                (),
            )
            perspectives = ()
        now = self._clock.now()
        if problem is not None and problem.identifier is None:
            problem = Problem(
                type=problem.type,
                detail=problem.detail,
                status=problem.status or 400,
                identifier=(request.identifier_type, request.identifier_value),
                subproblems=problem.subproblems,
            )
        try:
            return self._sa.finish_challenge(
                authz_id,
                challenge_id,
                valid=valid,
                validated_at=now if valid else None,
                error_json=None if valid or problem is None else problem.to_json_text(),
                validation_json=json.dumps([r.to_json() for r in records]),
                authz_expires=now + self._config.valid_authz_lifetime if valid else None,
                # BR 3.2.2.9: every perspective's outcome, kept with the
                # challenge (read on the management API, not in ACME JSON).
                perspectives_json=(
                    json.dumps([p.to_json() for p in perspectives]) if perspectives else None
                ),
            )
        except StaleState:
            log.info("challenge %s changed state during validation", challenge_id)
            return None

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for in-flight validations (tests and graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- finalize (RFC 8555 §7.4) ----------------------------------------

    async def recheck_caa(self, account: AccountRecord, order_id: str) -> None:
        """BR 3.2.2.8: CAA must have been checked within ``caa_recheck_after``
        (8 hours) of issuance. The WFE awaits this before ``finalize``; for
        each authorization validated longer ago (a reused one, typically) the
        VA checks CAA again. A refusal raises ``errors.CAA`` (a failed lookup
        ``errors.DNS``) and the order stays ready. Nothing is stored: the
        re-check covers this finalize only."""
        view = self.get_order(account, order_id)
        if view.status != "ready":
            return  # finalize itself says why it cannot proceed
        now = self._clock.now()
        stale: list[tuple[AuthzRecord, ChallengeRecord]] = []
        for authz in self._sa.get_authzs(view.order.authz_ids):
            done = next((c for c in authz.challenges if c.status == VALID), None)
            if authz.identifier_type != "dns" or done is None:
                continue  # RFC 8659 defines CAA for domain names only
            checked = done.validated_at
            if checked is None or now - checked > self._config.caa_recheck_after:
                stale.append((authz, done))
        if not stale:
            return
        account_uri = self._urls.account(account.id)
        problems = await asyncio.gather(
            *(
                self._va.check_caa(
                    authz.identifier_type,
                    authz.identifier_value,
                    challenge_type=done.type,
                    account_uri=account_uri,
                    wildcard=authz.wildcard,
                )
                for authz, done in stale
            )
        )
        for (authz, _), problem in zip(stale, problems, strict=True):
            if problem is None:
                continue
            name = ("*." if authz.wildcard else "") + authz.identifier_value
            error = errors.DNS if problem.type == ProblemType.DNS else errors.CAA
            raise error(
                f"Rechecking CAA for {name}: {problem.detail}",
                identifier=(authz.identifier_type, authz.identifier_value),
            )

    def finalize(self, account: AccountRecord, order_id: str, csr_der: bytes) -> OrderView:
        view = self.get_order(account, order_id)
        if view.status != "ready":
            raise errors.OrderNotReady(
                f"order is {view.status}, not ready; it cannot be finalized now"
            )
        order = view.order
        profile = self._pa.profile(order.profile)
        csr = self._check_csr(account, order, csr_der, profile)
        not_before = order.not_before
        if order.not_after is not None and not_before is None:
            # The PA vetted notAfter against "now" at newOrder time; the
            # CA's default backdated notBefore would stretch the window past
            # the profile (BR 7.1.2.7), so a certificate with a requested
            # notAfter starts now.
            not_before = self._clock.now()
            if order.not_after <= not_before:
                raise errors.Malformed("the order's requested notAfter has already passed")
        replaces_serial = None
        if order.replaces is not None:
            # RFC 9773 §5: if another order replaced the certificate since
            # newOrder, refuse before anything is signed (the order stays ready).
            replaces_serial = self.renewals.check_not_replaced(order.replaces, order.id)
        # The conditional update is the guard: of concurrent finalize calls
        # exactly one proceeds, so an order yields at most one certificate.
        if not self._sa.begin_finalize(order.id):
            raise errors.OrderNotReady("order is already being finalized")
        try:
            names = [v for _, v in order.identifiers]
            issued = self._ca.issue(
                public_key=csr,
                dns_names=[v for t, v in order.identifiers if t == "dns"],
                # RFC 8738 §3 / RFC 5280 §4.2.1.6: ip identifiers become
                # iPAddress SANs, never dNSName ones.
                ip_addresses=[v for t, v in order.identifiers if t == "ip"],
                not_before=not_before,
                not_after=order.not_after,
                profile=profile,
            )
            record = CertificateRecord(
                serial=issued.serial,
                account_id=account.id,
                order_id=order.id,
                issuer_id=issued.issuer_id,
                der=issued.der,
                names=tuple(names),
                not_before=issued.not_before,
                not_after=issued.not_after,
                key_spki_sha256=spki_sha256_hex(csr),
                issued_at=self._clock.now(),
                crl_shard=issued.crl_shard,
            )
            done = self._sa.complete_finalize(order.id, record, replaces_serial=replaces_serial)
        except AlreadyReplaced as exc:
            # Lost a race with another replacing order between the check above
            # and this transaction: nothing was written; the order fails.
            refusal = errors.AlreadyReplaced(
                f"certificate {exc.serial} was already replaced by another order"
            )
            self._sa.fail_finalize(order.id, refusal.problem().to_json_text())
            raise refusal from None
        except LintError as exc:
            # The CA logged every finding; nothing was signed. Boulder turns
            # a lint failure into serverInternal and the order into invalid.
            log.error("order %s: lint refused the certificate (%s)", order.id, exc)
            problem = Problem(
                ProblemType.SERVER_INTERNAL,
                "issuance failed inside the CA: the certificate did not pass the CA's "
                "pre-issuance lint, so nothing was signed",
                500,
            )
            self._sa.fail_finalize(order.id, problem.to_json_text())
            raise errors.ServerInternal(problem.detail) from None
        except Exception as exc:  # includes DuplicateSerial: nothing was written
            log.exception("issuance for order %s failed", order.id)
            problem = Problem(ProblemType.SERVER_INTERNAL, "issuance failed inside the CA", 500)
            self._sa.fail_finalize(order.id, problem.to_json_text())
            raise errors.ServerInternal("issuance failed; the order is now invalid") from exc
        return OrderView(done, done.finalize_state)

    def _check_csr(
        self, account: AccountRecord, order: OrderRecord, csr_der: bytes, profile: ProfileConfig
    ) -> PublicKey:
        # The order's profile still admits its identifiers (a reconfigured
        # profile must not issue what it no longer allows).
        self._pa.check_identifiers_fit_profile(order.identifiers, profile)
        try:
            csr = parse_csr(csr_der)
        except CSRError as exc:
            raise errors.BadCSR(f"CSR could not be used: {exc}") from None
        if csr.other_san_types:
            raise errors.BadCSR("CSR may only contain DNS names and IP addresses the order covers")
        # Compare as (type, canonical value) pairs, so an IP SAN satisfies
        # only an ip identifier and a dNSName only a dns one (RFC 8738 §3).
        requested = {("dns", n.lower()) for n in csr.dns_names}
        requested |= {("ip", _canonical_ip(a)) for a in csr.ip_addresses}
        if csr.common_name is not None:
            cn_address = _parse_ip(csr.common_name)
            cn = ("ip", cn_address) if cn_address is not None else ("dns", csr.common_name.lower())
            # A CN must also be a SAN, unless the CSR names exactly one
            # identifier in its CN alone (a form older clients send). BR
            # 7.1.4.3 lets a CN carry an IP address in its textual form.
            if requested and cn not in requested:
                raise errors.BadCSR("CSR common name is not one of its subjectAltNames")
            requested.add(cn)
        ordered = set(order.identifiers)
        if requested != ordered:
            missing = sorted(v for _, v in ordered - requested)
            extra = sorted(v for _, v in requested - ordered)
            parts = []
            if missing:
                parts.append("missing " + ", ".join(missing))
            if extra:
                parts.append("not in the order: " + ", ".join(extra))
            raise errors.BadCSR("CSR names do not match the order: " + "; ".join(parts))
        self._pa.check_certificate_key(csr.public_key)
        account_key = public_key_from_jwk(json.loads(account.jwk_json))
        if public_keys_equal(csr.public_key, account_key):
            raise errors.BadCSR("the certificate key must differ from the account key")
        return csr.public_key

    # -- certificates and revocation (RFC 8555 §7.4.2, §7.6) -------------

    def get_certificate(self, account: AccountRecord, serial: str) -> CertificateRecord:
        cert = self._sa.get_certificate(serial)
        if cert is None:
            raise errors.NotFound(f"no certificate {serial}")
        if cert.account_id != account.id:
            raise errors.Unauthorized("this certificate belongs to another account")
        return cert

    def chains_pem(self, issuer_id: str) -> tuple[str, ...]:
        return self._ca.chains_pem(issuer_id)

    def revoke(
        self,
        cert_der: bytes,
        reason: int | None,
        *,
        account: AccountRecord | None,
        signing_key: PublicKey | None,
    ) -> None:
        """RFC 8555 §7.6; the rules are in ``ra_revocation.py``."""
        self.revocations.revoke(cert_der, reason, account=account, signing_key=signing_key)


def _validated_within(authz: AuthzRecord, window: timedelta, now: datetime) -> bool:
    """Whether ``authz`` was validated at most ``window`` ago: the profile's
    authorization reuse period (Let's Encrypt: 30 days classic, 7 hours
    shortlived)."""
    validated = [c.validated_at for c in authz.challenges if c.validated_at is not None]
    return bool(validated) and now - max(validated) <= window


def _parse_ip(text: str) -> str | None:
    """The canonical text of an IP address, or None if ``text`` is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _canonical_ip(text: str) -> str:
    return _parse_ip(text) or text


def _find_challenge(authz: AuthzRecord, challenge_id: str) -> ChallengeRecord:
    for challenge in authz.challenges:
        if challenge.id == challenge_id:
            return challenge
    raise errors.NotFound(f"no challenge {challenge_id} in this authorization")
