"""Challenge arithmetic shared by the VA and the agent (RFC 8555 §8, RFC 8737,
draft-ietf-acme-dns-account-label, draft-ietf-acme-dns-persist).

Everything here is a pure function of a token, an account key thumbprint, an
account URL or a TXT value; the network side lives in the VA and in the
agent's plugins.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from certmint.protocol.b64 import b64url_encode
from certmint.protocol.identifiers import IdentifierError, normalize_dns_identifier
from certmint.protocol.jwk import PrivateKey

if TYPE_CHECKING:
    # Only the protocol type: this package stays free of runtime imports.
    from certmint.runtime import Entropy

# RFC 8555 §8.1: tokens carry at least 128 bits of entropy; we use 256.
TOKEN_BYTES = 32
_MIN_TOKEN_CHARS = 22  # 128 bits in base64url
_MAX_TOKEN_CHARS = 256
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")

HTTP01_PATH_PREFIX = "/.well-known/acme-challenge/"  # RFC 8555 §8.3
DNS01_LABEL = "_acme-challenge"  # RFC 8555 §8.4
# draft-ietf-acme-dns-persist-00 §2: the DNS TXT Record Persistent DCV Domain Label.
DNS_PERSIST01_LABEL = "_validation-persist"

ACME_TLS_ALPN_PROTOCOL = "acme-tls/1"  # RFC 8737 §6.2
ID_PE_ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 §6.1

# Without a clock, the challenge certificate is valid "forever" (RFC 5280
# §4.1.2.5: 99991231235959Z means no well-defined expiration). RFC 8737
# validators do not check its validity period.
_FOREVER_NOT_BEFORE = datetime(2000, 1, 1, tzinfo=UTC)
_FOREVER_NOT_AFTER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def new_token(entropy: Entropy) -> str:
    """A fresh challenge token: base64url of ``TOKEN_BYTES`` random octets."""
    return b64url_encode(entropy.token_bytes(TOKEN_BYTES))


def is_valid_token(token: str) -> bool:
    """RFC 8555 §8.3/§8.4: base64url alphabet only, ≥128 bits. A token ends up
    in a URL path and a file name, so nothing else may pass."""
    return (
        isinstance(token, str)
        and _MIN_TOKEN_CHARS <= len(token) <= _MAX_TOKEN_CHARS
        and _TOKEN_ALPHABET.fullmatch(token) is not None
    )


def key_authorization(token: str, thumbprint: str) -> str:
    """RFC 8555 §8.1: token || '.' || base64url(JWK thumbprint)."""
    return f"{token}.{thumbprint}"


def http01_path(token: str) -> str:
    """RFC 8555 §8.3: the path the VA fetches over HTTP on port 80."""
    return HTTP01_PATH_PREFIX + token


def dns01_record_name(domain: str) -> str:
    """RFC 8555 §8.4: ``_acme-challenge.<domain>``; a wildcard's base name is used."""
    base = domain.removeprefix("*.").rstrip(".")
    return f"{DNS01_LABEL}.{base}"


def dns01_txt_value(key_authorization: str) -> str:
    """RFC 8555 §8.4: base64url(SHA-256(key authorization)). dns-account-01
    publishes the same value (draft-ietf-acme-dns-account-label-02 §3)."""
    return b64url_encode(hashlib.sha256(key_authorization.encode("utf-8")).digest())


def dns_account_label(account_url: str) -> str:
    """draft-ietf-acme-dns-account-label-02 §3: the account's label,
    base32(SHA-256(<ACCOUNT_URL>)[0:10]) in lower case. Ten octets are 80
    bits, exactly sixteen base32 characters, so there is never padding."""
    digest = hashlib.sha256(account_url.encode("utf-8")).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def dns_account01_record_name(domain: str, account_url: str) -> str:
    """draft-ietf-acme-dns-account-label-02 §3:
    ``_<label>._acme-challenge.<domain>``; a wildcard's base name is used."""
    return f"_{dns_account_label(account_url)}.{dns01_record_name(domain)}"


def dns_persist01_record_name(domain: str) -> str:
    """draft-ietf-acme-dns-persist-00 §4: ``_validation-persist.<domain>``; a
    wildcard's record lives at its base name (§5)."""
    base = domain.removeprefix("*.").rstrip(".")
    return f"{DNS_PERSIST01_LABEL}.{base}"


def tls_alpn01_extension_value(key_authorization: str) -> bytes:
    """RFC 8737 §3: the acmeIdentifier extension's value, the DER encoding of
    ``Authorization ::= OCTET STRING (SIZE (32))`` holding SHA-256(key authz)."""
    digest = hashlib.sha256(key_authorization.encode("utf-8")).digest()
    return b"\x04\x20" + digest


def _san_for(identifier: str) -> x509.GeneralName:
    # RFC 8738 §6: an IP identifier is proven with an iPAddress SAN.
    try:
        return x509.IPAddress(ipaddress.ip_address(identifier))
    except ValueError:
        return x509.DNSName(identifier)


def tls_alpn01_certificate(
    domain: str,
    key_authorization: str,
    key: PrivateKey | None = None,
    *,
    now: datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """The self-signed tls-alpn-01 certificate of RFC 8737 §3.

    Exactly one subjectAltName (the identifier) and the critical
    acmeIdentifier extension. Pass ``now`` for a short validity window;
    without it the certificate does not expire (no clock needed here).
    """
    private_key: PrivateKey = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    public_key = private_key.public_key()
    if now is None:
        not_before, not_after = _FOREVER_NOT_BEFORE, _FOREVER_NOT_AFTER
    else:
        not_before, not_after = now - timedelta(days=1), now + timedelta(days=7)
    # Deterministic positive serial: no randomness source is needed for a
    # certificate no one else trusts.
    seed = hashlib.sha256(f"{domain}\x00{key_authorization}".encode()).digest()
    serial = int.from_bytes(seed[:16], "big") >> 1 | 1
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certmint tls-alpn-01")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san_for(domain)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(
                ID_PE_ACME_IDENTIFIER, tls_alpn01_extension_value(key_authorization)
            ),
            critical=True,
        )
    )
    algorithm = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(private_key, algorithm), private_key


# -- dns-persist-01 records (draft-ietf-acme-dns-persist-00 §4) ---------------
#
# The TXT RDATA is an RFC 8659 §4.2 issue-value:
#   issue-value = *WSP [issuer-domain-name *WSP] [";" *WSP [parameters *WSP]]
#   parameters  = (parameter *WSP ";" *WSP parameters) / parameter
#   parameter   = tag *WSP "=" *WSP value
#   tag         = (ALPHA / DIGIT) *( *("-") (ALPHA / DIGIT))
#   value       = *(%x21-3A / %x3C-7E)
# WSP is space or tab (RFC 5234). So ";" separates parameters, whitespace may
# surround separators and "=", a value holds no whitespace and no ";", and a
# trailing ";" after a parameter is not in the grammar.

_WSP = " \t"
_LDH = r"[A-Za-z0-9](?:-*[A-Za-z0-9])*"
_ISSUER_DOMAIN_NAME = re.compile(rf"{_LDH}(?:\.{_LDH})*")
_PARAMETER_TAG = re.compile(_LDH)
_PARAMETER_VALUE = re.compile(r"[\x21-\x3a\x3c-\x7e]*")
_UNIX_SECONDS = re.compile(r"[0-9]{1,18}")
_MAX_ISSUER_DOMAIN_OCTETS = 253  # draft-ietf-acme-dns-persist-00 §3.1
# §3.1: a server sends at most ten issuer domain names.
MAX_ISSUER_DOMAIN_NAMES = 10

PERSIST_ACCOUNTURI = "accounturi"
PERSIST_POLICY = "policy"
PERSIST_UNTIL = "persistuntil"  # "persistUntil"; tags match case-insensitively
PERSIST_POLICY_WILDCARD = "wildcard"


class PersistRecordError(ValueError):
    """A TXT value that is not a well-formed dns-persist-01 record.

    ``issuer_domain_name`` is the record's (normalised) issuer when that much
    parsed, so a CA can tell "a broken record naming us" from noise.
    """

    def __init__(self, reason: str, issuer_domain_name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.issuer_domain_name = issuer_domain_name


@dataclass(frozen=True)
class PersistRecord:
    """A parsed ``_validation-persist`` TXT value.

    ``issuer_domain_name`` is normalised (lower-case A-labels, no trailing
    dot: §3.1, §9.1.1); ``account_uri`` and ``policy`` are as written (an
    accounturi is compared octet for octet, RFC 8657 §3); ``persist_until``
    is POSIX seconds, or None when the record has no persistUntil.
    """

    issuer_domain_name: str
    account_uri: str
    policy: str | None = None
    persist_until: int | None = None

    @property
    def allows_wildcard(self) -> bool:
        """§4 item 4: the policy value is compared case-insensitively; any
        value but "wildcard" counts as no policy at all."""
        return self.policy is not None and self.policy.lower() == PERSIST_POLICY_WILDCARD

    def persists_at(self, now: datetime) -> bool:
        """§4 item 5: the record is not valid for new validation attempts
        *after* persistUntil; at that very second it still is."""
        return self.persist_until is None or now.timestamp() <= self.persist_until


def normalize_issuer_domain_name(name: str) -> str:
    """§9.1.1's normalisation: case-folded, IDNA A-labels, no trailing dot.

    Raises ``PersistRecordError`` for anything that is not then an RFC 8659
    §4.2 issuer-domain-name of at most 253 octets.
    """
    candidate = name.removesuffix(".")
    if not candidate.isascii():
        try:
            candidate = normalize_dns_identifier(candidate)
        except IdentifierError:
            raise PersistRecordError(
                f'issuer-domain-name "{_shown(name)}" is not a domain name'
            ) from None
    candidate = candidate.lower()
    if not _ISSUER_DOMAIN_NAME.fullmatch(candidate):
        raise PersistRecordError(f'issuer-domain-name "{_shown(name)}" is not a domain name')
    if len(candidate) > _MAX_ISSUER_DOMAIN_OCTETS:
        raise PersistRecordError(
            f"issuer-domain-name is longer than {_MAX_ISSUER_DOMAIN_OCTETS} octets"
        )
    return candidate


def dns_persist01_issuer_domain_names(caa_identities: tuple[str, ...]) -> tuple[str, ...]:
    """The ``issuer-domain-names`` a CA offers (§3.1), from its CAA
    identities (the §2 note allows drawing them from ``caaIdentities``):
    normalised, without repeats or unusable entries, at most ten."""
    names: dict[str, None] = {}
    for identity in caa_identities:
        try:
            names[normalize_issuer_domain_name(identity)] = None
        except PersistRecordError:
            continue
    return tuple(names)[:MAX_ISSUER_DOMAIN_NAMES]


def parse_persist_record(value: str) -> PersistRecord:
    """Parse one TXT value as a dns-persist-01 record (§4), or raise
    ``PersistRecordError`` saying what is wrong with it.

    Unknown parameters are ignored (§4 item 1) but must still follow the
    grammar; tags match case-insensitively (§4 item 4 for policy, RFC 8659
    §4.1 for tags in general). Duplicate, missing or ill-formed defined
    parameters make the record malformed (§9.2.1).
    """
    issuer_part, semicolon, rest = value.partition(";")
    issuer_text = issuer_part.strip(_WSP)
    if not issuer_text:
        raise PersistRecordError("the record names no issuer-domain-name")
    issuer = normalize_issuer_domain_name(issuer_text)
    parameters: dict[str, str] = {}
    rest = rest.strip(_WSP)
    if semicolon and rest:
        for item in rest.split(";"):
            tag_text, equals, raw_value = item.partition("=")
            tag, param_value = tag_text.strip(_WSP), raw_value.strip(_WSP)
            if not tag and not equals:
                raise PersistRecordError(
                    'an empty parameter (a stray or trailing ";")', issuer_domain_name=issuer
                )
            if not equals or not _PARAMETER_TAG.fullmatch(tag):
                raise PersistRecordError(
                    f'parameter "{_shown(item.strip(_WSP))}" is not tag=value',
                    issuer_domain_name=issuer,
                )
            if not _PARAMETER_VALUE.fullmatch(param_value):
                raise PersistRecordError(
                    f'the value of parameter "{_shown(tag)}" contains whitespace, ";" '
                    "or a character outside printable ASCII",
                    issuer_domain_name=issuer,
                )
            key = tag.lower()
            if key not in (PERSIST_ACCOUNTURI, PERSIST_POLICY, PERSIST_UNTIL):
                continue  # §4 item 1: unrecognised tags are ignored
            if key in parameters:
                raise PersistRecordError(
                    f'parameter "{_shown(tag)}" appears twice', issuer_domain_name=issuer
                )
            parameters[key] = param_value
    account_uri = parameters.get(PERSIST_ACCOUNTURI)
    if not account_uri:
        # §4 item 3: the accounturi parameter is mandatory.
        raise PersistRecordError("the record has no accounturi", issuer_domain_name=issuer)
    persist_until: int | None = None
    if PERSIST_UNTIL in parameters:
        text = parameters[PERSIST_UNTIL]
        # §4 item 5: a base-10 integer of POSIX seconds. Eighteen digits
        # reach far past any date a clock will show.
        if not _UNIX_SECONDS.fullmatch(text):
            raise PersistRecordError(
                f'persistUntil "{_shown(text)}" is not a base-10 UNIX timestamp',
                issuer_domain_name=issuer,
            )
        persist_until = int(text)
    return PersistRecord(
        issuer_domain_name=issuer,
        account_uri=account_uri,
        policy=parameters.get(PERSIST_POLICY),
        persist_until=persist_until,
    )


def dns_persist01_txt_value(
    issuer_domain_name: str,
    account_uri: str,
    *,
    wildcard: bool = False,
    persist_until: int | None = None,
) -> str:
    """The TXT value an agent publishes (§4; examples in §10)."""
    parts = [normalize_issuer_domain_name(issuer_domain_name), f"accounturi={account_uri}"]
    if wildcard:
        parts.append(f"policy={PERSIST_POLICY_WILDCARD}")
    if persist_until is not None:
        parts.append(f"persistUntil={persist_until}")
    return "; ".join(parts)


def _shown(text: str, limit: int = 64) -> str:
    # Record text is chosen by whoever controls the zone: bound and sanitise
    # it before it reaches a problem detail.
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return shown + ("..." if len(text) > limit else "")
