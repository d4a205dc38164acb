"""Certificate profiles (draft-ietf-acme-profiles) in the policy authority: which
profile an order gets, which identifier types and how many names each allows."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from certmint.ca import errors
from certmint.ca.config import (
    CLASSIC,
    SHORTLIVED,
    TLSSERVER,
    PolicyConfig,
    ProfileConfig,
)
from certmint.ca.policy import PolicyAuthority
from certmint.protocol.messages import Identifier

ALL_CHALLENGES = ("http-01", "dns-01", "tls-alpn-01")


def make_pa(**changes: object) -> PolicyAuthority:
    return PolicyAuthority(replace(PolicyConfig(), **changes), ALL_CHALLENGES)  # type: ignore[arg-type]


def idents(*pairs: tuple[str, str]) -> tuple[Identifier, ...]:
    return tuple(Identifier(t, v) for t, v in pairs)


@pytest.mark.parametrize(
    ("profile", "validity", "max_names", "types", "reuse", "pending"),
    [
        # Let's Encrypt's published limits (letsencrypt.org/docs/profiles).
        (CLASSIC, timedelta(days=90), 100, ("dns",), timedelta(days=30), timedelta(days=7)),
        (TLSSERVER, timedelta(days=45), 100, ("dns",), timedelta(days=7), timedelta(days=7)),
        (
            SHORTLIVED,
            timedelta(hours=160),
            25,
            ("dns", "ip"),
            timedelta(hours=7),
            timedelta(hours=7),
        ),
    ],
    ids=lambda v: v.name if isinstance(v, ProfileConfig) else None,
)
def test_shipped_profiles(
    profile: ProfileConfig,
    validity: timedelta,
    max_names: int,
    types: tuple[str, ...],
    reuse: timedelta,
    pending: timedelta,
) -> None:
    assert (profile.validity, profile.max_names, profile.identifier_types) == (
        validity,
        max_names,
        types,
    )
    assert (profile.authz_reuse, profile.pending_authz_lifetime) == (reuse, pending)
    # No shipped profile carries what pkilint warns about (lint refuses it).
    assert not profile.common_name and not profile.rsa_key_encipherment
    assert profile.description


def test_the_default_is_classic_and_all_three_are_offered() -> None:
    pa = make_pa()
    assert [p.name for p in pa.profiles] == ["classic", "tlsserver", "shortlived"]
    assert pa.profile(None) is CLASSIC
    assert pa.profile("shortlived") is SHORTLIVED
    assert make_pa(default_profile="tlsserver").profile(None) is TLSSERVER


def test_unknown_profile_is_invalid_profile() -> None:
    with pytest.raises(errors.InvalidProfile) as refused:
        make_pa().profile("shortlived-9000")
    assert "classic, shortlived, tlsserver" in refused.value.detail


def test_a_default_profile_that_is_not_offered_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="default profile"):
        make_pa(default_profile="tlsserver", profiles=(CLASSIC,))


@pytest.mark.parametrize("profile", [CLASSIC, TLSSERVER], ids=lambda p: p.name)
def test_ip_identifiers_only_under_shortlived(profile: ProfileConfig) -> None:
    pa = make_pa()
    with pytest.raises(errors.AcmeError) as refused:
        pa.check_order_identifiers(idents(("dns", "a.example.com"), ("ip", "8.8.8.8")), profile)
    exc = refused.value
    assert isinstance(exc, errors.RejectedIdentifier)
    (sub,) = exc.subproblems
    assert sub.identifier == ("ip", "8.8.8.8")
    assert f'the "{profile.name}" profile does not allow ip identifiers' in sub.detail
    assert 'request the "shortlived" profile' in sub.detail
    assert pa.check_order_identifiers(idents(("ip", "8.8.8.8")), SHORTLIVED) == (("ip", "8.8.8.8"),)


def test_no_profile_for_ips_says_so() -> None:
    pa = make_pa(profiles=(CLASSIC, TLSSERVER))
    with pytest.raises(errors.AcmeError) as refused:
        pa.check_order_identifiers(idents(("ip", "8.8.8.8")), CLASSIC)
    assert "no profile here allows them" in refused.value.detail


def test_unknown_identifier_types_stay_unsupported() -> None:
    with pytest.raises(errors.UnsupportedIdentifier):
        make_pa().check_order_identifiers(idents(("email", "a@example.com")), CLASSIC)


@pytest.mark.parametrize(("profile", "limit"), [(CLASSIC, 100), (TLSSERVER, 100), (SHORTLIVED, 25)])
def test_each_profile_has_its_name_limit(profile: ProfileConfig, limit: int) -> None:
    pa = make_pa(max_names_per_order=1000)
    names = [("dns", f"n{i}.example.com") for i in range(limit + 1)]
    assert len(pa.check_order_identifiers(idents(*names[:limit]), profile)) == limit
    with pytest.raises(errors.RejectedIdentifier) as refused:
        pa.check_order_identifiers(idents(*names), profile)
    assert f"at most {limit} are allowed by the {profile.name} profile" in refused.value.detail


def test_the_ca_wide_limit_still_applies() -> None:
    pa = make_pa(max_names_per_order=3)
    names = idents(*[("dns", f"n{i}.example.com") for i in range(4)])
    with pytest.raises(errors.RejectedIdentifier, match=r"at most 3 are allowed$"):
        pa.check_order_identifiers(names, SHORTLIVED)


def test_finalize_recheck_follows_a_narrowed_profile() -> None:
    """An operator who narrows a profile after an order was placed: the
    order's identifiers must still fit when it is finalized."""
    pa = make_pa()
    pa.check_identifiers_fit_profile((("dns", "a.example.com"), ("ip", "8.8.8.8")), SHORTLIVED)
    with pytest.raises(errors.RejectedIdentifier, match="does not allow ip identifiers"):
        pa.check_identifiers_fit_profile((("ip", "8.8.8.8"),), CLASSIC)
    narrow = replace(SHORTLIVED, max_names=1)
    with pytest.raises(errors.RejectedIdentifier, match="at most 1"):
        pa.check_identifiers_fit_profile((("dns", "a.example.com"), ("ip", "8.8.8.8")), narrow)
