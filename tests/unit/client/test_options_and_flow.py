"""certbot's flag semantics and the flow's pure choices."""

from __future__ import annotations

import pytest

from certmint.client.errors import AcmeProblemError, ClientError, describe_problem
from certmint.client.flow import _plan, choose_profile
from certmint.client.options import parse
from certmint.protocol.messages import AuthorizationMsg, ChallengeMsg, Identifier
from certmint.protocol.problems import Problem


def test_webroot_paths_apply_to_the_domains_that_follow() -> None:
    args = parse(["certonly", "-w", "/a", "-d", "x.com,y.com", "-w", "/b", "-d", "z.com"])
    assert args.authenticator == "webroot"
    assert args.domains == ["x.com", "y.com", "z.com"]
    assert args.webroot_map == {"x.com": "/a", "y.com": "/a", "z.com": "/b"}


def test_domains_are_lowercased_and_deduplicated() -> None:
    args = parse(["certonly", "--standalone", "-d", "A.example.com", "-d", "a.example.com"])
    assert args.domains == ["a.example.com"]
    assert args.authenticator == "standalone"


def test_verb_defaults_to_run() -> None:
    assert parse([]).verb == "run"


@pytest.mark.parametrize(
    ("offered", "preferred", "required", "chosen"),
    [
        (["classic", "shortlived"], "shortlived", None, "shortlived"),
        (["classic"], "shortlived", None, None),  # preferred but not offered: CA default
        (["classic", "tlsserver"], None, "tlsserver", "tlsserver"),
        ([], None, None, None),
    ],
)
def test_profile_choice(offered: list[str], preferred: str | None, required: str | None,
                        chosen: str | None) -> None:
    assert choose_profile(offered, preferred, required) == chosen


def test_a_required_profile_the_ca_lacks_is_an_error() -> None:
    with pytest.raises(ClientError, match="does not offer profile 'tlsserver'"):
        choose_profile(["classic"], None, "tlsserver")


class _Auth:
    name = "standalone"
    challenge_types = ("http-01", "tls-alpn-01")

    def perform(self, tasks: object) -> None: ...

    def cleanup(self, tasks: object) -> None: ...


def _authz(*types: str) -> AuthorizationMsg:
    return AuthorizationMsg(
        identifier=Identifier("dns", "www.example.com"),
        status="pending",
        challenges=tuple(ChallengeMsg(t, f"https://ca/{t}", "pending", "tok" * 8) for t in types),
    )


def test_the_first_preferred_type_the_ca_offers_is_chosen() -> None:
    pending = _plan("https://ca/authz/1", _authz("dns-01", "tls-alpn-01"), _Auth(), "thumb")
    assert pending.task.challenge_type == "tls-alpn-01"
    assert pending.task.key_authorization == "tok" * 8 + ".thumb"


def test_no_common_challenge_type_is_one_clear_sentence() -> None:
    with pytest.raises(ClientError, match="answers http-01, tls-alpn-01, but the CA offers dns-01"):
        _plan("https://ca/authz/1", _authz("dns-01"), _Auth(), "thumb")


def test_problem_sentences_name_the_identifier() -> None:
    single = Problem(
        "rejectedIdentifier",
        "bad name",
        400,
        subproblems=(
            Problem("rejectedIdentifier", "bad name", 400, identifier=("dns", "x_y.com")),
        ),
    )
    assert describe_problem(single) == "x_y.com: bad name (rejectedIdentifier)"
    assert str(AcmeProblemError(Problem("unauthorized", "no", 403))) == "no (unauthorized)"
