"""dns-persist-01 validation: draft-ietf-acme-dns-persist-00, CA/B Forum BR
3.2.2.4.22.

The applicant keeps a standing TXT record at ``_validation-persist.<name>``
whose value is an RFC 8659 issue-value naming one of this CA's issuer domain
names and the account (``accounturi``), optionally with ``policy=wildcard``
and ``persistUntil`` (§4). No token: the record does not change per
challenge, which is the point (§3.1).

The CA verification process of §4.1.2: fetch every TXT value (CNAMEs are
followed, as for any lookup), ignore records for other issuers, and accept
when one record for us names this account, has not passed its persistUntil,
and carries policy=wildcard if the name is a wildcard (§5). Only the record
at the name itself is consulted: the subdomain reuse of §6 (a parent's
policy=wildcard record covering its subdomains) is a MAY we do not offer.

Failures (§9.2.1): no record at all, or only records that do not authorise
us, give ``unauthorized`` naming why the closest record failed; when the
only records naming us are ill-formed, ``malformed`` says what is wrong with
them; a failed lookup is ``dns``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from certmint.ca.va.dns01 import dns_validation_record, echo_txt, lookup_txt_values
from certmint.ca.va.http01 import unauthorized_problem
from certmint.ca.va.model import VAConfig, ValidationResult
from certmint.ca.va.resolver import VAResolver
from certmint.protocol.challenges import (
    PersistRecordError,
    dns_persist01_issuer_domain_names,
    dns_persist01_record_name,
    parse_persist_record,
)
from certmint.protocol.problems import Problem, ProblemType
from certmint.runtime import Clock

# How close a well-formed record for this CA came to authorising: the later
# the check it failed, the closer (checked in this order).
_ACCOUNT_MISMATCH = 1
_PERSIST_UNTIL_PASSED = 2
_POLICY_WILDCARD_MISSING = 3


@dataclass(frozen=True)
class PersistQuestion:
    """What a dns-persist-01 validation asks of the records found."""

    record_name: str
    issuers: tuple[str, ...]  # this CA's issuer domain names, normalised
    account_uri: str
    wildcard: bool
    now: datetime


def evaluate_persist_records(values: tuple[str, ...], question: PersistQuestion) -> Problem | None:
    """None when one TXT value authorises the request; else the problem.

    Pure: the whole of §4.1.2 steps 2-4 on values already fetched.
    """
    name = question.record_name
    if not values:
        return unauthorized_problem(f"No TXT record found at {name}")
    failures: list[tuple[int, str]] = []
    ours_malformed: list[str] = []
    unreadable: list[str] = []
    other_issuers: list[str] = []
    for value in values:
        try:
            record = parse_persist_record(value)
        except PersistRecordError as exc:
            # Ill-formed records are skipped (§4.1.2 keeps only well-formed
            # records naming us); they are only reported if nothing better is.
            if exc.issuer_domain_name is None:
                unreadable.append(exc.reason)
            elif exc.issuer_domain_name in question.issuers:
                ours_malformed.append(f"{exc.issuer_domain_name}: {exc.reason}")
            else:
                other_issuers.append(exc.issuer_domain_name)
            continue
        issuer = record.issuer_domain_name
        if issuer not in question.issuers:
            other_issuers.append(issuer)  # §4.1.2 step 2: another CA's record
            continue
        if record.account_uri != question.account_uri:
            # §4 item 3 with RFC 8657 §3: the URI must equal the account's.
            failures.append(
                (
                    _ACCOUNT_MISMATCH,
                    f'the record for {issuer} has accounturi "{echo_txt(record.account_uri)}", '
                    f"not this account's {question.account_uri}",
                )
            )
            continue
        if not record.persists_at(question.now):
            # §4 item 5: no new validation after persistUntil.
            failures.append(
                (
                    _PERSIST_UNTIL_PASSED,
                    f"the record for {issuer} has persistUntil={record.persist_until} "
                    f"({_posix_text(record.persist_until)}), which has passed",
                )
            )
            continue
        if question.wildcard and not record.allows_wildcard:
            # §5: a wildcard needs policy=wildcard on the base name's record.
            written = "no policy" if record.policy is None else f'policy="{record.policy}"'
            failures.append(
                (
                    _POLICY_WILDCARD_MISSING,
                    f"the record for {issuer} has {written}, but a wildcard name "
                    "needs policy=wildcard",
                )
            )
            continue
        return None
    skipped = len(ours_malformed) + len(unreadable)
    skipped_note = f" ({_records(skipped)} malformed, skipped)" if skipped else ""
    if failures:
        _, why = max(failures, key=lambda failure: failure[0])
        others = len(failures) - 1
        also = f" (and {_records(others)} for this CA failed too)" if others else ""
        return unauthorized_problem(
            f"TXT record at {name} does not authorize: {why}{also}{skipped_note}"
        )
    if ours_malformed:
        # §9.2.1: invalid syntax SHOULD be reported as malformed.
        more = f" (and {len(ours_malformed) - 1} more)" if len(ours_malformed) > 1 else ""
        return Problem(
            type=ProblemType.MALFORMED,
            detail=f"Malformed TXT record at {name} for {ours_malformed[0]}{more}",
            status=400,
        )
    ours = ", ".join(question.issuers)
    if other_issuers:
        theirs = ", ".join(dict.fromkeys(other_issuers))
        return unauthorized_problem(
            f"No TXT record at {name} names this CA's issuer domain name ({ours}); "
            f"found records for {theirs}{skipped_note}"
        )
    return unauthorized_problem(
        f"No well-formed TXT record found at {name} ({_records(skipped)} skipped; "
        f"the first: {unreadable[0]})"
    )


def _records(count: int) -> str:
    return f"{count} record" if count == 1 else f"{count} records"


def _posix_text(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "far in the future"


class DnsPersist01Validator:
    def __init__(self, config: VAConfig, resolver: VAResolver, clock: Clock) -> None:
        self._config = config
        self._resolver = resolver
        self._clock = clock
        # §3.1: the names a record may carry; the challenge object lists the
        # same ones (certmint.ca.wfe.render), both from the CAA identities.
        self._issuers = dns_persist01_issuer_domain_names(config.caa_identities)

    @property
    def issuer_domain_names(self) -> tuple[str, ...]:
        return self._issuers

    async def validate(self, host: str, *, account_uri: str, wildcard: bool) -> ValidationResult:
        """``host`` is the checked base name (a wildcard's ``*.`` removed);
        ``wildcard`` says the authorization is for ``*.<host>``."""
        record_name = dns_persist01_record_name(host)
        values = await lookup_txt_values(self._resolver, self._config, record_name)
        if isinstance(values, Problem):
            problem: Problem | None = values
        else:
            question = PersistQuestion(
                record_name=record_name,
                issuers=self._issuers,
                account_uri=account_uri,
                wildcard=wildcard,
                # §4 item 5: persistUntil is judged at validation time.
                now=self._clock.now(),
            )
            problem = evaluate_persist_records(values, question)
        return ValidationResult(
            valid=problem is None, problem=problem, records=(dns_validation_record(host),)
        )
