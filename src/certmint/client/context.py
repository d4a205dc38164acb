"""What every verb needs: paths, the CA session, the account, an
authenticator — resolved from flags, stored files and (on a terminal) the
person at it."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certmint.client.accounts import AccountStore
from certmint.client.acme import AcmeClient
from certmint.client.authenticators.base import Authenticator
from certmint.client.errors import ClientError
from certmint.client.options import LETS_ENCRYPT
from certmint.client.session import AcmeSession
from certmint.client.storage import CertStore, Paths, RenewalParams, default_paths
from certmint.client.ui import Terminal
from certmint.protocol.b64 import b64url_decode
from certmint.protocol.jwk import PrivateKey, generate_private_key, jwk_thumbprint
from certmint.runtime import Clock, Entropy


@dataclass
class Context:
    """Everything a verb may use. The CLI builds it once from the real world
    (environment, clock, randomness, sleep), so nothing below reads them
    directly (DESIGN.md §2)."""

    args: argparse.Namespace
    term: Terminal
    paths: Paths
    environ: Mapping[str, str]
    clock: Clock
    entropy: Entropy
    sleep: Callable[[float], None]
    _sessions: list[AcmeSession] = field(default_factory=list)

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        term: Terminal,
        *,
        environ: Mapping[str, str],
        is_root: bool,
        home: Path,
        clock: Clock,
        entropy: Entropy,
        sleep: Callable[[float], None],
    ) -> Context:
        defaults = default_paths(is_root, home)
        paths = Paths(
            config_dir=Path(args.config_dir) if args.config_dir else defaults.config_dir,
            work_dir=Path(args.work_dir) if args.work_dir else defaults.work_dir,
            logs_dir=Path(args.logs_dir) if args.logs_dir else defaults.logs_dir,
        )
        return cls(
            args=args,
            term=term,
            paths=paths,
            environ=environ,
            clock=clock,
            entropy=entropy,
            sleep=sleep,
        )

    @property
    def server(self) -> str:
        return str(self.args.server or LETS_ENCRYPT)

    @property
    def store(self) -> CertStore:
        return CertStore(self.paths)

    @property
    def accounts(self) -> AccountStore:
        return AccountStore(self.paths)

    def verify(self) -> bool | str:
        # certbot users trust a private CA through REQUESTS_CA_BUNDLE.
        bundle = self.environ.get("REQUESTS_CA_BUNDLE") or self.environ.get("SSL_CERT_FILE")
        return bundle if bundle else True

    def session(self, server: str, key: PrivateKey, kid: str | None = None) -> AcmeSession:
        session = AcmeSession(server, key, verify=self.verify(), kid=kid)
        self._sessions.append(session)
        return session

    def close(self) -> None:
        for session in self._sessions:
            session.close()

    # -- the account ---------------------------------------------------------

    def account_client(
        self, server: str | None = None, *, create: bool = True
    ) -> tuple[AcmeClient, str]:
        """An AcmeClient signed in with the stored account for ``server``,
        registering one first if there is none (and ``create``)."""
        server = server or self.server
        stored = self.accounts.load_for_server(server)
        if self.args.account:
            stored = [a for a in stored if a.id == self.args.account]
        if stored:
            account = stored[0]
            client = AcmeClient(self.session(server, account.key, kid=account.account_url))
            return client, jwk_thumbprint(account.key.public_key())
        if not create:
            raise ClientError(f"there is no account for {server}; run `certmint register` first")
        return self.register(server)

    def register(self, server: str) -> tuple[AcmeClient, str]:
        key = generate_private_key("ES256")
        client = AcmeClient(self.session(server, key))
        directory = client.session.directory
        contact = self._contact()
        agree = self._agree_tos(directory.meta.get("termsOfService"))
        eab = self._eab(bool(directory.meta.get("externalAccountRequired")))
        self.term.step("creating an account")
        account_url, body = client.register(contact=contact, agree_tos=agree, eab=eab)
        self.accounts.save(server, account_url, key, body.to_json())
        self.term.done(f"account registered: {account_url}")
        return client, jwk_thumbprint(key.public_key())

    def _contact(self) -> tuple[str, ...]:
        email = self.args.email
        if not email and not self.args.register_unsafely_without_email:
            if not self.term.interactive:
                raise ClientError(
                    "an email address is needed: pass --email ADDRESS, or "
                    "--register-unsafely-without-email"
                )
            email = self.term.ask("Email address for urgent renewal and security notices:")
        if not email:
            return ()
        return tuple(f"mailto:{e.strip()}" for e in email.split(",") if e.strip())

    def _agree_tos(self, terms: Any) -> bool:
        if self.args.agree_tos or not terms:
            return True
        if not self.term.interactive:
            raise ClientError(f"you must agree to the CA's terms ({terms}): pass --agree-tos")
        if self.term.confirm(f"Do you agree to the terms of service at {terms}?"):
            return True
        raise ClientError("you must agree to the CA's terms of service to register")

    def _eab(self, required: bool) -> tuple[str, bytes] | None:
        kid, hmac_key = self.args.eab_kid, self.args.eab_hmac_key
        if bool(kid) != bool(hmac_key):
            raise ClientError("--eab-kid and --eab-hmac-key go together")
        if kid:
            try:
                return kid, b64url_decode(hmac_key.rstrip("="))
            except ValueError:
                raise ClientError("--eab-hmac-key is not base64url") from None
        if required:
            raise ClientError(
                "this CA requires an external account binding: pass --eab-kid and --eab-hmac-key"
            )
        return None

    # -- the authenticator -----------------------------------------------------

    def authenticator(self, params: RenewalParams | None = None) -> Authenticator:
        from certmint.client.plugin_setup import build_authenticator

        name = self.args.authenticator or (params.authenticator if params else None)
        if name is None:
            if not self.term.interactive:
                raise ClientError(
                    "choose how to prove control: --standalone, --webroot -w DIR, "
                    "--manual or --dns-rfc2136"
                )
            name = self.term.ask("Authenticator (standalone, webroot, manual, dns-rfc2136):")
        return build_authenticator(name, self.args, params, self.term, self.environ)
