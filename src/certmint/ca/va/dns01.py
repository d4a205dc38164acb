"""dns-01 validation: RFC 8555 §8.4, CA/B Forum BR 3.2.2.4.7.

The applicant proves control by publishing base64url(SHA-256(key
authorization)) in a TXT record at ``_acme-challenge.<name>``; any one of the
TXT values may match, since several orders may be in flight at once.
"""

from __future__ import annotations

import asyncio

from certmint.ca.va.http01 import unauthorized_problem
from certmint.ca.va.model import VAConfig, ValidationRecord, ValidationResult
from certmint.ca.va.resolver import DnsLookupError, VAResolver, dns_problem
from certmint.protocol.challenges import dns01_record_name, dns01_txt_value
from certmint.protocol.problems import Problem

_ECHO_LIMIT = 100


class Dns01Validator:
    def __init__(self, config: VAConfig, resolver: VAResolver) -> None:
        self._config = config
        self._resolver = resolver

    async def validate(self, host: str, key_authorization: str) -> ValidationResult:
        """``host`` is the checked base name (a wildcard's ``*.`` removed)."""
        record_name = dns01_record_name(host)
        record = ValidationRecord(
            url=None, hostname=host, port=0, addresses_resolved=(), address_used=None
        )
        problem = await self._check(record_name, dns01_txt_value(key_authorization))
        return ValidationResult(valid=problem is None, problem=problem, records=(record,))

    async def _check(self, record_name: str, expected: str) -> Problem | None:
        try:
            async with asyncio.timeout(self._config.total_timeout):
                values = await self._resolver.lookup_txt(record_name)
        except DnsLookupError as exc:
            return exc.problem
        except TimeoutError:
            return dns_problem(f"DNS problem: query timed out looking up TXT for {record_name}")
        if expected in values:
            return None
        if not values:
            return unauthorized_problem(f"No TXT record found at {record_name}")
        first = "".join(c if c.isprintable() else "?" for c in values[0][:_ECHO_LIMIT])
        more = f" (and {len(values) - 1} more)" if len(values) > 1 else ""
        return unauthorized_problem(f'Incorrect TXT record "{first}"{more} found at {record_name}')
