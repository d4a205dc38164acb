"""One method per ACME operation (RFC 8555 §7, RFC 9773), returning protocol values.

``AcmeClient`` sits on an ``AcmeSession`` and knows the resources: accounts
(§7.3), orders (§7.4), authorizations and challenges (§7.5), certificates
(§7.4.2), revocation (§7.6) and renewal information (RFC 9773). It does not
decide anything about a user's certificates; ``client/flow.py`` does that.

Waiting is injected: ``sleep`` and ``monotonic`` come from the caller (the
CLI passes ``time.sleep``/``time.monotonic``, tests pass fakes), so polling
cadence is tested without sleeping.

Usage as a library::

    with AcmeSession(directory_url, account_key) as session:
        acme = AcmeClient(session)
        account_url, account = acme.register(contact=["mailto:a@example.com"], agree_tos=True)
        order_url, order = acme.new_order([Identifier("dns", "example.com")])
        ...  # answer each authorization's challenge, then poll_authorization
        order = acme.finalize(order_url, acme.poll_order(order_url), csr_der)
        fullchain_pem = acme.download_certificate(order.certificate)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from certmint.client.errors import AcmeProblemError, ClientError
from certmint.client.session import AcmeSession, clean_text, parse_link_header
from certmint.protocol.b64 import b64url_encode
from certmint.protocol.jwk import PrivateKey, jwk_from_public_key
from certmint.protocol.jws import sign_eab, sign_key_change
from certmint.protocol.messages import (
    AccountMsg,
    AuthorizationMsg,
    ChallengeMsg,
    Identifier,
    MessageError,
    OrderMsg,
    parse_rfc3339,
)
from certmint.protocol.problems import Problem
from certmint.protocol.renewal_info import cert_id_of

PEM_CHAIN_CONTENT_TYPE = "application/pem-certificate-chain"

# Polling (RFC 8555 §7.5.1 and §7.4: "clients SHOULD ... poll", honouring
# Retry-After). Without Retry-After we start fast, because most validations
# and issuances finish within a few hundred milliseconds, and back off so a
# slow CA is not hammered.
POLL_FIRST_DELAY_SECONDS = 0.05
POLL_BACKOFF_FACTOR = 1.5
POLL_MAX_DELAY_SECONDS = 2.0
# A CA's Retry-After is honoured up to this cap: an order is never worth
# idling longer between two looks.
RETRY_AFTER_CAP_SECONDS = 10.0
DEFAULT_POLL_TIMEOUT_SECONDS = 90.0
# Bounds every polling loop by count too, whatever the clock does.
MAX_POLLS = 2000
# Alternate chains we are willing to fetch (RFC 8555 §7.4.2).
MAX_ALTERNATE_CHAINS = 10

ORDER_SETTLED = ("ready", "valid", "invalid")
_ORDER_IN_FLIGHT = frozenset({"pending", "processing"})


@dataclass(frozen=True)
class RenewalInfo:
    """A CA's suggested renewal window for one certificate (RFC 9773 §4.2)."""

    start: datetime
    end: datetime
    explanation_url: str | None
    retry_after: float | None  # seconds until the CA wants to be asked again


def _certificate_from(cert: x509.Certificate | bytes | str) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    data = cert.encode("ascii", errors="replace") if isinstance(cert, str) else cert
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ClientError(f"not a certificate: {exc}") from None


def ari_cert_id(cert: x509.Certificate | bytes | str) -> str:
    """The RFC 9773 §4.1 CertID: base64url(AKI keyIdentifier) "." base64url(serial).

    The serial is the DER INTEGER's content octets: two's complement, so a
    serial whose top bit is set gains a leading zero octet. The flow sends
    this as ``replaces`` in the next order (RFC 9773 §5).
    """
    try:
        return cert_id_of(_certificate_from(cert))
    except ValueError as exc:
        raise ClientError(f"the certificate has no ARI CertID: {exc}") from None


def _common_names(name: x509.Name) -> list[str]:
    return [str(attribute.value) for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def chain_matches(pem_chain: str, preferred_chain: str) -> bool:
    """certbot's ``--preferred-chain`` rule: the topmost certificate of the
    chain was issued by (or is) a certificate with this Common Name."""
    try:
        certificates = x509.load_pem_x509_certificates(pem_chain.encode("ascii"))
    except ValueError:
        return False
    top = certificates[-1]
    return preferred_chain in _common_names(top.issuer) + _common_names(top.subject)


def choose_chain(chains: Sequence[str], preferred_chain: str | None) -> str:
    """The first chain matching ``preferred_chain``; else the default (first)."""
    if preferred_chain is not None:
        for chain in chains:
            if chain_matches(chain, preferred_chain):
                return chain
    return chains[0]


def _normalised_pem_chain(text: str, url: str) -> str:
    """Re-encode a downloaded chain: only parseable certificates survive, in
    order, leaf first (RFC 8555 §9.1); text between them is dropped."""
    try:
        certificates = x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ClientError(f"the certificate at {url} is not a PEM chain: {exc}") from None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


class AcmeClient:
    """ACME operations on one session (one CA, one account key)."""

    def __init__(
        self,
        session: AcmeSession,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self._sleep = sleep
        self._monotonic = monotonic

    # -- helpers -----------------------------------------------------------

    def _parse(self, parse: Callable[[Any], Any], response: httpx.Response, what: str) -> Any:
        try:
            return parse(self.session.json(response))
        except MessageError as exc:
            raise ClientError(
                f"the CA sent a malformed {what} ({response.request.url}): "
                f"{clean_text(str(exc), 200)}"
            ) from None

    @staticmethod
    def _location(response: httpx.Response, what: str) -> str:
        location = response.headers.get("Location")
        if not location:
            raise ClientError(f"the CA created the {what} but did not say where (no Location)")
        # RFC 9110 §10.2.2 allows a relative reference; resolve it.
        url = response.request.url.join(location.strip())
        if url.scheme not in ("https", "http") or not url.host:
            raise ClientError(f"the CA gave an unusable {what} URL: {clean_text(location, 200)}")
        return str(url)

    def _account_url(self) -> str:
        if self.session.kid is None:
            raise ClientError("no ACME account yet: register first")
        return self.session.kid

    # -- accounts (RFC 8555 §7.3) ------------------------------------------

    def register(
        self,
        *,
        contact: Sequence[str] = (),
        agree_tos: bool,
        eab: tuple[str, bytes] | None = None,
        only_return_existing: bool = False,
    ) -> tuple[str, AccountMsg]:
        """newAccount (§7.3); the session signs with ``kid`` from then on.

        ``eab`` is (key id, HMAC key) from the CA's operator (§7.3.4). For a
        key that already has an account the CA answers with that account.
        """
        new_account = self.session.directory.new_account
        payload: dict[str, Any] = {}
        if agree_tos:
            payload["termsOfServiceAgreed"] = True
        if contact:
            payload["contact"] = list(contact)
        if only_return_existing:
            payload["onlyReturnExisting"] = True
        if eab is not None:
            eab_kid, hmac_key = eab
            account_jwk = jwk_from_public_key(self.session.key.public_key())
            payload["externalAccountBinding"] = sign_eab(
                account_jwk, eab_kid, hmac_key, new_account
            )
        response = self.session.post(new_account, payload, use_jwk=True)
        url = self._location(response, "account")
        account: AccountMsg = self._parse(AccountMsg.from_json, response, "account")
        self.session.kid = url
        return url, account

    def account(self) -> AccountMsg:
        """The account as the CA holds it (POST-as-GET on the account URL)."""
        response = self.session.post_as_get(self._account_url())
        result: AccountMsg = self._parse(AccountMsg.from_json, response, "account")
        return result

    def update_account(self, contact: Sequence[str]) -> AccountMsg:
        """Replace the contact addresses (§7.3.2); empty removes them all."""
        response = self.session.post(self._account_url(), {"contact": list(contact)})
        result: AccountMsg = self._parse(AccountMsg.from_json, response, "account")
        return result

    def deactivate_account(self) -> AccountMsg:
        """§7.3.6: final; the CA refuses every later request of this account."""
        response = self.session.post(self._account_url(), {"status": "deactivated"})
        result: AccountMsg = self._parse(AccountMsg.from_json, response, "account")
        return result

    def key_change(self, new_key: PrivateKey) -> None:
        """Roll the account over to ``new_key`` (§7.3.5).

        The inner JWS, signed by the new key, is the payload of an outer JWS
        signed by the old key; the session signs with the new key afterwards.
        """
        url = self.session.directory.key_change
        inner = sign_key_change(self.session.key, new_key, self._account_url(), url)
        self.session.post(url, inner)
        self.session.key = new_key

    # -- orders (RFC 8555 §7.4) --------------------------------------------

    def new_order(
        self,
        identifiers: Sequence[Identifier],
        *,
        replaces: str | None = None,
        profile: str | None = None,
    ) -> tuple[str, OrderMsg]:
        """newOrder; ``replaces`` is the ARI CertID renewed (RFC 9773 §5),
        ``profile`` a name from the directory's meta.profiles."""
        payload: dict[str, Any] = {"identifiers": [i.to_json() for i in identifiers]}
        if replaces is not None:
            payload["replaces"] = replaces
        if profile is not None:
            payload["profile"] = profile
        response = self.session.post(self.session.directory.new_order, payload)
        url = self._location(response, "order")
        order: OrderMsg = self._parse(OrderMsg.from_json, response, "order")
        return url, order

    def get_order(self, url: str) -> OrderMsg:
        order: OrderMsg = self._parse(OrderMsg.from_json, self.session.post_as_get(url), "order")
        return order

    def poll_order(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_POLL_TIMEOUT_SECONDS,
        until: Collection[str] = ORDER_SETTLED,
    ) -> OrderMsg:
        """Fetch the order until its status is in ``until`` or no longer
        pending/processing (a state the CA will not leave by itself)."""
        order: OrderMsg = self._poll(
            url,
            OrderMsg.from_json,
            "order",
            lambda o: o.status in until or o.status not in _ORDER_IN_FLIGHT,
            timeout,
        )
        return order

    def finalize(self, order_url: str, order: OrderMsg, csr_der: bytes) -> OrderMsg:
        """Send the CSR (§7.4) and wait for the certificate.

        Returns the order once valid (its ``certificate`` URL set). Raises
        ``AcmeProblemError`` with the order's error if it became invalid, and
        ``ClientError`` if it ends in any other state.
        """
        response = self.session.post(order.finalize, {"csr": b64url_encode(csr_der)})
        finalized: OrderMsg = self._parse(OrderMsg.from_json, response, "order")
        if finalized.status == "processing":
            finalized = self.poll_order(order_url, until=("valid", "invalid"))
        if finalized.status == "valid" and finalized.certificate:
            return finalized
        if finalized.status == "invalid":
            problem = finalized.error or Problem(
                "serverInternal", "the CA marked the order invalid without saying why", 0
            )
            raise AcmeProblemError(problem, order_url)
        raise ClientError(
            f"the order at {order_url} is {clean_text(finalized.status, 40)} after finalizing"
            + ("" if finalized.status != "valid" else " but has no certificate URL")
        )

    # -- authorizations and challenges (RFC 8555 §7.5) ---------------------

    def get_authorization(self, url: str) -> AuthorizationMsg:
        authz: AuthorizationMsg = self._parse(
            AuthorizationMsg.from_json, self.session.post_as_get(url), "authorization"
        )
        return authz

    def poll_authorization(
        self, url: str, *, timeout: float = DEFAULT_POLL_TIMEOUT_SECONDS
    ) -> AuthorizationMsg:
        """Fetch the authorization until it is no longer pending (§7.5.1)."""
        authz: AuthorizationMsg = self._poll(
            url,
            AuthorizationMsg.from_json,
            "authorization",
            lambda a: a.status != "pending",
            timeout,
        )
        return authz

    def answer_challenge(self, url: str) -> ChallengeMsg:
        """Tell the CA the challenge is ready (§7.5.1: POST ``{}``)."""
        challenge: ChallengeMsg = self._parse(
            ChallengeMsg.from_json, self.session.post(url, {}), "challenge"
        )
        return challenge

    def deactivate_authorization(self, url: str) -> AuthorizationMsg:
        """§7.5.2: give up an authorization (e.g. after a failed order)."""
        response = self.session.post(url, {"status": "deactivated"})
        authz: AuthorizationMsg = self._parse(AuthorizationMsg.from_json, response, "authorization")
        return authz

    def _poll(
        self,
        url: str,
        parse: Callable[[Any], Any],
        what: str,
        done: Callable[[Any], bool],
        timeout: float,
    ) -> Any:
        deadline = self._monotonic() + timeout
        delay = POLL_FIRST_DELAY_SECONDS
        for _ in range(MAX_POLLS):
            response = self.session.post_as_get(url)
            resource = self._parse(parse, response, what)
            if done(resource):
                return resource
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                break
            # §6.3 / RFC 9110 §10.2.3: the CA may say when to look again.
            retry_after = self.session.retry_after(response)
            # A Retry-After of 0 (or a date in the past) must not turn this
            # into a busy loop: never less than the first delay.
            wait = (
                delay
                if retry_after is None
                else max(min(retry_after, RETRY_AFTER_CAP_SECONDS), POLL_FIRST_DELAY_SECONDS)
            )
            self._sleep(min(wait, remaining))
            delay = min(delay * POLL_BACKOFF_FACTOR, POLL_MAX_DELAY_SECONDS)
        status = clean_text(str(getattr(resource, "status", "unknown")), 40)
        raise ClientError(f"the {what} at {url} is still {status} after {timeout:g} s")

    # -- certificates (RFC 8555 §7.4.2) and revocation (§7.6) --------------

    def _fetch_chain(self, url: str) -> tuple[str, httpx.Response]:
        response = self.session.post_as_get(url, accept=PEM_CHAIN_CONTENT_TYPE)
        try:
            text = response.content.decode("ascii")
        except UnicodeDecodeError:
            raise ClientError(f"the certificate at {url} is not PEM text") from None
        return _normalised_pem_chain(text, url), response

    def download_certificate(self, url: str, *, preferred_chain: str | None = None) -> str:
        """The PEM full chain (leaf first) at ``url``.

        With ``preferred_chain``, the CA's alternate chains (``Link:
        rel="alternate"``) are fetched too and the first one whose topmost
        certificate's issuer (or subject) Common Name equals it is returned,
        as certbot's ``--preferred-chain`` does; otherwise the default chain.
        """
        default, response = self._fetch_chain(url)
        if preferred_chain is None or chain_matches(default, preferred_chain):
            return default
        chains = [default]
        alternates = [
            str(response.request.url.join(target))
            for target, relations in parse_link_header(response.headers.get_list("Link"))
            if "alternate" in relations
        ]
        for alternate_url in alternates[:MAX_ALTERNATE_CHAINS]:
            chain, _ = self._fetch_chain(alternate_url)
            if chain_matches(chain, preferred_chain):
                return chain
            chains.append(chain)
        return choose_chain(chains, preferred_chain)

    def revoke(
        self, cert_der: bytes, *, reason: int = 0, cert_key: PrivateKey | None = None
    ) -> None:
        """revokeCert (§7.6), signed by the account or, with ``cert_key``, by
        the certificate's own key (``jwk``, no account needed)."""
        payload = {"certificate": b64url_encode(cert_der), "reason": reason}
        url = self.session.directory.revoke_cert
        if cert_key is None:
            self.session.post(url, payload)
        else:
            self.session.post(url, payload, use_jwk=True, key=cert_key)

    # -- renewal information (RFC 9773) ------------------------------------

    def renewal_info(self, cert: x509.Certificate | bytes | str) -> RenewalInfo | None:
        """The CA's suggested renewal window, or None if it offers no ARI."""
        base = self.session.directory.renewal_info
        if base is None:
            return None
        url = f"{base.rstrip('/')}/{ari_cert_id(cert)}"
        response = self.session.get(url)
        document = self.session.json(response)
        try:
            window = document["suggestedWindow"]
            start = parse_rfc3339(window["start"])
            end = parse_rfc3339(window["end"])
        except (TypeError, KeyError, MessageError) as exc:
            raise ClientError(f"the CA sent malformed renewal information ({url}): {exc}") from None
        # RFC 9773 §4.2: a window whose end is not after its start is invalid.
        if end <= start:
            raise ClientError(f"the CA's renewal window at {url} ends before it starts")
        explanation = document.get("explanationURL")
        return RenewalInfo(
            start=start,
            end=end,
            explanation_url=clean_text(explanation, 500) if isinstance(explanation, str) else None,
            retry_after=self.session.retry_after(response),
        )
