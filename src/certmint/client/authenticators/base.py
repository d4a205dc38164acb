"""The authenticator contract (DESIGN.md §4): prove control of identifiers.

An authenticator says which challenge types it can answer, makes the answers
visible (``perform``) and removes them again (``cleanup``, which the flow
always runs, even after a failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChallengeTask:
    """One challenge to answer, with everything derived from it."""

    domain: str  # the identifier value (a wildcard's base name for dns-01)
    challenge_type: str  # "http-01", "dns-01", "tls-alpn-01"
    token: str
    key_authorization: str
    # http-01: the URL path; dns-01: the TXT record name;
    # tls-alpn-01: the SNI name.
    validation_name: str
    # http-01: the body to serve; dns-01: the TXT value;
    # tls-alpn-01: the key authorization (the certificate is built from it).
    validation_value: str
    wildcard: bool = False


class Authenticator(Protocol):
    name: str

    @property
    def challenge_types(self) -> tuple[str, ...]:
        """Types this authenticator can answer, most preferred first."""
        ...

    def perform(self, tasks: Sequence[ChallengeTask]) -> None:
        """Make every answer visible; raise ClientError if it cannot."""
        ...

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        """Remove the answers; never raise for an answer already gone."""
        ...
