"""JSON bodies of ACME resources (RFC 8555 §7.1), from the RA's values."""

from __future__ import annotations

import json
from typing import Any

from certmint.ca.ari import RenewalWindow
from certmint.ca.config import CAConfig
from certmint.ca.policy import PolicyAuthority
from certmint.ca.ra import AuthzView, OrderView
from certmint.ca.storage.records import AccountRecord, ChallengeRecord
from certmint.ca.urls import AcmeUrls
from certmint.protocol.challenges import dns_persist01_issuer_domain_names
from certmint.protocol.messages import format_rfc3339

DNS_PERSIST_01 = "dns-persist-01"


class Renderer:
    def __init__(self, urls: AcmeUrls, config: CAConfig, pa: PolicyAuthority) -> None:
        self._urls = urls
        self._config = config
        self._pa = pa
        # draft-ietf-acme-dns-persist-00 §3.1 (and the §2 note: drawn from
        # caaIdentities); the VA accepts exactly these names in records.
        self._issuer_domain_names = list(dns_persist01_issuer_domain_names(config.caa_identities))
        self.directory_body = json.dumps(self._directory()).encode()

    def _directory(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "caaIdentities": list(self._config.caa_identities),
            "externalAccountRequired": self._config.eab_required,
            # draft-ietf-acme-profiles: name → human description.
            "profiles": {p.name: p.description for p in self._pa.profiles},
        }
        if self._config.terms_of_service:
            meta["termsOfService"] = self._config.terms_of_service
        if self._config.website:
            meta["website"] = self._config.website
        return {
            "newNonce": self._urls.new_nonce,
            "newAccount": self._urls.new_account,
            "newOrder": self._urls.new_order,
            "revokeCert": self._urls.revoke_cert,
            "keyChange": self._urls.key_change,
            "renewalInfo": self._urls.renewal_info,  # RFC 9773 §3
            "meta": meta,
        }

    def account(self, account: AccountRecord) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": account.status,
            "orders": self._urls.account_orders(account.id),
            "key": json.loads(account.jwk_json),
            "createdAt": format_rfc3339(account.created_at),
        }
        if account.contact:
            body["contact"] = list(account.contact)
        if account.tos_agreed:
            body["termsOfServiceAgreed"] = True
        return body

    def order(self, view: OrderView) -> dict[str, Any]:
        order = view.order
        body: dict[str, Any] = {
            "status": view.status,
            "expires": format_rfc3339(order.expires),
            "identifiers": [{"type": t, "value": v} for t, v in order.identifiers],
            "authorizations": [self._urls.authz(a) for a in order.authz_ids],
            "finalize": self._urls.finalize(order.id),
            "profile": order.profile,
        }
        if order.not_before is not None:
            body["notBefore"] = format_rfc3339(order.not_before)
        if order.not_after is not None:
            body["notAfter"] = format_rfc3339(order.not_after)
        if order.certificate_serial is not None and view.status == "valid":
            body["certificate"] = self._urls.certificate(order.certificate_serial)
        if order.error_json is not None:
            body["error"] = json.loads(order.error_json)
        if order.replaces is not None:
            body["replaces"] = order.replaces  # RFC 9773 §5
        return body

    @staticmethod
    def renewal_info(window: RenewalWindow) -> dict[str, Any]:
        """RFC 9773 §4.2: the RenewalInfo object."""
        return {
            "suggestedWindow": {
                "start": format_rfc3339(window.start),
                "end": format_rfc3339(window.end),
            }
        }

    def authz(self, view: AuthzView) -> dict[str, Any]:
        authz = view.authz
        body: dict[str, Any] = {
            "identifier": {"type": authz.identifier_type, "value": authz.identifier_value},
            "status": view.status,
            "expires": format_rfc3339(authz.expires),
            "challenges": [self.challenge(c) for c in authz.challenges],
        }
        if authz.wildcard:
            body["wildcard"] = True
        return body

    def challenge(self, challenge: ChallengeRecord) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": challenge.type,
            "url": self._urls.challenge(challenge.authz_id, challenge.id),
            "status": challenge.status,
        }
        if challenge.type == DNS_PERSIST_01:
            # §3.1: no token (the record names the account instead), and the
            # issuer domain names a record may carry.
            body["issuer-domain-names"] = self._issuer_domain_names
        else:
            body["token"] = challenge.token
        if challenge.validated_at is not None:
            body["validated"] = format_rfc3339(challenge.validated_at)
        if challenge.error_json is not None:
            body["error"] = json.loads(challenge.error_json)
        if challenge.validation_json is not None:
            body["validationRecord"] = json.loads(challenge.validation_json)
        return body
