"""Every ACME URL the CA hands out, built in one place so the WFE's routes,
the RA's checks (EAB and keyChange compare URLs) and rendering agree."""

from __future__ import annotations

ACME_PREFIX = "/acme"


class AcmeUrls:
    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self._account_prefix = f"{self.base}{ACME_PREFIX}/acct/"

    @property
    def directory(self) -> str:
        return f"{self.base}/directory"

    @property
    def new_nonce(self) -> str:
        return f"{self.base}{ACME_PREFIX}/new-nonce"

    @property
    def new_account(self) -> str:
        return f"{self.base}{ACME_PREFIX}/new-account"

    @property
    def new_order(self) -> str:
        return f"{self.base}{ACME_PREFIX}/new-order"

    @property
    def revoke_cert(self) -> str:
        return f"{self.base}{ACME_PREFIX}/revoke-cert"

    @property
    def key_change(self) -> str:
        return f"{self.base}{ACME_PREFIX}/key-change"

    @property
    def renewal_info(self) -> str:
        """RFC 9773 §3: the renewalInfo base; a certificate's resource is
        ``<renewal_info>/<certID>``."""
        return f"{self.base}{ACME_PREFIX}/renewal-info"

    def account(self, account_id: str) -> str:
        return self._account_prefix + account_id

    def account_orders(self, account_id: str, cursor: int | None = None) -> str:
        url = f"{self._account_prefix}{account_id}/orders"
        return url if cursor is None else f"{url}?cursor={cursor}"

    def order(self, order_id: str) -> str:
        return f"{self.base}{ACME_PREFIX}/order/{order_id}"

    def finalize(self, order_id: str) -> str:
        return f"{self.base}{ACME_PREFIX}/order/{order_id}/finalize"

    def authz(self, authz_id: str) -> str:
        return f"{self.base}{ACME_PREFIX}/authz/{authz_id}"

    def challenge(self, authz_id: str, challenge_id: str) -> str:
        return f"{self.base}{ACME_PREFIX}/chall/{authz_id}/{challenge_id}"

    def certificate(self, serial: str, alternate: int = 0) -> str:
        url = f"{self.base}{ACME_PREFIX}/cert/{serial}"
        return url if alternate == 0 else f"{url}/{alternate}"

    def account_id_from_kid(self, kid: str) -> str | None:
        """The account id in a ``kid`` URL, or None if it is not one of ours."""
        if not kid.startswith(self._account_prefix):
            return None
        account_id = kid[len(self._account_prefix) :]
        if not account_id or "/" in account_id or "?" in account_id:
            return None
        return account_id
