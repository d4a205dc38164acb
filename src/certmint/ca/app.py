"""The ONE place where the CA's components are wired together (DESIGN.md §2).

Every dependency is passed through a constructor here; nothing else in
``certmint.ca`` builds another component.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from certmint.ca.config import CAConfig
from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.ca.mgmt import CrlPublisher, build_management_app
from certmint.ca.nonces import ChaoticNonceService, MemoryNonceService, NonceService
from certmint.ca.policy import PolicyAuthority
from certmint.ca.ra import RegistrationAuthority
from certmint.ca.shared import RevocationCounter
from certmint.ca.storage.sa import StorageAuthority
from certmint.ca.urls import AcmeUrls
from certmint.ca.va.authority import ValidationAuthority
from certmint.ca.wfe.app import WebFrontEnd
from certmint.runtime import Clock, Entropy, SeededEntropy


@dataclass(frozen=True)
class CAServer:
    """The wired CA: two ASGI apps (ACME and management) and their parts."""

    config: CAConfig
    ra: RegistrationAuthority
    wfe: WebFrontEnd
    va: ValidationAuthority
    sa: StorageAuthority
    ca: CertificateAuthority
    nonces: NonceService
    crl_publisher: CrlPublisher
    acme_app: Starlette
    management_app: Starlette
    chaos_seed: int | None


def build_ca_server(
    *,
    config: CAConfig,
    sa: StorageAuthority,
    va: ValidationAuthority,
    hierarchy: Hierarchy,
    clock: Clock,
    entropy: Entropy,
    nonces: NonceService | None = None,
    revocations: RevocationCounter | None = None,
) -> CAServer:
    mgmt = config.management_base_url.rstrip("/")
    ca = CertificateAuthority(
        hierarchy,
        IssuanceConfig(crl_base_url=f"{mgmt}/crl/", aia_base_url=f"{mgmt}/aia/"),
        clock,
        entropy,
    )
    pa = PolicyAuthority(config.policy, va.supported_challenge_types)
    crl_publisher = CrlPublisher(ca, sa, clock, revocations=revocations)

    chaos_seed: int | None = None
    chaos_entropy: Entropy | None = None
    if nonces is None:
        nonces = MemoryNonceService(entropy)
    if config.chaos.enabled:
        # Chaos replays from its seed; print it so a failing run can be rerun.
        chaos_seed = (
            config.chaos.seed
            if config.chaos.seed is not None
            else entropy.randbelow(2**31)
        )
        chaos_entropy = SeededEntropy(chaos_seed)
        if config.chaos.nonce_reject_percent > 0:
            nonces = ChaoticNonceService(nonces, config.chaos.nonce_reject_percent, chaos_entropy)

    ra = RegistrationAuthority(
        config=config,
        sa=sa,
        pa=pa,
        va=va,
        ca=ca,
        urls=AcmeUrls(config.base_url),
        clock=clock,
        entropy=entropy,
        chaos_entropy=chaos_entropy,
        on_revocation=crl_publisher.invalidate_crl,
    )
    wfe = WebFrontEnd(config=config, ra=ra, sa=sa, pa=pa, nonces=nonces, entropy=entropy)
    management_app = build_management_app(
        ca, hierarchy, sa, clock, crl_publisher=crl_publisher, renewal_windows=sa
    )
    return CAServer(
        config=config,
        ra=ra,
        wfe=wfe,
        va=va,
        sa=sa,
        ca=ca,
        nonces=nonces,
        crl_publisher=crl_publisher,
        acme_app=wfe.asgi_app(),
        management_app=management_app,
        chaos_seed=chaos_seed,
    )
