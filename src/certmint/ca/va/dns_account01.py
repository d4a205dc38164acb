"""dns-account-01 validation: draft-ietf-acme-dns-account-label-02, CA/B
Forum BR 3.2.2.4.21.

dns-01 with the record one label further down: base64url(SHA-256(key
authorization)) at ``_<label>._acme-challenge.<name>``, where the label is
derived from the account URL (``dns_account_label``). Each account gets its
own record name, so several systems (each with its own account) can validate
one name concurrently, or one of them can be delegated by CNAME without
handing over ``_acme-challenge`` for everyone (draft §1). As for dns-01,
CNAMEs are followed and any one of several TXT values may match (draft §3:
"the same as dns-01" apart from the name).
"""

from __future__ import annotations

from certmint.ca.va.dns01 import check_txt_digest, dns_validation_record
from certmint.ca.va.model import VAConfig, ValidationResult
from certmint.ca.va.resolver import VAResolver
from certmint.protocol.challenges import dns01_txt_value, dns_account01_record_name


class DnsAccount01Validator:
    def __init__(self, config: VAConfig, resolver: VAResolver) -> None:
        self._config = config
        self._resolver = resolver

    async def validate(
        self, host: str, key_authorization: str, account_uri: str
    ) -> ValidationResult:
        """``host`` is the checked base name (a wildcard's ``*.`` removed);
        ``account_uri`` is the requesting account's URL, exactly as the CA
        gave it in the Location header (RFC 8555 §7.3)."""
        problem = await check_txt_digest(
            self._resolver,
            self._config,
            dns_account01_record_name(host, account_uri),
            dns01_txt_value(key_authorization),
        )
        return ValidationResult(
            valid=problem is None, problem=problem, records=(dns_validation_record(host),)
        )
