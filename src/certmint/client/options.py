"""certbot's command line, as certmint understands it.

One parser, verb first, flags anywhere after it — the way certbot users type
them. Only this module knows flag spellings; the commands get a ``Namespace``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
VERBS = (
    "run",
    "certonly",
    "renew",
    "revoke",
    "certificates",
    "delete",
    "register",
    "update_account",
    "show_account",
    "unregister",
)
REVOCATION_REASONS = {
    "unspecified": 0,
    "keycompromise": 1,
    "affiliationchanged": 3,
    "superseded": 4,
    "cessationofoperation": 5,
}


class _WebrootAction(argparse.Action):
    """``-w DIR`` applies to the ``-d`` names that follow it (certbot)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        namespace.webroot_paths = [*getattr(namespace, "webroot_paths", []), str(values)]
        namespace.current_webroot = str(values)
        namespace.authenticator = namespace.authenticator or "webroot"


class _DomainAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        domains = list(getattr(namespace, "domains", None) or [])
        webroot_map = dict(getattr(namespace, "webroot_map", None) or {})
        for part in str(values).split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in domains:
                domains.append(name)
            current = getattr(namespace, "current_webroot", None)
            if current is not None:
                webroot_map.setdefault(name, current)
        namespace.domains = domains
        namespace.webroot_map = webroot_map


def _set_authenticator(name: str) -> type[argparse.Action]:
    class SetAuthenticator(argparse.Action):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["nargs"] = 0
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: object, option_string: str | None = None) -> None:
            namespace.authenticator = name

    return SetAuthenticator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certmint",
        description="Obtain, renew and revoke certificates from any ACME CA (RFC 8555).",
        epilog="Verbs: " + ", ".join(VERBS) + ". Flags follow certbot's.",
    )
    parser.add_argument("verb", nargs="?", default="run", choices=VERBS, metavar="VERB")
    add = parser.add_argument

    # What to get.
    add("-d", "--domains", "--domain", dest="domains", action=_DomainAction, default=[],
        metavar="DOMAIN", help="a name for the certificate (repeat, or comma-separate)")
    add("--cert-name", help="the lineage name (default: the first domain)")
    add("--csr", help="use this CSR (DER or PEM) instead of making a key")
    add("--key-type", choices=("ecdsa", "rsa"), default=None)
    add("--rsa-key-size", type=int, default=None)
    add("--elliptic-curve", choices=("secp256r1", "secp384r1"), default=None)
    add("--reuse-key", action="store_true", default=None)
    add("--no-reuse-key", dest="reuse_key", action="store_false")
    add("--preferred-chain", help="the chain whose top issuer has this Common Name")
    add("--preferred-profile", help="an ACME profile to ask for if the CA offers it")
    add("--required-profile", help="an ACME profile the CA must offer")

    # Where.
    add("--server", default=None, help=f"ACME directory URL (default {LETS_ENCRYPT})")
    add("--config-dir", default=None)
    add("--work-dir", default=None)
    add("--logs-dir", default=None)

    # The account.
    add("-m", "--email", help="contact address for the account")
    add("--register-unsafely-without-email", action="store_true")
    add("--agree-tos", action="store_true")
    add("--eab-kid")
    add("--eab-hmac-key")
    add("--account", help="the account id to use when several exist")

    # How to prove control.
    add("-a", "--authenticator", default=None,
        choices=("standalone", "webroot", "manual", "dns-rfc2136"))
    add("--standalone", action=_set_authenticator("standalone"), dest="authenticator")
    add("--webroot", action=_set_authenticator("webroot"), dest="authenticator")
    add("--manual", action=_set_authenticator("manual"), dest="authenticator")
    add("--dns-rfc2136", action=_set_authenticator("dns-rfc2136"), dest="authenticator")
    add("-w", "--webroot-path", action=_WebrootAction, metavar="DIR")
    add("--http-01-port", type=int, default=None)
    add("--http-01-address", default=None)
    add("--tls-alpn-01-port", type=int, default=None)
    add("--preferred-challenges", default=None, help="e.g. http-01,tls-alpn-01")
    add("--manual-auth-hook")
    add("--manual-cleanup-hook")
    add("--dns-rfc2136-credentials")
    add("--dns-rfc2136-propagation-seconds", type=float, default=None)
    add("-i", "--installer", default=None)

    # Behaviour.
    add("-n", "--non-interactive", action="store_true")
    add("--dry-run", action="store_true", help="a full issuance that saves nothing")
    add("--force-renewal", "--renew-by-default", action="store_true")
    add("--no-random-sleep-on-renew", action="store_true")
    add("--pre-hook")
    add("--post-hook")
    add("--deploy-hook")
    add("--no-directory-hooks", action="store_true")
    add("-q", "--quiet", action="store_true")
    add("-v", "--verbose", action="count", default=0)

    # revoke / delete
    add("--cert-path")
    add("--key-path", help="revoke with the certificate's own key")
    add("--reason", choices=sorted(REVOCATION_REASONS), default="unspecified")
    add("--delete-after-revoke", action="store_true", default=None)
    add("--no-delete-after-revoke", dest="delete_after_revoke", action="store_false")
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    for name in ("webroot_map",):
        if not hasattr(args, name):
            setattr(args, name, {})
    return args
