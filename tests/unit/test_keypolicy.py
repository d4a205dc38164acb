"""The key policy (issue 5, acceptance 4): every weak-key class is refused
with a real weak key -- Debian keys from the published populations, a real
ROCA key and one built here with Infineon's prime structure, a real square
modulus and a close-primes key built here -- while ordinary keys of every
allowed size and curve pass. Sizes, exponents, curves and blocked keys are
table-tested for account keys and certificate keys alike."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519

from certmint.ca import errors
from certmint.ca.config import PolicyConfig
from certmint.ca.keypolicy import (
    FERMAT_ROUNDS,
    KeyPolicy,
    blocked_by,
    debian_weak_fingerprint,
    fermat_factor,
    has_roca_fingerprint,
    nothing_blocked,
    parse_blocked_keys,
    parse_weak_rsa_fingerprints,
    shipped_weak_rsa_fingerprints,
    spki_sha256,
)
from certmint.ca.policy import PolicyAuthority

WEAK_KEYS = Path(__file__).resolve().parent.parent / "data" / "weak_keys"
DEBIAN_WEAK = sorted(WEAK_KEYS.glob("debian-weak-*.pem"))
ROLES = ("certificate", "account")


def load_public(path: Path) -> rsa.RSAPublicKey:
    data = path.read_bytes()
    key: object
    if b"PRIVATE KEY" in data:
        key = serialization.load_pem_private_key(data, None).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def refusal(policy: KeyPolicy, key: object, role: str) -> str:
    check = policy.check_account_key if role == "account" else policy.check_certificate_key
    with pytest.raises(errors.BadPublicKey) as caught:
        check(key)
    assert caught.value.problem().type.endswith("badPublicKey")
    assert caught.value.status == 400
    return caught.value.detail


def accept(policy: KeyPolicy, key: object, role: str) -> None:
    check = policy.check_account_key if role == "account" else policy.check_certificate_key
    check(key)


# -- number-theory helpers for building weak keys (test-only) ----------------


def is_probable_prime(n: int, rng: random.Random, rounds: int = 24) -> bool:
    """Miller-Rabin with random bases: enough to build test keys."""
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def rsa_from_primes(p: int, q: int) -> rsa.RSAPrivateKey:
    e = 65537
    d = pow(e, -1, math.lcm(p - 1, q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=d % (p - 1),
        dmq1=d % (q - 1),
        iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


@cache
def close_primes_key() -> rsa.RSAPrivateKey:
    """p from a real 2048-bit key, q the next prime above it: |p - q| is a
    few hundred, so Fermat's method factors n in its first round."""
    rng = random.Random(20080513)
    p = rsa.generate_private_key(65537, 2048).private_numbers().p
    q = p + 2
    for _ in range(20_000):  # prime gaps near 2^1024 average ~710
        if q % 65537 != 1 and is_probable_prime(q, rng):
            return rsa_from_primes(p, q)
        q += 2
    raise AssertionError("no prime found near p")


def roca_prime(rng: random.Random, primorial: int, generator_order: int) -> int:
    """A 1024-bit prime of Infineon's form k*M + (65537^a mod M)."""
    low, high = math.isqrt(2**2047) + 1, 2**1024  # so that p*q has 2048 bits
    for _ in range(20_000):  # p is coprime to every prime <= 701: ~1 in 60 is prime
        u = pow(65537, rng.randrange(1, generator_order), primorial)
        p = rng.randrange(low // primorial, high // primorial) * primorial + u
        if low <= p < high and p % 65537 != 1 and is_probable_prime(p, rng):
            return p
    raise AssertionError("no ROCA-form prime found")


@cache
def roca_key() -> rsa.RSAPrivateKey:
    """A 2048-bit key with ROCA's structure: M is the primorial of 701, the
    one Infineon's library used for 1984- to 3936-bit keys (crocs-muni/roca
    generate.sage)."""
    rng = random.Random(2017_15361)
    primes = [n for n in range(2, 702) if all(n % d for d in range(2, math.isqrt(n) + 1))]
    primorial = math.prod(primes)
    # The order of 65537 modulo M divides lcm(p - 1); exponents drawn below it
    # cover the whole subgroup.
    order = math.lcm(*(p - 1 for p in primes))
    return rsa_from_primes(roca_prime(rng, primorial, order), roca_prime(rng, primorial, order))


@cache
def good_rsa(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, bits)


def default_policy() -> KeyPolicy:
    return KeyPolicy.default()


# -- controls: ordinary keys pass -----------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_ordinary_rsa_keys_of_each_allowed_size_pass(bits: int, role: str) -> None:
    key = good_rsa(bits).public_key()
    accept(default_policy(), key, role)
    n = key.public_numbers().n
    assert not has_roca_fingerprint(n)
    assert fermat_factor(n, FERMAT_ROUNDS) is None


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["p256", "p384"])
def test_allowed_curves_pass(curve: ec.EllipticCurve, role: str) -> None:
    accept(default_policy(), ec.generate_private_key(curve).public_key(), role)


# -- Debian weak keys (CVE-2008-0166) -----------------------------------------------


def test_the_test_keys_are_real_rsa_keys_of_allowed_sizes() -> None:
    assert len(DEBIAN_WEAK) == 5
    assert {load_public(p).key_size for p in DEBIAN_WEAK} == {2048, 4096}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path", DEBIAN_WEAK, ids=lambda p: p.stem)
def test_debian_weak_keys_are_refused(path: Path, role: str) -> None:
    detail = refusal(default_policy(), load_public(path), role)
    assert "CVE-2008-0166" in detail
    assert role in detail


@pytest.mark.parametrize("path", DEBIAN_WEAK, ids=lambda p: p.stem)
def test_only_the_list_catches_a_debian_weak_key(path: Path) -> None:
    """The keys are structurally sound: without the list they would pass,
    which is why the list is shipped and the operator can extend it."""
    key = load_public(path)
    accept(KeyPolicy(frozenset(), nothing_blocked), key, "certificate")
    extra = parse_weak_rsa_fingerprints(
        json.dumps([debian_weak_fingerprint(key.public_numbers().n)])
    )
    refusal(KeyPolicy(extra, nothing_blocked), key, "certificate")


def test_fingerprint_matches_openssl_modulus_sha1(tmp_path: Path) -> None:
    """The openssl-vulnkey recipe: `openssl rsa -noout -modulus | sha1sum`,
    last 20 hex digits -- run with the real openssl."""
    path = WEAK_KEYS / "debian-weak-rsa2048-amd64-rnd-pid1000.pem"
    out = subprocess.run(
        ["openssl", "rsa", "-noout", "-modulus", "-in", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    assert out.startswith(b"Modulus=")
    expected = hashlib.sha1(out, usedforsecurity=False).hexdigest()[20:]
    assert debian_weak_fingerprint(load_public(path).public_numbers().n) == expected
    assert expected in shipped_weak_rsa_fingerprints()


def test_weak_list_formats() -> None:
    text = "# comment\n\n49D96FAE9BFC0E84BBA3  # upper case\n" + "0" * 20 + "b7ead9492dfd921fc4f9\n"
    assert parse_weak_rsa_fingerprints(text) == {"49d96fae9bfc0e84bba3", "b7ead9492dfd921fc4f9"}
    boulder = '["8df20e6961a16398b85a", "00008be7025d9f1a9088"]'
    assert parse_weak_rsa_fingerprints(boulder) == {"8df20e6961a16398b85a", "00008be7025d9f1a9088"}
    assert parse_weak_rsa_fingerprints(gzip.compress(text.encode())) == parse_weak_rsa_fingerprints(
        text
    )


@pytest.mark.parametrize(
    "bad", ["xyz\n", "49d96fae9bfc0e84bba\n", '["49d96fae9bfc0e84bba3", 7]', '{"a": 1}']
)
def test_malformed_weak_lists_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_weak_rsa_fingerprints(bad)


# -- ROCA (CVE-2017-15361) -------------------------------------------------------------


def test_roca_masks_match_the_published_detector() -> None:
    """The first masks of crocs-muni/roca detect.py ("prints"), for the
    primes 3, 5, 7, 11, 13, 17, 19, 23, recomputed from their definition."""
    from certmint.ca.keypolicy import _ROCA_MASKS

    published = [6, 30, 126, 1026, 5658, 107286, 199410, 8388606]
    assert [mask for _, mask in _ROCA_MASKS[:8]] == published


@pytest.mark.parametrize("role", ROLES)
def test_real_roca_key_is_refused(role: str) -> None:
    key = load_public(WEAK_KEYS / "roca-rsa2048-badkeys.pem")
    assert has_roca_fingerprint(key.public_numbers().n)
    assert "ROCA" in refusal(default_policy(), key, role)


@pytest.mark.parametrize("role", ROLES)
def test_constructed_roca_key_is_refused(role: str) -> None:
    key = roca_key().public_key()
    assert key.key_size == 2048
    assert has_roca_fingerprint(key.public_numbers().n)
    assert "ROCA" in refusal(default_policy(), key, role)


def test_a_near_miss_is_not_roca() -> None:
    """Control: one factor of ROCA form is not enough (the other is random)."""
    roca_p = roca_key().private_numbers().p
    q = good_rsa(2048).private_numbers().q
    assert not has_roca_fingerprint(roca_p * q)


# -- close primes: Fermat's method (BR 6.1.1.3(4)(c)) ----------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_close_primes_key_is_refused(role: str) -> None:
    key = close_primes_key()
    n = key.public_key().public_numbers().n
    p, q = key.private_numbers().p, key.private_numbers().q
    assert fermat_factor(n, FERMAT_ROUNDS) == (max(p, q), min(p, q))
    detail = refusal(default_policy(), key.public_key(), role)
    assert "Fermat" in detail
    assert str(p) not in detail and str(q) not in detail  # the rule, not the factors


@pytest.mark.parametrize("role", ROLES)
def test_real_square_modulus_is_refused(role: str) -> None:
    """badkeys' n = p^2 key: caught in round one because the search starts at
    ceil(sqrt(n)) (starting above floor(sqrt(n)) would miss it)."""
    key = load_public(WEAK_KEYS / "fermat-rsa2048-badkeys.pem")
    n = key.public_numbers().n
    assert math.isqrt(n) ** 2 == n
    assert fermat_factor(n, 1) == (math.isqrt(n), math.isqrt(n))
    assert "Fermat" in refusal(default_policy(), key, role)


def _product_found_in_round(target_round: int) -> int:
    """n = (m + d)(m - d) whose Fermat search succeeds exactly in round
    ``target_round`` (1-based): the smallest d with m - ceil(sqrt(n)) = round-1."""
    m = 2**1023 + 2**1022 + 12345

    def round_of(d: int) -> int:
        n = m * m - d * d
        root = math.isqrt(n)
        return m - (root if root * root == n else root + 1) + 1

    lo, hi = 1, 2**600
    while lo < hi:  # round_of is non-decreasing in d
        mid = (lo + hi) // 2
        if round_of(mid) < target_round:
            lo = mid + 1
        else:
            hi = mid
    assert round_of(lo) == target_round
    return m * m - lo * lo


@pytest.mark.parametrize(("found_in", "caught"), [(1, True), (99, True), (100, True), (101, False)])
def test_fermat_tries_exactly_100_rounds(found_in: int, caught: bool) -> None:
    n = _product_found_in_round(found_in)
    assert (fermat_factor(n, FERMAT_ROUNDS) is not None) is caught


def test_fewer_than_100_fermat_rounds_is_refused() -> None:
    with pytest.raises(ValueError):
        KeyPolicy(frozenset(), nothing_blocked, fermat_rounds=99)


# -- small factors, sizes, exponents -------------------------------------------------


def _odd_modulus(bits: int, factor: int = 1) -> int:
    rng = random.Random(bits * 31 + factor)
    while True:
        n = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        n -= n % factor
        if n.bit_length() == bits and n % 2 == 1:
            return n


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("factor", [3, 5, 751])
def test_modulus_with_a_small_factor_is_refused(factor: int, role: str) -> None:
    key = rsa.RSAPublicNumbers(65537, _odd_modulus(2048, factor)).public_key()
    assert "below 752" in refusal(KeyPolicy(frozenset(), nothing_blocked), key, role)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("bits", [1024, 2040, 2047, 2056, 3064, 4104, 8192])
def test_other_rsa_sizes_are_refused(bits: int, role: str) -> None:
    key = rsa.RSAPublicNumbers(65537, _odd_modulus(bits)).public_key()
    detail = refusal(default_policy(), key, role)
    assert f"{bits} bits" in detail


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("exponent", [3, 17, 65535, 65539, 2**255 + 1])
def test_exponents_other_than_65537_are_refused(exponent: int, role: str) -> None:
    n = good_rsa(2048).public_key().public_numbers().n
    key = rsa.RSAPublicNumbers(exponent, n).public_key()
    assert "only 65537" in refusal(default_policy(), key, role)


# -- curves and key types -----------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "curve", [ec.SECP521R1(), ec.SECP224R1(), ec.SECP256K1()], ids=["p521", "p224", "k256"]
)
def test_other_curves_are_refused(curve: ec.EllipticCurve, role: str) -> None:
    detail = refusal(default_policy(), ec.generate_private_key(curve).public_key(), role)
    assert curve.name in detail


def test_ed25519_is_an_account_key_only() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    accept(default_policy(), key, "account")
    assert "type is not allowed" in refusal(default_policy(), key, "certificate")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "make",
    [
        lambda: ed448.Ed448PrivateKey.generate().public_key(),
        lambda: x25519.X25519PrivateKey.generate().public_key(),
        lambda: "not a key",
    ],
    ids=["ed448", "x25519", "str"],
)
def test_other_key_types_are_refused(make: Callable[[], object], role: str) -> None:
    assert "type is not allowed" in refusal(default_policy(), make(), role)


def test_an_off_curve_point_never_becomes_a_key() -> None:
    """Why the policy checks only the curve: cryptography validates points."""
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    with pytest.raises(ValueError):
        ec.EllipticCurvePublicNumbers(numbers.x, numbers.y + 1, ec.SECP256R1()).public_key()
    with pytest.raises(ValueError):
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), b"\x00")


# -- blocked keys ---------------------------------------------------------------------------


def _spki_hex(key: object) -> str:
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("role", ROLES)
def test_blocked_keys_are_refused_and_others_pass(role: str) -> None:
    blocked_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    policy = KeyPolicy(frozenset(), blocked_by(frozenset({spki_sha256(blocked_key)})))
    assert "blocked" in refusal(policy, blocked_key, role)
    accept(policy, other, role)


def test_blocked_ed25519_account_key_is_refused() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    policy = KeyPolicy(frozenset(), blocked_by(frozenset({spki_sha256(key)})))
    assert "blocked" in refusal(policy, key, "account")


def test_the_blocked_hook_gets_the_spki_sha256() -> None:
    """The storage lookup plugged in later sees exactly the SPKI digest."""
    seen: list[bytes] = []

    def lookup(digest: bytes) -> bool:
        seen.append(digest)
        return False

    key = good_rsa(2048).public_key()
    KeyPolicy(frozenset(), blocked_by(frozenset(), lookup)).check_certificate_key(key)
    assert seen == [bytes.fromhex(_spki_hex(key))]
    assert len(seen[0]) == 32


def test_blocked_keys_file_formats() -> None:
    by_pem = ec.generate_private_key(ec.SECP384R1()).public_key()
    by_rsa_pem = good_rsa(2048).public_key()
    by_hex = ec.generate_private_key(ec.SECP256R1()).public_key()
    by_colons = ec.generate_private_key(ec.SECP256R1()).public_key()
    colons = ":".join(_spki_hex(by_colons)[i : i + 2] for i in range(0, 64, 2)).upper()
    text = "\n".join(
        [
            "# keys reported compromised",
            by_pem.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode(),
            by_rsa_pem.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
            ).decode(),
            _spki_hex(by_hex) + "  # by digest",
            colons,
            "",
        ]
    )
    digests = parse_blocked_keys(text)
    assert digests == {spki_sha256(k) for k in (by_pem, by_rsa_pem, by_hex, by_colons)}


@pytest.mark.parametrize("bad", ["abc\n", "00" * 31 + "\n", "not hex at all " * 5])
def test_malformed_blocked_keys_files_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_blocked_keys(bad)


# -- wiring into the PA ----------------------------------------------------------------


def test_policy_authority_delegates_to_its_key_policy() -> None:
    challenges = ("http-01", "dns-01", "tls-alpn-01")
    debian = load_public(DEBIAN_WEAK[0])
    default_pa = PolicyAuthority(PolicyConfig(), challenges)
    with pytest.raises(errors.BadPublicKey):
        default_pa.check_account_key(debian)
    with pytest.raises(errors.BadPublicKey):
        default_pa.check_certificate_key(debian)
    blocked = ec.generate_private_key(ec.SECP256R1()).public_key()
    custom = KeyPolicy(frozenset(), blocked_by(frozenset({spki_sha256(blocked)})))
    pa = PolicyAuthority(PolicyConfig(), challenges, key_policy=custom)
    pa.check_certificate_key(debian)  # not on this policy's (empty) list
    with pytest.raises(errors.BadPublicKey):
        pa.check_account_key(blocked)
