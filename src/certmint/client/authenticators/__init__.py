"""The plugin registry (DESIGN.md §4): a plain dict from the name users type
(``-a NAME`` / ``--NAME``) to the class that does the work."""

from __future__ import annotations

from certmint.client.authenticators.dns_rfc2136 import Rfc2136Authenticator
from certmint.client.authenticators.manual import ManualAuthenticator
from certmint.client.authenticators.standalone import StandaloneAuthenticator
from certmint.client.authenticators.webroot import WebrootAuthenticator

AUTHENTICATORS: dict[str, type] = {
    "standalone": StandaloneAuthenticator,
    "webroot": WebrootAuthenticator,
    "manual": ManualAuthenticator,
    "dns-rfc2136": Rfc2136Authenticator,
}

# Installers (deploy(lineage), rollback()) arrive in a later issue.
INSTALLERS: dict[str, type] = {}

__all__ = [
    "AUTHENTICATORS",
    "INSTALLERS",
    "ManualAuthenticator",
    "Rfc2136Authenticator",
    "StandaloneAuthenticator",
    "WebrootAuthenticator",
]
