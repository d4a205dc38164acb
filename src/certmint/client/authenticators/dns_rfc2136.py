"""The ``dns-rfc2136`` authenticator: publish dns-01 answers by dynamic DNS update.

RFC 8555 §8.4: the CA looks up TXT ``_acme-challenge.<domain>`` and expects
base64url(SHA-256(key authorization)). This sends an RFC 2136 UPDATE, signed
with TSIG (RFC 8945), to the authoritative server named in certbot's
dns-rfc2136 credentials file, so the same file works for both programs::

    dns_rfc2136_server = 192.0.2.1
    dns_rfc2136_port = 53
    dns_rfc2136_name = certbot-key.
    dns_rfc2136_secret = <base64>
    dns_rfc2136_algorithm = HMAC-SHA512
    # optional, like certbot: sign the SOA lookups too
    dns_rfc2136_sign_query = false

dnspython comes with certmint's ``[ca]`` extra; it is imported only when this
authenticator is used, so the agent itself stays light.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certmint.client.authenticators.base import ChallengeTask
from certmint.client.errors import ClientError
from certmint.runtime import Clock, SystemClock

if TYPE_CHECKING:
    import dns.message
    import dns.name

log = logging.getLogger(__name__)

TXT_TTL = 120  # certbot's: short, so a stale answer soon disappears from caches
QUERY_TIMEOUT = 5.0
DEFAULT_VISIBILITY_TIMEOUT = 30.0
_FIRST_PAUSE, _MAX_PAUSE = 0.05, 1.0
# certbot's accepted spellings (and its default, HMAC-MD5).
ALGORITHMS = {
    "HMAC-MD5": "HMAC-MD5.SIG-ALG.REG.INT.",
    "HMAC-SHA1": "hmac-sha1.",
    "HMAC-SHA224": "hmac-sha224.",
    "HMAC-SHA256": "hmac-sha256.",
    "HMAC-SHA384": "hmac-sha384.",
    "HMAC-SHA512": "hmac-sha512.",
}
_PREFIX = "dns_rfc2136_"


@dataclass(frozen=True)
class Rfc2136Credentials:
    server: str
    port: int
    key_name: str
    secret: str
    algorithm: str  # a key of ALGORITHMS
    sign_query: bool = False


def _require_dnspython() -> None:
    try:
        import dns.update  # noqa: F401
    except ImportError as exc:
        raise ClientError(
            "the dns-rfc2136 authenticator needs dnspython: pip install 'dnspython>=2.6'"
        ) from exc


def read_credentials(path: Path) -> Rfc2136Credentials:
    """Parse certbot's credentials file (``key = value`` lines, ``#`` comments)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClientError(f"cannot read the credentials file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ClientError(f"the credentials file {path} is not UTF-8 text") from None
    # certbot warns about a secret others can read; we refuse to use it.
    if mode & (stat.S_IRWXO):
        log.warning("Unsafe permissions on credentials configuration file: %s", path)
        raise ClientError(
            f"unsafe permissions on the credentials file {path}: other users can read it; "
            f"run chmod 600 {path}"
        )
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ClientError(f"{path} line {number}: expected 'name = value'")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().lower()] = value

    def need(name: str) -> str:
        value = values.get(_PREFIX + name, "")
        if not value:
            raise ClientError(f"the credentials file {path} has no {_PREFIX + name}")
        return value

    server = need("server")
    try:
        ipaddress.ip_address(server)
    except ValueError:
        raise ClientError(
            f"{_PREFIX}server in {path} must be an IP address, not {server!r}"
        ) from None
    port_text = values.get(_PREFIX + "port", "53")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ClientError(f"{_PREFIX}port in {path} is not a port number: {port_text!r}")
    algorithm = values.get(_PREFIX + "algorithm", "HMAC-MD5").upper()
    if algorithm not in ALGORITHMS:
        raise ClientError(
            f"{_PREFIX}algorithm in {path} must be one of {', '.join(ALGORITHMS)}, "
            f"not {algorithm!r}"
        )
    return Rfc2136Credentials(
        server=server,
        port=int(port_text),
        key_name=need("name"),
        secret=need("secret"),
        algorithm=algorithm,
        sign_query=values.get(_PREFIX + "sign_query", "false").lower() in ("true", "yes", "1"),
    )


class Rfc2136Authenticator:
    name = "dns-rfc2136"

    def __init__(
        self,
        credentials_path: Path,
        *,
        propagation_seconds: float = 0,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        """``propagation_seconds`` is an extra wait once the server answers with
        the record (for secondaries, as certbot's flag); ``visibility_timeout``
        bounds the wait for the authoritative server itself."""
        _require_dnspython()
        self._credentials = read_credentials(Path(credentials_path))
        self._propagation_seconds = max(0.0, propagation_seconds)
        self._visibility_timeout = visibility_timeout
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._zones: dict[str, dns.name.Name] = {}
        # Records we added, so cleanup deletes exactly those values and nothing
        # after a perform that never reached the server.
        self._added: dict[ChallengeTask, dns.name.Name] = {}
        self._keyring: dict[Any, Any] | None = None

    @property
    def challenge_types(self) -> tuple[str, ...]:
        return ("dns-01",)

    # -- the contract ---------------------------------------------------------

    def perform(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            if task.challenge_type != "dns-01":
                raise ClientError(
                    f"the dns-rfc2136 authenticator answers only dns-01, not "
                    f"{task.challenge_type} for {task.domain}"
                )
        with self._lock:
            by_zone: dict[dns.name.Name, list[ChallengeTask]] = {}
            for task in tasks:
                by_zone.setdefault(self._zone_of(task.domain), []).append(task)
            for zone, zone_tasks in by_zone.items():
                self._update(zone, zone_tasks, add=True)
                for task in zone_tasks:
                    self._added[task] = zone
            self._wait_until_visible(tasks)

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        with self._lock:
            by_zone: dict[dns.name.Name, list[ChallengeTask]] = {}
            for task in tasks:
                if (zone := self._added.get(task)) is not None:
                    by_zone.setdefault(zone, []).append(task)
            for zone, zone_tasks in by_zone.items():
                # Deleting an RR that is already gone is a no-op (RFC 2136 §3.4.2.4).
                self._update(zone, zone_tasks, add=False)
                for task in zone_tasks:
                    self._added.pop(task, None)

    # -- DNS ------------------------------------------------------------------

    def _keys(self) -> dict[Any, Any]:
        if self._keyring is None:
            import binascii

            import dns.exception
            import dns.tsigkeyring

            creds = self._credentials
            try:
                self._keyring = dns.tsigkeyring.from_text(
                    {creds.key_name: (ALGORITHMS[creds.algorithm], creds.secret)}
                )
            except (binascii.Error, ValueError, dns.exception.DNSException) as exc:
                raise ClientError(
                    f"the TSIG key {creds.key_name!r} in the credentials file is not usable: {exc}"
                ) from exc
        return self._keyring

    def _where(self) -> str:
        return f"{self._credentials.server} port {self._credentials.port}"

    def _exchange(self, message: dns.message.Message, *, tcp: bool) -> dns.message.Message:
        """Send one message; turn every failure into one sentence."""
        import dns.exception
        import dns.query
        import dns.tsig

        creds = self._credentials
        try:
            if tcp:
                return dns.query.tcp(message, creds.server, timeout=QUERY_TIMEOUT, port=creds.port)
            response, _ = dns.query.udp_with_fallback(
                message, creds.server, timeout=QUERY_TIMEOUT, port=creds.port
            )
            return response
        except dns.tsig.PeerBadKey:
            raise ClientError(
                f"the DNS server at {self._where()} does not know the TSIG key "
                f"{creds.key_name!r}; check {_PREFIX}name"
            ) from None
        except (dns.tsig.PeerBadSignature, dns.tsig.BadSignature):
            raise ClientError(
                f"the DNS server at {self._where()} rejected the TSIG signature of key "
                f"{creds.key_name!r}; check {_PREFIX}secret and {_PREFIX}algorithm"
            ) from None
        except (dns.tsig.PeerBadTime, dns.tsig.BadTime):
            raise ClientError(
                f"the DNS server at {self._where()} rejected the TSIG time; "
                "check this machine's clock"
            ) from None
        except dns.exception.Timeout:
            raise ClientError(
                f"the DNS server at {self._where()} did not answer within {QUERY_TIMEOUT:g} s"
            ) from None
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            raise ClientError(f"DNS exchange with {self._where()} failed: {exc}") from None

    def _zone_of(self, domain: str) -> dns.name.Name:
        """The closest enclosing zone the server is authoritative for: ask for the
        SOA of the name and each parent until an authoritative answer owns it."""
        import dns.exception
        import dns.flags
        import dns.message
        import dns.name
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype

        base = domain.removeprefix("*.").strip().lower().rstrip(".")
        if base in self._zones:
            return self._zones[base]
        try:
            name = dns.name.from_text(base)
        except dns.exception.DNSException:
            raise ClientError(f"{domain!r} is not a DNS name") from None
        guess = name
        while len(guess.labels) > 1:  # stop before the root
            query = dns.message.make_query(guess, dns.rdatatype.SOA)
            if self._credentials.sign_query:
                query.use_tsig(self._keys(), keyname=self._credentials.key_name)
            response = self._exchange(query, tcp=False)
            if (
                response.rcode() == dns.rcode.NOERROR
                and response.flags & dns.flags.AA
                and response.get_rrset(response.answer, guess, dns.rdataclass.IN, dns.rdatatype.SOA)
                is not None
            ):
                self._zones[base] = guess
                return guess
            guess = guess.parent()
        raise ClientError(
            f"the DNS server at {self._where()} is not authoritative for {base} "
            "or any zone above it"
        )

    def _update(self, zone: dns.name.Name, tasks: Sequence[ChallengeTask], *, add: bool) -> None:
        import dns.name
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rdtypes.ANY.TXT
        import dns.update

        creds = self._credentials
        update = dns.update.UpdateMessage(
            zone, keyring=self._keys(), keyname=dns.name.from_text(creds.key_name)
        )
        for task in tasks:
            record = dns.name.from_text(task.validation_name).relativize(zone)
            # Built as rdata, not parsed from text: the value never meets a zone-file parser.
            txt = dns.rdtypes.ANY.TXT.TXT(
                dns.rdataclass.IN, dns.rdatatype.TXT, [task.validation_value.encode()]
            )
            if add:
                update.add(record, TXT_TTL, txt)
            else:
                update.delete(record, txt)
        response = self._exchange(update, tcp=True)
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            action = "add" if add else "delete"
            names = ", ".join(dict.fromkeys(task.validation_name for task in tasks))
            raise ClientError(
                f"the DNS server at {self._where()} refused to {action} the TXT record "
                f"for {names} in zone {zone.to_text(omit_final_dot=True)}: "
                f"{dns.rcode.to_text(rcode)}"
            )

    def _answers(self, task: ChallengeTask) -> bool:
        import dns.message
        import dns.rdatatype

        query = dns.message.make_query(task.validation_name, dns.rdatatype.TXT)
        response = self._exchange(query, tcp=False)
        want = task.validation_value.encode()
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rdata in rrset:
                    if b"".join(rdata.strings) == want:
                        return True
        return False

    def _wait_until_visible(self, tasks: Sequence[ChallengeTask]) -> None:
        """Bounded: until the authoritative server answers every value, then the
        extra ``propagation_seconds`` for its secondaries."""
        deadline = self._clock.monotonic() + self._visibility_timeout
        pending = list(dict.fromkeys(tasks))
        pause = _FIRST_PAUSE
        while True:
            pending = [task for task in pending if not self._answers(task)]
            if not pending:
                break
            if self._clock.monotonic() + pause > deadline:
                raise ClientError(
                    f"the DNS server at {self._where()} still does not answer the TXT record "
                    f"{pending[0].validation_name} after {self._visibility_timeout:g} s"
                )
            self._pause(pause)
            pause = min(pause * 2, _MAX_PAUSE)
        if self._propagation_seconds:
            self._pause(self._propagation_seconds)

    def _pause(self, seconds: float) -> None:
        # perform() is synchronous (the flow runs it off its event loop), so the
        # injected clock's sleep gets a loop of its own.
        asyncio.run(self._clock.sleep(seconds))
