"""The ONE place where the CA's components are wired together (DESIGN.md §2).

Every dependency is passed through a constructor here; nothing else in
``certmint.ca`` builds another component.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from certmint.ca.config import CAConfig
from certmint.ca.crl_updater import CrlUpdater
from certmint.ca.issuance.authority import CertificateAuthority, IssuanceConfig
from certmint.ca.issuance.crl import CrlConfig
from certmint.ca.issuance.crl_lint import lint_crl
from certmint.ca.issuance.hierarchy import Hierarchy
from certmint.ca.issuance.lint import LintWaivers, SubscriberLinter
from certmint.ca.keypolicy import KeyPolicy, blocked_by, shipped_weak_rsa_fingerprints
from certmint.ca.mgmt import CrlPublisher, build_management_app
from certmint.ca.nonces import ChaoticNonceService, MemoryNonceService, NonceService
from certmint.ca.ocsp import OcspResponder
from certmint.ca.policy import PolicyAuthority
from certmint.ca.ra import RegistrationAuthority
from certmint.ca.storage.sa import StorageAuthority
from certmint.ca.urls import AcmeUrls
from certmint.ca.va.model import Validator
from certmint.ca.wfe.app import WebFrontEnd
from certmint.runtime import Clock, Entropy, SeededEntropy


@dataclass(frozen=True)
class CAServer:
    """The wired CA: two ASGI apps (ACME and management) and their parts."""

    config: CAConfig
    ra: RegistrationAuthority
    wfe: WebFrontEnd
    va: Validator
    sa: StorageAuthority
    ca: CertificateAuthority
    nonces: NonceService
    crl_publisher: CrlPublisher
    # Builds the CRLs; ``serve`` runs it in a process of its own, in-process
    # tests call ``run_once`` (ca/crl_updater.py).
    crl_updater: CrlUpdater
    acme_app: Starlette
    management_app: Starlette
    chaos_seed: int | None


def build_ca_server(
    *,
    config: CAConfig,
    sa: StorageAuthority,
    va: Validator,
    hierarchy: Hierarchy,
    clock: Clock,
    entropy: Entropy,
    nonces: NonceService | None = None,
    crl: CrlConfig | None = None,
) -> CAServer:
    mgmt = config.management_base_url.rstrip("/")
    crl = crl or CrlConfig()
    key_policy = KeyPolicy(
        shipped_weak_rsa_fingerprints() | config.policy.extra_weak_rsa_fingerprints,
        # The operator's list, then keys blocked by key-compromise
        # revocations (one primary-key lookup in blocked_keys).
        blocked_by(config.policy.blocked_key_digests, sa.is_key_blocked),
    )
    # The OCSP responder is optional and off by default (ca/ocsp.py).
    ocsp_url = f"{mgmt}/ocsp" if config.ocsp_enabled else None
    issuance = IssuanceConfig(
        crl_base_url=f"{mgmt}/crl/",
        aia_base_url=f"{mgmt}/aia/",
        ocsp_url=ocsp_url,
        crl_shards=crl.shards,
    )
    # Lint before sign (issue 5): the same key policy as the PA, and waivers
    # only for the non-public names this deployment's policy allows.
    waivers = LintWaivers.for_deployment(
        config.policy, (issuance.crl_base_url, issuance.aia_base_url, *filter(None, [ocsp_url]))
    )
    linter = SubscriberLinter(key_policy, waivers)
    linter.warm_up()  # pkilint's validators, once per process, not in a request
    ca = CertificateAuthority(hierarchy, issuance, clock, entropy, linter=linter)
    pa = PolicyAuthority(config.policy, va.supported_challenge_types, key_policy=key_policy)
    crl_publisher = CrlPublisher(sa, ca.issuer_ids, crl.shards)
    crl_updater = build_crl_updater(
        config=config, sa=sa, hierarchy=hierarchy, clock=clock, entropy=entropy, crl=crl
    )

    chaos_seed: int | None = None
    chaos_entropy: Entropy | None = None
    if nonces is None:
        nonces = MemoryNonceService(entropy)
    if config.chaos.enabled:
        # Chaos replays from its seed; print it so a failing run can be rerun.
        chaos_seed = (
            config.chaos.seed if config.chaos.seed is not None else entropy.randbelow(2**31)
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
    )
    wfe = WebFrontEnd(config=config, ra=ra, sa=sa, pa=pa, nonces=nonces, entropy=entropy)
    management_app = build_management_app(
        ca,
        hierarchy,
        sa,
        clock,
        crl_publisher=crl_publisher,
        renewal_windows=sa,
        authorizations=sa,
        ocsp=OcspResponder(hierarchy.issuers, sa, clock, entropy) if config.ocsp_enabled else None,
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
        crl_updater=crl_updater,
        acme_app=wfe.asgi_app(),
        management_app=management_app,
        chaos_seed=chaos_seed,
    )


def build_crl_updater(
    *,
    config: CAConfig,
    sa: StorageAuthority,
    hierarchy: Hierarchy,
    clock: Clock,
    entropy: Entropy,
    crl: CrlConfig,
) -> CrlUpdater:
    """The CRL updater (``serve`` runs it in its own process): every CRL is
    linted before it is signed (``issuance/crl_lint.py``)."""
    return CrlUpdater(
        issuers=hierarchy.issuers,
        sa=sa,
        clock=clock,
        entropy=entropy,
        config=crl,
        base_url=f"{config.management_base_url.rstrip('/')}/crl/",
        lint=lint_crl,
    )
