"""CAA: may this CA issue for a name? RFC 8659, with RFC 8657's parameters.

BR 3.2.2.8 makes the check mandatory. The steps:

1. Find the relevant RRset (RFC 8659 §3): the CAA RRset of the FQDN, else
   of its parent, and so on up to the TLD; the first non-empty one counts.
   Like Boulder, every level is queried concurrently and the answers are read
   from the FQDN upwards. A lookup that fails before a non-empty RRset is
   found may hide records, so it refuses issuance with a ``dns`` problem:
   "a CA MUST NOT issue" when it cannot obtain the RRset (§3). Boulder
   returns ``dns`` here too (va/caa.go ``checkCAA``: ``probs.DNS``).
2. Evaluate it (``evaluate_caa``, pure): a critical property with an unknown
   tag refuses (§4.1); ``issuewild`` governs wildcard names when present,
   else ``issue`` (§4.3); with no relevant property issuance is allowed; else
   one property must name one of our identities, with RFC 8657 ``accounturi``
   equal to the account URL and ``validationmethods`` listing the challenge
   type, when those parameters are present.

``iodef`` is recognised (so a critical iodef does not refuse) and otherwise
ignored: like Let's Encrypt we send no incident reports.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

from certmint.ca.va.resolver import CAARecord, DnsLookupError, VAResolver
from certmint.protocol.problems import Problem, ProblemType

ISSUE = "issue"
ISSUEWILD = "issuewild"
IODEF = "iodef"
_KNOWN_TAGS = frozenset({ISSUE, ISSUEWILD, IODEF})
# RFC 8659 §4.1: the Issuer Critical Flag is bit 0, i.e. the value 128. Many
# zone operators set the value 1 believing it to be that bit; Boulder treats
# both as critical, and so do we (refusing is the safe reading).
_CRITICAL_FLAGS = 128 | 1

# RFC 8659 §4.2 ABNF. WSP is space or tab (RFC 5234).
_WSP = " \t"
_LABEL = r"[A-Za-z0-9](?:-*[A-Za-z0-9])*"
_ISSUER_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PARAM_TAG = re.compile(_LABEL)
_PARAM_VALUE = re.compile(r"[\x21-\x3a\x3c-\x7e]*")
# RFC 8657 §4: validationmethods = label *("," label), label = 1*(ALPHA/DIGIT/"-").
_METHOD = re.compile(r"[A-Za-z0-9-]+")


@dataclass(frozen=True)
class IssuerValue:
    """A parsed ``issue``/``issuewild`` value; ``domain`` is "" for ";"."""

    domain: str
    parameters: dict[str, str]


def parse_issuer_value(value: str) -> IssuerValue | None:
    """RFC 8659 §4.2 ``issue-value``; None when it does not follow the
    grammar (such a property then names no CA, so it cannot permit us)."""
    domain_part, semicolon, rest = value.partition(";")
    domain = domain_part.strip(_WSP)
    if domain and not _ISSUER_DOMAIN.fullmatch(domain):
        return None
    parameters: dict[str, str] = {}
    rest = rest.strip(_WSP)
    if semicolon and rest:
        for item in rest.split(";"):
            tag, equals, param_value = item.partition("=")
            tag, param_value = tag.strip(_WSP), param_value.strip(_WSP)
            if not equals or not _PARAM_TAG.fullmatch(tag):
                return None
            if not _PARAM_VALUE.fullmatch(param_value):
                return None
            key = tag.lower()
            if key in parameters:
                return None  # ambiguous: which accounturi would bind?
            parameters[key] = param_value
    return IssuerValue(domain=domain, parameters=parameters)


@dataclass(frozen=True)
class CAAQuestion:
    """What issuance is being asked for, as CAA evaluation needs it."""

    identities: tuple[str, ...]  # our issuer domain names
    challenge_type: str
    account_uri: str | None
    wildcard: bool


@dataclass(frozen=True)
class CAAVerdict:
    permitted: bool
    reason: str  # for the problem detail and the log


def _shown(text: str, limit: int = 160) -> str:
    """DNS-supplied text, bounded and printable, for a problem detail."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return clean + ("..." if len(text) > limit else "")


@dataclass(frozen=True)
class _Mismatch:
    """Why one issue/issuewild property does not permit this issuance."""

    names_us: bool  # it names one of our identities (a parameter failed)
    why: str


def _mismatch(prop: CAARecord, question: CAAQuestion) -> _Mismatch | None:
    """None when ``prop`` permits the issuance asked for."""
    shown = f'"{prop.tag} {_shown(prop.value)}"'
    parsed = parse_issuer_value(prop.value)
    if parsed is None:
        return _Mismatch(False, f"{shown} does not follow the RFC 8659 §4.2 grammar")
    if not parsed.domain:
        return _Mismatch(False, f"{shown} forbids issuance by any CA")
    if parsed.domain.lower() not in {i.lower() for i in question.identities}:
        return _Mismatch(False, f"{shown} names another CA")
    account_uri = parsed.parameters.get("accounturi")
    # RFC 8657 §3: the URI must equal the account's, octet for octet.
    if account_uri is not None and account_uri != question.account_uri:
        yours = question.account_uri or "no account"
        return _Mismatch(True, f"{shown} allows only that accounturi, not {_shown(yours)}")
    methods = parsed.parameters.get("validationmethods")
    if methods is not None:
        listed = methods.split(",")
        # RFC 8657 §4 grammar; like Boulder, a malformed list matches nothing.
        if not all(_METHOD.fullmatch(m) for m in listed):
            return _Mismatch(True, f"{shown} has a malformed validationmethods list")
        if question.challenge_type not in listed:
            return _Mismatch(
                True, f"{shown} does not allow validation method {question.challenge_type}"
            )
    return None


def evaluate_caa(rrset: Sequence[CAARecord], question: CAAQuestion) -> CAAVerdict:
    """Whether the relevant RRset permits issuance (RFC 8659 §4, RFC 8657)."""
    if not rrset:
        return CAAVerdict(True, "no CAA records")
    tags = [r.tag.lower() for r in rrset]  # tags match case-insensitively (§4.1)
    for record, tag in zip(rrset, tags, strict=True):
        if tag not in _KNOWN_TAGS and record.flags & _CRITICAL_FLAGS:
            return CAAVerdict(False, f"a critical property with unknown tag {record.tag[:15]!r}")
    issue = [r for r, t in zip(rrset, tags, strict=True) if t == ISSUE]
    issuewild = [r for r, t in zip(rrset, tags, strict=True) if t == ISSUEWILD]
    # §4.3: issuewild is ignored for non-wildcard names, and when present
    # for a wildcard name, the issue properties are.
    use_issuewild = question.wildcard and bool(issuewild)
    relevant = issuewild if use_issuewild else issue
    kind = ISSUEWILD if use_issuewild else ISSUE
    if not relevant:
        return CAAVerdict(True, "no issue or issuewild property applies")
    mismatches = []
    for record in relevant:
        mismatch = _mismatch(record, question)
        if mismatch is None:
            return CAAVerdict(True, f"an {kind} property names this CA")
        mismatches.append(mismatch)
    # Say what to change: a property that names us but whose parameters do
    # not fit is the one its owner meant for us; else the first one found.
    chosen = next((m for m in mismatches if m.names_us), mismatches[0])
    names = ", ".join(question.identities)
    more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
    return CAAVerdict(
        False,
        f"no {kind} property permits {names} to issue: {chosen.why}{more}",
    )


def tree_climb(host: str) -> list[str]:
    """``a.b.example.com`` → itself, ``b.example.com``, ``example.com``, ``com``."""
    labels = host.rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def caa_problem(host: str, found_at: str, reason: str) -> Problem:
    # Boulder's wording, which users search for; the reason says what to fix.
    return Problem(
        type=ProblemType.CAA,
        detail=(
            f"While processing CAA for {host}: CAA record for {found_at} "
            f"prevents issuance ({reason})"
        ),
        status=403,
    )


class CAAChecker:
    def __init__(self, resolver: VAResolver, identities: tuple[str, ...]) -> None:
        self._resolver = resolver
        self._identities = identities

    async def check(
        self, host: str, *, challenge_type: str, account_uri: str | None, wildcard: bool
    ) -> Problem | None:
        """None when CAA permits issuance for ``host``; otherwise a ``caa``
        problem (refused) or a ``dns`` problem (the lookup failed)."""
        names = tree_climb(host)
        lookups = await asyncio.gather(
            *(self._resolver.lookup_caa(name) for name in names), return_exceptions=True
        )
        for name, outcome in zip(names, lookups, strict=True):
            if isinstance(outcome, DnsLookupError):
                return Problem(
                    type=ProblemType.DNS,
                    detail=f"While processing CAA for {host}: {outcome.problem.detail}",
                    status=400,
                )
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome:
                question = CAAQuestion(self._identities, challenge_type, account_uri, wildcard)
                verdict = evaluate_caa(outcome, question)
                return None if verdict.permitted else caa_problem(host, name, verdict.reason)
        return None
