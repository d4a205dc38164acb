"""Values that cross the VA's door (DESIGN.md §2: frozen dataclasses only).

The RA hands the VA a ``ValidationRequest`` and gets back a ``ValidationResult``.
Failure is data: a result with ``valid=False`` and a ``Problem``, never an
exception, so the RA can store it on the challenge as RFC 8555 §7.1.5 asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from certmint.protocol.problems import Problem


@dataclass(frozen=True)
class VAConfig:
    """How the VA reaches the network.

    ``resolvers`` are ``"ip:port"``, ``"[v6]:port"`` or bare ``"ip"`` (port 53);
    empty means the system's /etc/resolv.conf. The ports exist so that tests and
    development setups can point the VA at unprivileged listeners; production
    keeps the RFC 8555 §8.3 / RFC 8737 §3 values 80 and 443.
    """

    resolvers: tuple[str, ...] = ()
    http01_port: int = 80
    https_port: int = 443
    tlsalpn01_port: int = 443
    # Loopback/private/reserved targets are refused unless True (tests, dev).
    allow_private_addresses: bool = False
    dns_timeout: float = 5.0
    connect_timeout: float = 5.0
    total_timeout: float = 15.0
    max_body_bytes: int = 8192
    max_redirects: int = 10
    user_agent: str = "certmint-va/0.1"
    # The issuer domain names CAA "issue"/"issuewild" properties must name
    # for this CA to issue (RFC 8659 §4.2; BR 3.2.2.8): CAConfig.caa_identities.
    caa_identities: tuple[str, ...] = ("certmint.invalid",)
    # BR 3.2.2.8 requires the check; off only for development setups.
    check_caa: bool = True


@dataclass(frozen=True)
class ValidationRequest:
    challenge_type: str  # "http-01", "dns-01", "tls-alpn-01"
    identifier_type: str  # "dns" or "ip" (RFC 8738)
    identifier_value: str
    token: str
    key_authorization: str
    # RFC 8657 §3 "accounturi": the account's URL, matched exactly; None only
    # for callers without an account (a CAA record naming one then refuses).
    account_uri: str | None = None
    # The authorization is for "*.<identifier_value>" (CAA "issuewild").
    wildcard: bool = False


@dataclass(frozen=True)
class ValidationRecord:
    """What the VA looked at for one hop; RFC 8555 leaves the shape open, so
    the JSON mirrors Boulder's field names for tools that already read them."""

    url: str | None
    hostname: str
    port: int  # 0 when no connection is made (dns-01)
    addresses_resolved: tuple[str, ...]
    address_used: str | None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "hostname": self.hostname,
            "addressesResolved": list(self.addresses_resolved),
        }
        if self.port:  # dns-01 has no port (0)
            doc["port"] = str(self.port)
        if self.url is not None:
            doc["url"] = self.url
        if self.address_used is not None:
            doc["addressUsed"] = self.address_used
        return doc


@dataclass(frozen=True)
class ValidationResult:
    valid: bool
    problem: Problem | None
    records: tuple[ValidationRecord, ...] = ()
    # When CAA was found to permit issuance (None: not checked, e.g. an IP
    # identifier or a failed challenge); the RA re-checks at finalize when old.
    caa_checked_at: datetime | None = None
