"""DNSSEC-signed test zones, built offline with ldns (Debian's ``ldnsutils``).

The VA must treat a DNSSEC validation failure as a failed lookup, never as an
answer or as permission (RFC 8659 §3 for CAA; RFC 4035 §5.5: a validating
resolver answers SERVFAIL for bogus data). To test that for real, we sign
zones with real keys and serve them from a real authoritative server
(:mod:`certmint.testing.knot`) behind a real validating resolver
(:mod:`certmint.testing.unbound`).

:func:`build_test_zones` makes three zones, each with its own KSK and ZSK
(ECDSAP256SHA256, RFC 6605; ``ldns-keygen``), signed with NSEC by
``ldns-signzone``:

- ``example.`` — the parent, signed, holding the DS records of both
  children; its KSK's DS is the one trust anchor a resolver needs, so the
  chain of trust below it (RFC 4035 §5) is exercised as on the Internet;
- ``signed.example.`` — correctly signed, with the dns-01 TXT value, a CAA
  record naming the CA, and ``www`` pointing at the test web server;
- ``bogus.example.`` — signed, then three RRsets rewritten in the signed
  file so their RRSIGs no longer match (RFC 4035 §5.3.3: such data is
  Bogus). Each is rewritten to what an attacker wants the CA to see:

  - ``_acme-challenge.bogus.example. TXT``: signed as a stale value, then
    changed to the expected dns-01 value;
  - ``caa.bogus.example. CAA``: signed as ``issue "<other CA>"``, then
    changed to name this CA (``_acme-challenge.caa`` has a good TXT, so the
    challenge passes and only CAA is bogus);
  - ``www.bogus.example. A``: signed as a documentation address (RFC 5737),
    then changed to the test web server's address.

  Served without validation, all three would let the CA validate; through
  a validating resolver each lookup must fail.

Keys are written 0600 inside ``work_dir`` (made 0700). Nothing touches the
network; the keys never leave the directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PARENT = "example."
SIGNED = "signed.example."
BOGUS = "bogus.example."
# RFC 6605: the algorithm recommended today (small keys and signatures).
ALGORITHM = "ECDSAP256SHA256"
TTL = 300
_TOOL_TIMEOUT_SECONDS = 30.0


class ZoneBuildError(RuntimeError):
    """An ldns tool is missing or failed; the message carries its output."""


@dataclass(frozen=True)
class SignedZone:
    """A signed zone file and the records that anchor trust in it."""

    origin: str  # absolute, e.g. "signed.example."
    path: Path  # the signed zone file, as served
    ds: str  # DS RR text of the KSK (RFC 4034 §5), what the parent publishes
    dnskey: str  # DNSKEY RR text of the KSK (RFC 4034 §2)

    @property
    def trust_anchor(self) -> str:
        """A trust anchor for this zone, as Unbound's ``trust-anchor:`` takes it."""
        return self.ds


@dataclass(frozen=True)
class DnssecZones:
    parent: SignedZone
    signed: SignedZone
    bogus: SignedZone

    @property
    def all(self) -> tuple[SignedZone, ...]:
        return (self.parent, self.signed, self.bogus)

    @property
    def trust_anchors(self) -> tuple[str, ...]:
        """What a resolver needs: the parent's anchor only; the children are
        reached through the DS records the parent holds."""
        return (self.parent.trust_anchor,)


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if found is None:
        raise ZoneBuildError(f"{name} is not installed: apt-get install ldnsutils")
    return found


def _run(argv: Sequence[str], cwd: Path) -> str:
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ZoneBuildError(f"{argv[0]} did not finish in {_TOOL_TIMEOUT_SECONDS} s") from exc
    if done.returncode != 0:
        raise ZoneBuildError(
            f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def _keygen(directory: Path, origin: str, *, ksk: bool) -> str:
    """A new key pair for ``origin``; returns its base name (K<name>+013+<id>)."""
    argv = [_tool("ldns-keygen"), "-a", ALGORITHM, *(["-k"] if ksk else []), origin]
    base = _run(argv, directory).strip()
    private = directory / f"{base}.private"
    if not private.is_file():
        raise ZoneBuildError(f"ldns-keygen printed {base!r} but wrote no {private.name}")
    for path in directory.glob(f"{base}.*"):
        path.chmod(0o600)
    return base


def _rr_line(path: Path) -> str:
    """The one resource record in a key or DS file, without ldns's comment."""
    text = path.read_text()
    lines = [line.split(";", 1)[0].strip() for line in text.splitlines()]
    records = [line for line in lines if line]
    if len(records) != 1:
        raise ZoneBuildError(f"expected one record in {path}, found {len(records)}")
    return " ".join(records[0].split())


def sign_zone(work_dir: Path, origin: str, records: str) -> SignedZone:
    """Sign the zone ``origin`` made of ``records`` (zone-file lines relative
    to ``$ORIGIN``; SOA and NS are added here) with a fresh KSK and ZSK."""
    if not origin.endswith("."):
        raise ValueError(f"origin {origin!r} must be absolute")
    directory = work_dir.resolve() / origin.rstrip(".")
    directory.mkdir(mode=0o700, parents=True)
    unsigned = directory / "unsigned.zone"
    unsigned.write_text(
        f"$ORIGIN {origin}\n"
        f"$TTL {TTL}\n"
        f"@ SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 60\n"
        f"@ NS ns.{origin}\n"
        "ns A 127.0.0.1\n"
        f"{records}"
    )
    ksk = _keygen(directory, origin, ksk=True)
    zsk = _keygen(directory, origin, ksk=False)
    signed = directory / "signed.zone"
    # NSEC (the default) proves the absence of records: RFC 4035 §2.3.
    _run([_tool("ldns-signzone"), "-f", str(signed), str(unsigned), zsk, ksk], directory)
    return SignedZone(
        origin=origin,
        path=signed,
        ds=_rr_line(directory / f"{ksk}.ds"),
        dnskey=_rr_line(directory / f"{ksk}.key"),
    )


def tamper(zone: SignedZone, owner: str, rdtype: str, old: str, new: str) -> None:
    """Rewrite the rdata ``old`` of ``owner``'s ``rdtype`` record to ``new`` in
    the signed file, leaving its RRSIG as it was, so the RRset is Bogus."""
    lines = zone.path.read_text().splitlines()
    hits = 0
    for index, line in enumerate(lines):
        fields = line.split(None, 4)  # owner TTL class type rdata
        if (
            len(fields) == 5
            and fields[0].lower() == owner.lower()
            and fields[3] == rdtype
            and fields[4].strip() == old
        ):
            lines[index] = "\t".join((*fields[:4], new))
            hits += 1
    if hits != 1:
        raise ZoneBuildError(f"{owner} {rdtype} {old} occurs {hits} times in {zone.path}")
    zone.path.write_text("\n".join(lines) + "\n")


def _quoted(text: str) -> str:
    if any(ch in text for ch in '"\\;\n'):
        raise ValueError(f"{text!r} cannot be written as a plain quoted string")
    return f'"{text}"'


def build_test_zones(
    work_dir: Path,
    *,
    txt_value: str,
    address: str = "127.0.0.1",
    caa_identity: str = "certmint.invalid",
    decoy_address: str = "192.0.2.1",
    other_caa_identity: str = "other-ca.invalid",
) -> DnssecZones:
    """The parent, good and bogus zones described in the module docstring.

    ``txt_value`` is the dns-01 TXT value the CA will look for (RFC 8555
    §8.4), ``address`` where the test web server listens, ``caa_identity``
    the CA's issuer domain name (RFC 8659 §4.2).
    """
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(work_dir, 0o700)
    txt, stale = _quoted(txt_value), _quoted("stale-value-signed-by-the-owner")
    permit, forbid = _quoted(caa_identity), _quoted(other_caa_identity)
    signed = sign_zone(
        work_dir,
        SIGNED,
        f"@ A {address}\n"
        f"@ CAA 0 issue {permit}\n"
        f"_acme-challenge TXT {txt}\n"
        f"www A {address}\n"
        f"_acme-challenge.www TXT {txt}\n",
    )
    bogus = sign_zone(
        work_dir,
        BOGUS,
        f"@ A {address}\n"
        f"@ CAA 0 issue {permit}\n"
        f"_acme-challenge TXT {stale}\n"
        f"caa CAA 0 issue {forbid}\n"
        f"_acme-challenge.caa TXT {txt}\n"
        f"www A {decoy_address}\n"
        f"_acme-challenge.www TXT {txt}\n",
    )
    tamper(bogus, f"_acme-challenge.{BOGUS}", "TXT", stale, txt)
    tamper(bogus, f"caa.{BOGUS}", "CAA", f"0 issue {forbid}", f"0 issue {permit}")
    tamper(bogus, f"www.{BOGUS}", "A", decoy_address, address)
    # The delegations, with the children's DS (RFC 4035 §2.4) and glue.
    delegations = "".join(
        f"{child.origin} NS ns.{child.origin}\nns.{child.origin} A 127.0.0.1\n{child.ds}\n"
        for child in (signed, bogus)
    )
    parent = sign_zone(work_dir, PARENT, delegations)
    return DnssecZones(parent=parent, signed=signed, bogus=bogus)
