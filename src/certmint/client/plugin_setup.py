"""Turn flags (or a lineage's stored renewal parameters) into an authenticator."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from certmint.client.authenticators.base import Authenticator
from certmint.client.errors import ClientError
from certmint.client.storage import RenewalParams
from certmint.client.ui import Terminal


def _pick(flag: object, stored: object, default: object) -> object:
    return flag if flag is not None else (stored if stored not in (None, "") else default)


def _stored_preferred(params: RenewalParams | None) -> tuple[str, ...]:
    """certbot's ``pref_challs`` from the renewal conf: a list, or one string
    (a hand-edited file may say ``pref_challs = dns-01``)."""
    stored = params.extra.get("pref_challs") if params else None
    items = stored.split(",") if isinstance(stored, str) else (stored or ())
    return tuple(p.strip() for p in items if p.strip())


def build_authenticator(
    name: str,
    args: argparse.Namespace,
    params: RenewalParams | None,
    term: Terminal,
    environ: Mapping[str, str],
) -> Authenticator:
    preferred = tuple(
        p.strip() for p in (args.preferred_challenges or "").split(",") if p.strip()
    ) or _stored_preferred(params)
    if name == "standalone":
        from certmint.client.authenticators.standalone import StandaloneAuthenticator

        port = _pick(args.http_01_port, params.http01_port if params else None, 80)
        address = _pick(args.http_01_address, params.http01_address if params else None, "")
        alpn_port = _pick(
            args.tls_alpn_01_port, params.extra.get("tls_alpn_01_port") if params else None, 443
        )
        if not str(alpn_port).isdigit():  # a hand-edited renewal conf
            raise ClientError(f"tls_alpn_01_port = {alpn_port!r} is not a port number")
        return StandaloneAuthenticator(
            http01_address=str(address),
            http01_port=int(str(port)),
            tlsalpn01_port=int(str(alpn_port)),
            preferred=preferred or ("http-01", "tls-alpn-01"),
        )
    if name == "webroot":
        from certmint.client.authenticators.webroot import WebrootAuthenticator

        webroot_map = dict(params.webroot_map) if params else {}
        webroot_map.update(args.webroot_map or {})
        paths = list(getattr(args, "webroot_paths", []) or [])
        for domain in args.domains or (params.domains if params else ()):
            if domain not in webroot_map:
                if not paths:
                    raise ClientError(f"no webroot for {domain}: pass -w DIR before -d {domain}")
                webroot_map[domain] = paths[-1]
        return WebrootAuthenticator(webroot_map)
    if name == "manual":
        from certmint.client.authenticators.manual import ManualAuthenticator

        return ManualAuthenticator(
            auth_hook=args.manual_auth_hook or (params.manual_auth_hook if params else None),
            cleanup_hook=args.manual_cleanup_hook
            or (params.manual_cleanup_hook if params else None),
            interactive=term.interactive,
            prompt=term.pause,
            preferred=preferred or ("http-01", "dns-01"),
            # Hooks written for certbot expect the user's environment (HOME,
            # API tokens), which the CLI read into the context.
            environment=environ,
        )
    if name == "dns-rfc2136":
        from certmint.client.authenticators.dns_rfc2136 import Rfc2136Authenticator

        credentials = args.dns_rfc2136_credentials or (
            params.dns_rfc2136_credentials if params else None
        )
        if not credentials:
            raise ClientError("dns-rfc2136 needs --dns-rfc2136-credentials FILE")
        seconds = args.dns_rfc2136_propagation_seconds
        return Rfc2136Authenticator(
            Path(credentials), propagation_seconds=seconds if seconds is not None else 0
        )
    raise ClientError(f"unknown authenticator {name!r}")
