"""dns-01 validation: RFC 8555 §8.4, CA/B Forum BR 3.2.2.4.7.

The applicant proves control by publishing base64url(SHA-256(key
authorization)) in a TXT record at ``_acme-challenge.<name>``; any one of the
TXT values may match, since several orders may be in flight at once.

The TXT lookup and the digest check are shared with dns-account-01
(``dns_account01.py``, same value under another name) and the lookup with
dns-persist-01 (``dns_persist01.py``).
"""

from __future__ import annotations

import asyncio

from certmint.ca.va.http01 import unauthorized_problem
from certmint.ca.va.model import VAConfig, ValidationRecord, ValidationResult
from certmint.ca.va.resolver import DnsLookupError, VAResolver, dns_problem
from certmint.protocol.challenges import dns01_record_name, dns01_txt_value
from certmint.protocol.problems import Problem

_ECHO_LIMIT = 100


def dns_validation_record(host: str) -> ValidationRecord:
    """What a DNS-based validation looked at: the name, no connection."""
    return ValidationRecord(
        url=None, hostname=host, port=0, addresses_resolved=(), address_used=None
    )


def echo_txt(value: str) -> str:
    """A TXT value as a problem detail may show it: bounded and printable."""
    return "".join(c if c.isprintable() else "?" for c in value[:_ECHO_LIMIT])


async def lookup_txt_values(
    resolver: VAResolver, config: VAConfig, record_name: str
) -> tuple[str, ...] | Problem:
    """The TXT values at ``record_name`` (CNAMEs followed), or the ``dns``
    problem that stopped the lookup: failure is data, never an exception."""
    try:
        async with asyncio.timeout(config.total_timeout):
            return await resolver.lookup_txt(record_name)
    except DnsLookupError as exc:
        return exc.problem
    except TimeoutError:
        return dns_problem(f"DNS problem: query timed out looking up TXT for {record_name}")


async def check_txt_digest(
    resolver: VAResolver, config: VAConfig, record_name: str, expected: str
) -> Problem | None:
    """None when one TXT value at ``record_name`` is ``expected``; else why not."""
    values = await lookup_txt_values(resolver, config, record_name)
    if isinstance(values, Problem):
        return values
    if expected in values:
        return None
    if not values:
        return unauthorized_problem(f"No TXT record found at {record_name}")
    more = f" (and {len(values) - 1} more)" if len(values) > 1 else ""
    return unauthorized_problem(
        f'Incorrect TXT record "{echo_txt(values[0])}"{more} found at {record_name}'
    )


class Dns01Validator:
    def __init__(self, config: VAConfig, resolver: VAResolver) -> None:
        self._config = config
        self._resolver = resolver

    async def validate(self, host: str, key_authorization: str) -> ValidationResult:
        """``host`` is the checked base name (a wildcard's ``*.`` removed)."""
        problem = await check_txt_digest(
            self._resolver,
            self._config,
            dns01_record_name(host),
            dns01_txt_value(key_authorization),
        )
        return ValidationResult(
            valid=problem is None, problem=problem, records=(dns_validation_record(host),)
        )
