"""Key policy: which public keys certmint-ca accepts, for account keys (the
JWS key of newAccount and keyChange) and certificate keys (the CSR's key)
alike, as issue 5 asks and as Boulder's goodkey package does.

Rules, and where they come from:

- RSA moduli of exactly 2048, 3072 or 4096 bits (BR 6.1.5: at least 2048
  bits and a multiple of 8; Let's Encrypt's CPS allows these three sizes
  only, and so does Boulder, because the Debian weak-key lists enumerate
  only common sizes).
- RSA public exponent 65537 and nothing else. BR 6.1.6 says the exponent
  SHALL be odd and at least 3, and SHOULD lie in [2^16+1, 2^256-1]; Boulder
  allows 65537 only. 65537 satisfies all of that, every mainstream key
  generator uses it, and one value keeps the accepted key space (and the
  weak-key lists, which were built for e = 65537) small.
- RSA moduli with no prime factor below 752 -- so also not even (BR 6.1.6;
  Boulder's checkSmallPrimes).
- Debian weak keys, CVE-2008-0166 (BR 6.1.1.3(4)(a)): a list of truncated
  SHA-1 fingerprints of the modulus, shipped in ``certmint/ca/data`` and
  extended by the operator.
- ROCA, CVE-2017-15361 (BR 6.1.1.3(4)(b)): Infineon's generator made primes
  p = k*M + (65537^a mod M); the modulus then lies in the subgroup generated
  by 65537 modulo every small prime. The test is the one in crocs-muni/roca
  (detect.py, the "moduli" fingerprint), written here from that definition.
- Close primes (BR 6.1.1.3(4)(c)): the modulus must not factor within 100
  rounds of Fermat's method.
- ECDSA on P-256 and P-384 only (BR 6.1.5 allows P-521 too; the issue, like
  Let's Encrypt's CPS, does not). The point itself is validated by
  ``cryptography`` when a key is loaded: an off-curve point, the point at
  infinity or an out-of-range coordinate never becomes an
  ``EllipticCurvePublicKey`` (and P-256/P-384 have cofactor 1, so a point on
  the curve has the right order).
- Account keys may also be Ed25519 (RFC 8037), as before.
- Blocked keys: the SHA-256 of the key's SubjectPublicKeyInfo DER (what
  Boulder's blockedKeys table holds), answered by an injected callable so the
  operator's file and, later, keys blocked by a key-compromise revocation in
  storage plug in without this module doing I/O.

Every refusal is ``errors.BadPublicKey`` (RFC 8555 §6.7 ``badPublicKey``),
whose detail names the rule and nothing more (no factors, no fingerprints).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from importlib import resources

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certmint.ca import errors

ALLOWED_RSA_BITS = frozenset({2048, 3072, 4096})
ALLOWED_EC_CURVES = frozenset({"secp256r1", "secp384r1"})
RSA_PUBLIC_EXPONENT = 65537
# BR 6.1.1.3(4)(c): "factored within 100 rounds using Fermat's factorization
# method". Boulder runs 110 by default for margin; 100 is the floor.
FERMAT_ROUNDS = 100

SHIPPED_WEAK_RSA_FILE = "data/debian-weak-rsa.txt"

# -- Debian weak keys (CVE-2008-0166) ----------------------------------------

_FINGERPRINT = re.compile(r"^(?:[0-9a-f]{20}|[0-9a-f]{40})$")


def debian_weak_fingerprint(modulus: int) -> str:
    """The openssl-vulnkey fingerprint of an RSA modulus: the last 20 hex
    digits of SHA-1("Modulus=<UPPER-CASE HEX>\\n") -- the format of Debian's
    openssl-blacklist files and of Boulder's WeakRSAKeys JSON list."""
    text = f"Modulus={modulus:X}\n".encode("ascii")
    return hashlib.sha1(text, usedforsecurity=False).hexdigest()[20:]


def parse_weak_rsa_fingerprints(data: str | bytes) -> frozenset[str]:
    """Read a weak-key list: openssl-blacklist text (one fingerprint a line,
    ``#`` comments), or Boulder's JSON list of strings; gzip-compressed or
    not. Full 40-digit SHA-1 values are truncated to their last 20 digits.
    Raises ValueError naming the first bad entry."""
    if isinstance(data, bytes):
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        data = data.decode("ascii")
    stripped = data.lstrip()
    entries: Iterable[tuple[int, object]]
    if stripped.startswith("["):
        loaded = json.loads(stripped)
        if not isinstance(loaded, list):
            raise ValueError("a JSON weak-key list must be a list of strings")
        entries = enumerate(loaded, start=1)
    else:
        entries = (
            (number, line.split("#", 1)[0].strip())
            for number, line in enumerate(data.splitlines(), start=1)
        )
    result: set[str] = set()
    for number, entry in entries:
        if entry == "":
            continue
        value = entry.lower() if isinstance(entry, str) else ""
        if not _FINGERPRINT.match(value):
            raise ValueError(f"entry {number}: {entry!r} is not a 20- or 40-digit hex fingerprint")
        result.add(value[-20:])
    return frozenset(result)


@functools.lru_cache(maxsize=1)
def shipped_weak_rsa_fingerprints() -> frozenset[str]:
    """The Debian weak-key fingerprints shipped as package data (see the
    file's header for exactly what it covers)."""
    data = resources.files("certmint.ca").joinpath(SHIPPED_WEAK_RSA_FILE).read_bytes()
    return parse_weak_rsa_fingerprints(data)


# -- blocked keys --------------------------------------------------------------

_PEM_BLOCK = re.compile(
    r"-----BEGIN (?:RSA )?PUBLIC KEY-----.*?-----END (?:RSA )?PUBLIC KEY-----", re.DOTALL
)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def spki_sha256(key: object) -> bytes:
    """SHA-256 of the key's DER SubjectPublicKeyInfo: the identity a blocked
    key is stored under (Boulder's core.KeyDigest, its blockedKeys table)."""
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise TypeError(f"not a supported public key: {type(key).__name__}")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def parse_blocked_keys(text: str) -> frozenset[bytes]:
    """Read a blocked-keys file: PEM public keys ("PUBLIC KEY" or "RSA
    PUBLIC KEY" blocks), and lines of 64 hex digits, each the SHA-256 of a
    DER SubjectPublicKeyInfo (colons allowed, as ``openssl dgst -c`` prints);
    ``#`` starts a comment outside PEM blocks. Raises ValueError naming the
    first bad line."""
    digests: set[bytes] = set()
    for block in _PEM_BLOCK.findall(text):
        key = serialization.load_pem_public_key(block.encode("ascii"))
        digests.add(spki_sha256(key))
    rest = _PEM_BLOCK.sub("", text)
    for number, line in enumerate(rest.splitlines(), start=1):
        value = line.split("#", 1)[0].strip().replace(":", "").lower()
        if not value:
            continue
        if not _SHA256_HEX.match(value):
            raise ValueError(
                f"line {number}: expected a PEM public key or a SHA-256 hex digest, "
                f"got {line.strip()!r}"
            )
        digests.add(bytes.fromhex(value))
    return frozenset(digests)


def blocked_by(*sources: frozenset[bytes] | Callable[[bytes], bool]) -> Callable[[bytes], bool]:
    """One ``blocked`` callable from sets of SPKI digests and other
    callables (e.g. the operator's file and a storage lookup)."""
    sets: list[frozenset[bytes]] = []
    calls: list[Callable[[bytes], bool]] = []
    for source in sources:
        if isinstance(source, frozenset):
            sets.append(source)
        else:
            calls.append(source)

    def blocked(digest: bytes) -> bool:
        return any(digest in s for s in sets) or any(c(digest) for c in calls)

    return blocked


def nothing_blocked(digest: bytes) -> bool:
    return False


# -- RSA modulus structure ---------------------------------------------------------


def _primes_below(limit: int) -> tuple[int, ...]:
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(limit) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, limit, i)))
    return tuple(i for i in range(limit) if sieve[i])


# BR 6.1.6: the modulus SHOULD have "no factors smaller than 752". One gcd
# against their product (Boulder does the same) costs a few microseconds.
_SMALL_PRIMES_PRODUCT = math.prod(_primes_below(752))


def has_small_factor(modulus: int) -> bool:
    return math.gcd(modulus, _SMALL_PRIMES_PRODUCT) != 1


def _subgroup_mask(prime: int, generator: int) -> int:
    """Bit r set for each residue r in the subgroup <generator> mod prime."""
    mask, x = 0, 1
    while True:
        mask |= 1 << x
        x = x * generator % prime
        if x == 1:
            return mask


# crocs-muni/roca detect.py tests the odd primes up to 167: a ROCA modulus,
# a product of two primes of the form k*M + 65537^a mod M with 167 | M for
# every key size, is a power of 65537 modulo each of them. A random modulus
# passes all 38 with probability about 2^-28 (the product of the subgroup
# shares); Boulder (titanous/rocacheck) accepts the same false-positive rate.
_ROCA_GENERATOR = 65537
_ROCA_PRIMES = tuple(p for p in _primes_below(168) if p > 2)
_ROCA_MASKS = tuple((p, _subgroup_mask(p, _ROCA_GENERATOR)) for p in _ROCA_PRIMES)
_ROCA_PRIMORIAL = math.prod(_ROCA_PRIMES)


def has_roca_fingerprint(modulus: int) -> bool:
    residue = modulus % _ROCA_PRIMORIAL  # one big reduction, then small ones
    return all((mask >> (residue % p)) & 1 for p, mask in _ROCA_MASKS)


# Squares modulo 64, 63 and 65: a cheap sieve before the integer square root
# (only about 1 in 100 non-squares survives all three).
_SQUARES_64 = frozenset(i * i % 64 for i in range(64))
_SQUARES_63 = frozenset(i * i % 63 for i in range(63))
_SQUARES_65 = frozenset(i * i % 65 for i in range(65))


def _is_square(value: int) -> bool:
    if (
        value & 63 not in _SQUARES_64
        or value % 63 not in _SQUARES_63
        or value % 65 not in _SQUARES_65
    ):
        return False
    root = math.isqrt(value)
    return root * root == value


def fermat_factor(modulus: int, rounds: int) -> tuple[int, int] | None:
    """Fermat's method: n = a^2 - b^2 = (a+b)(a-b) for some a near sqrt(n)
    when the two factors are close. Tries ``rounds`` values of a from
    ceil(sqrt(n)) upward; returns the factors, or None.

    Starting at ceil(sqrt(n)) (Boulder starts one above floor(sqrt(n))) also
    catches n = p^2 in round one."""
    a = math.isqrt(modulus)
    if a * a < modulus:
        a += 1
    b2 = a * a - modulus
    for _ in range(rounds):
        if _is_square(b2):
            b = math.isqrt(b2)
            return a + b, a - b
        # (a+1)^2 - n = b2 + 2a + 1: no big multiplication per round.
        b2 += 2 * a + 1
        a += 1
    return None


# -- the policy -------------------------------------------------------------------------


class KeyPolicy:
    """Accepts or refuses public keys; pure, given its lists."""

    def __init__(
        self,
        weak_rsa_fingerprints: frozenset[str],
        blocked: Callable[[bytes], bool],
        *,
        fermat_rounds: int = FERMAT_ROUNDS,
    ) -> None:
        if fermat_rounds < FERMAT_ROUNDS:
            raise ValueError(f"Fermat rounds must be at least {FERMAT_ROUNDS} (BR 6.1.1.3)")
        self._weak = weak_rsa_fingerprints
        self._blocked = blocked
        self._fermat_rounds = fermat_rounds

    @classmethod
    def default(cls) -> KeyPolicy:
        """The shipped Debian list, nothing blocked."""
        return cls(shipped_weak_rsa_fingerprints(), nothing_blocked)

    def check_certificate_key(self, key: object) -> None:
        self._check(key, "certificate key", allow_ed25519=False)

    def check_account_key(self, key: object) -> None:
        self._check(key, "account key", allow_ed25519=True)

    def _check(self, key: object, role: str, *, allow_ed25519: bool) -> None:
        if isinstance(key, rsa.RSAPublicKey):
            self._check_rsa_shape(key, role)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in ALLOWED_EC_CURVES:
                raise errors.BadPublicKey(
                    f"ECDSA curve {key.curve.name} is not allowed for a {role}; use P-256 or P-384"
                )
        elif not (allow_ed25519 and isinstance(key, ed25519.Ed25519PublicKey)):
            allowed = "RSA 2048/3072/4096 or ECDSA P-256/P-384"
            if allow_ed25519:
                allowed = "RSA 2048/3072/4096, ECDSA P-256/P-384 or Ed25519"
            raise errors.BadPublicKey(f"{role} type is not allowed; use {allowed}")
        if self._blocked(spki_sha256(key)):
            raise errors.BadPublicKey(
                f"this {role} is blocked: it was reported compromised or is refused "
                "by this CA's operator; generate a new key"
            )
        if isinstance(key, rsa.RSAPublicKey):
            self._check_rsa_weakness(key.public_numbers().n, role)

    @staticmethod
    def _check_rsa_shape(key: rsa.RSAPublicKey, role: str) -> None:
        # Exact sizes: also makes the modulus a whole number of bytes (BR 6.1.5).
        if key.key_size not in ALLOWED_RSA_BITS:
            raise errors.BadPublicKey(
                f"RSA {role} of {key.key_size} bits is not allowed; use 2048, 3072 or 4096"
            )
        exponent = key.public_numbers().e
        if exponent != RSA_PUBLIC_EXPONENT:
            raise errors.BadPublicKey(
                f"RSA {role} has public exponent {exponent}; only 65537 is allowed"
            )

    def _check_rsa_weakness(self, modulus: int, role: str) -> None:
        if debian_weak_fingerprint(modulus) in self._weak:
            raise errors.BadPublicKey(
                f"this {role} is a known weak key (Debian OpenSSL, CVE-2008-0166); "
                "generate a new key"
            )
        if has_small_factor(modulus):
            raise errors.BadPublicKey(f"RSA {role} modulus has a prime factor below 752 (BR 6.1.6)")
        if has_roca_fingerprint(modulus):
            raise errors.BadPublicKey(
                f"RSA {role} was made by a vulnerable Infineon generator "
                "(ROCA, CVE-2017-15361); generate a new key elsewhere"
            )
        if fermat_factor(modulus, self._fermat_rounds) is not None:
            raise errors.BadPublicKey(
                f"RSA {role} modulus factors by Fermat's method (its primes are too "
                "close together, BR 6.1.1.3); generate a new key"
            )
