"""The issuance flow (DESIGN.md §4): order → authorizations → authenticator →
finalize → chain. Cleanup of challenge answers always runs.

The flow knows nothing about files or the terminal: it takes an ``AcmeClient``,
an authenticator and a ``Progress`` to report steps to, and returns the
certificate it obtained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from certmint.client.acme import AcmeClient
from certmint.client.authenticators.base import Authenticator, ChallengeTask
from certmint.client.errors import AcmeProblemError, ClientError
from certmint.protocol.challenges import (
    dns01_record_name,
    dns01_txt_value,
    http01_path,
    key_authorization,
)
from certmint.protocol.csr import pem_encode_certificates, split_pem_chain
from certmint.protocol.messages import AuthorizationMsg, ChallengeMsg, Identifier
from certmint.protocol.problems import Problem


class Progress(Protocol):
    def step(self, message: str) -> None:
        """A step starts (shown with a spinner while it runs)."""
        ...

    def done(self, message: str) -> None:
        """A step finished."""
        ...


class SilentProgress:
    def step(self, message: str) -> None:
        return None

    def done(self, message: str) -> None:
        return None


@dataclass(frozen=True)
class Issued:
    order_url: str
    certificate_url: str
    cert_pem: bytes  # the leaf
    chain_pem: bytes  # intermediates
    fullchain_pem: bytes


@dataclass(frozen=True)
class _Pending:
    authz_url: str
    challenge: ChallengeMsg
    task: ChallengeTask


def choose_profile(
    offered: Sequence[str], preferred: str | None, required: str | None
) -> str | None:
    """draft-ietf-acme-profiles: a required profile must be offered; a
    preferred one is used only when offered (else the CA's default)."""
    if required is not None:
        if required not in offered:
            listed = ", ".join(offered) or "none"
            raise ClientError(f"the CA does not offer profile {required!r} (it offers: {listed})")
        return required
    if preferred is not None and preferred in offered:
        return preferred
    return None


def obtain_certificate(
    acme: AcmeClient,
    authenticator: Authenticator,
    *,
    domains: Sequence[str],
    csr_der: bytes,
    account_thumbprint: str,
    progress: Progress | None = None,
    replaces: str | None = None,
    profile: str | None = None,
    preferred_chain: str | None = None,
) -> Issued:
    report = progress or SilentProgress()
    identifiers = [Identifier("dns", d) for d in domains]
    report.step(f"ordering a certificate for {', '.join(domains)}")
    order_url, order = acme.new_order(identifiers, replaces=replaces, profile=profile)
    report.done("order created")

    pending: list[_Pending] = []
    for authz_url in order.authorizations:
        authz = acme.get_authorization(authz_url)
        if authz.status == "valid":
            report.done(f"{authz.identifier.value}: already authorized")
            continue
        if authz.status != "pending":
            raise ClientError(
                f"{authz.identifier.value}: the authorization is {authz.status}, not pending"
            )
        pending.append(_plan(authz_url, authz, authenticator, account_thumbprint))

    tasks = [p.task for p in pending]
    try:
        if tasks:
            report.step(f"answering {len(tasks)} challenge(s) with {authenticator.name}")
            authenticator.perform(tasks)
            for item in pending:
                acme.answer_challenge(item.challenge.url)
            for item in pending:
                report.step(f"{item.task.domain}: waiting for validation")
                final = acme.poll_authorization(item.authz_url)
                if final.status != "valid":
                    raise _validation_failure(item, final)
                report.done(f"{item.task.domain}: validated ({item.task.challenge_type})")
    finally:
        if tasks:
            authenticator.cleanup(tasks)

    report.step("finalizing the order")
    order = acme.poll_order(order_url, until=("ready", "valid", "invalid"))
    if order.status == "invalid":
        raise _order_failure(order.error, "the order became invalid")
    if order.status == "ready":
        order = acme.finalize(order_url, order, csr_der)
    if order.status != "valid" or not order.certificate:
        raise _order_failure(order.error, f"the order is {order.status} after finalize")
    report.done("order finalized")

    report.step("downloading the certificate")
    fullchain = acme.download_certificate(order.certificate, preferred_chain=preferred_chain)
    ders = split_pem_chain(fullchain)
    if not ders:
        raise ClientError("the CA returned no certificate")
    report.done("certificate downloaded")
    return Issued(
        order_url=order_url,
        certificate_url=order.certificate,
        cert_pem=pem_encode_certificates(ders[:1]).encode(),
        chain_pem=pem_encode_certificates(ders[1:]).encode(),
        fullchain_pem=pem_encode_certificates(ders).encode(),
    )


def _plan(
    authz_url: str, authz: AuthorizationMsg, authenticator: Authenticator, thumbprint: str
) -> _Pending:
    offered = {c.type: c for c in authz.challenges}
    domain = authz.identifier.value
    for ctype in authenticator.challenge_types:
        challenge = offered.get(ctype)
        if challenge is None or not challenge.token:
            continue
        key_authz = key_authorization(challenge.token, thumbprint)
        if ctype == "http-01":
            name, value = http01_path(challenge.token), key_authz
        elif ctype == "dns-01":
            name, value = dns01_record_name(domain), dns01_txt_value(key_authz)
        else:  # tls-alpn-01: the SNI name; the certificate is built from key_authz
            name, value = domain, key_authz
        task = ChallengeTask(
            domain=domain,
            challenge_type=ctype,
            token=challenge.token,
            key_authorization=key_authz,
            validation_name=name,
            validation_value=value,
            wildcard=authz.wildcard,
        )
        return _Pending(authz_url, challenge, task)
    kinds = ", ".join(sorted(offered)) or "none"
    raise ClientError(
        f"{domain}: the {authenticator.name} authenticator answers "
        f"{', '.join(authenticator.challenge_types)}, but the CA offers {kinds}"
    )


def _validation_failure(item: _Pending, final: AuthorizationMsg) -> ClientError:
    for challenge in final.challenges:
        if challenge.error is not None:
            problem = challenge.error
            if problem.identifier is None:
                problem = Problem(
                    type=problem.type,
                    detail=problem.detail,
                    status=problem.status,
                    identifier=("dns", item.task.domain),
                )
            return AcmeProblemError(problem)
    return ClientError(f"{item.task.domain}: validation ended {final.status}")


def _order_failure(error: Problem | None, fallback: str) -> ClientError:
    return AcmeProblemError(error) if error is not None else ClientError(fallback)
