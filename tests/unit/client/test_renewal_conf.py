"""The configobj-format reader and writer, checked against configobj itself
(certbot's library), and the mapping of certbot's [renewalparams] keys."""

from __future__ import annotations

import io

import configobj  # type: ignore[import-untyped]
import pytest

from certmint.client.renewal_conf import (
    ConfSyntaxError,
    RenewalParams,
    format_conf,
    params_from_section,
    params_to_section,
    parse_conf,
    quote_value,
)


def configobj_reads(text: str) -> dict[str, object]:
    parsed: dict[str, object] = configobj.ConfigObj(
        text.splitlines(), encoding="utf-8", raise_errors=True
    ).dict()
    return parsed


READ_CASES = [
    ("a = b", {"a": "b"}),
    ("a=b", {"a": "b"}),
    ("  a   =   b c  ", {"a": "b c"}),
    ("a =", {"a": ""}),
    ('a = ""', {"a": ""}),
    ("a = b # comment", {"a": "b"}),
    ("# only a comment\n\na = 1", {"a": "1"}),
    ("a = x,", {"a": ["x"]}),
    ("a = ,", {"a": []}),
    ("a = x, y ,z", {"a": ["x", "y", "z"]}),
    ("a = x, y,", {"a": ["x", "y"]}),
    ("a = 'x, y'", {"a": "x, y"}),
    ('a = "x # y"', {"a": "x # y"}),
    ("a = 'echo \"a\"'", {"a": 'echo "a"'}),
    ("a = \"echo 'hi, there' # x\"", {"a": "echo 'hi, there' # x"}),
    ('a = echo "a"', {"a": 'echo "a"'}),
    ("a = 'x', \"y\",", {"a": ["x", "y"]}),
    ('a = """it\'s "quoted" """', {"a": 'it\'s "quoted" '}),
    ("a = '''x\"\"\"y'''   # c", {"a": 'x"""y'}),
    ('a = """line one\nline two\nthree"""', {"a": "line one\nline two\nthree"}),
    ("a = '''x'''y'''", {"a": "x'''y"}),
    ('"quoted key" = v', {"quoted key": "v"}),
    ("path = /var/www/html", {"path": "/var/www/html"}),
    ("url = https://127.0.0.1:14000/dir", {"url": "https://127.0.0.1:14000/dir"}),
    (
        "top = 1\n[s]\nk = v\n[[sub]]\nx.example = /w\n[t]\nq = r",
        {"top": "1", "s": {"k": "v", "sub": {"x.example": "/w"}}, "t": {"q": "r"}},
    ),
    (
        "[s]\n  [[sub]]\n    k = v\n  [[other]]\n    j = w",
        {"s": {"sub": {"k": "v"}, "other": {"j": "w"}}},
    ),
    ("[ s ]\nk = v", {"s": {"k": "v"}}),
    ("\ufeffa = b", {"a": "b"}),
]


@pytest.mark.parametrize(("text", "expected"), READ_CASES)
def test_reader_agrees_with_configobj(text: str, expected: dict[str, object]) -> None:
    assert parse_conf(text) == expected
    if not text.startswith("\ufeff"):
        assert configobj_reads(text) == expected


BAD_TEXTS = [
    "a = 'unbalanced",
    "a = b\na = c",
    "[s]\n[s]",
    "[[too deep]]",
    "[s]]",
    "a = 'x' y",
    "a = x,,y",
    "a = , x",
    "no equals sign here",
    'a = """never closed\nstill open',
    'a = """x"""\nb = """y',
]


@pytest.mark.parametrize("text", BAD_TEXTS)
def test_reader_refuses_broken_files(text: str) -> None:
    with pytest.raises(ConfSyntaxError):
        parse_conf(text)


TRICKY_VALUES = [
    "plain",
    "",
    " leading space",
    "trailing space ",
    "a, b",
    "hash # inside",
    'double "quotes"',
    "single 'quotes'",
    "both ' and \" quotes",
    "both ' and \" # and hash",
    'has """ and \' and "',
    "has ''' and \"",
    "multi\nline",
    "'starts with quote",
    '"wrapped"',
    "tab\tinside",
    "/usr/bin/systemctl reload nginx && echo 'done, really'",
    "ünïcödé ✓",
]


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_writer_quotes_like_configobj_and_reads_back(value: str) -> None:
    doc = {"key": value, "items": [value, "second"] if "\n" not in value else ["x"]}
    if "\n" in value or ("'" in value and '"' in value):
        doc["items"] = ["x", "y"]
    text = format_conf(doc)
    assert parse_conf(text) == doc
    assert configobj_reads(text) == doc
    if '"""' in value or "'''" in value:
        return  # configobj would write this one unreadably; ours reads back (above)
    # Byte for byte what configobj writes.
    expected = configobj.ConfigObj(encoding="utf-8")
    expected.update(doc)
    out = io.BytesIO()
    expected.write(outfile=out)
    assert text.encode() == out.getvalue().replace(b"\r\n", b"\n")


@pytest.mark.parametrize("items", [[], ["one"], ["a", "b c", "d,e", "f # g"]])
def test_lists_round_trip(items: list[str]) -> None:
    text = format_conf({"l": items})
    assert parse_conf(text) == {"l": items}
    assert configobj_reads(text) == {"l": items}


@pytest.mark.parametrize(
    "doc",
    [
        {"k": "a'''b\"\"\"c"},  # both triple quotes: configobj cannot either
        {"l": ["multi\nline", "x"]},  # list items cannot span lines
        {"l": ["both ' and \"", "x"]},
        {"k": "carriage\rreturn"},
        {"bad=key": "v"},
        {" spaced": "v"},
        {"[x]": "v"},
        {"k": 3},
    ],
)
def test_writer_refuses_what_would_not_read_back(doc: dict[str, object]) -> None:
    with pytest.raises(ConfSyntaxError):
        format_conf(doc)


def test_quote_value_leaves_plain_values_bare() -> None:
    assert quote_value("webroot") == "webroot"
    assert quote_value("/var/www/html") == "/var/www/html"


# ---------------------------------------------------------------- renewal parameters

CERTBOT_WRITTEN = """\
version = 5.8.0
archive_dir = /etc/letsencrypt/archive/a.example.com
cert = /etc/letsencrypt/live/a.example.com/cert.pem
privkey = /etc/letsencrypt/live/a.example.com/privkey.pem
chain = /etc/letsencrypt/live/a.example.com/chain.pem
fullchain = /etc/letsencrypt/live/a.example.com/fullchain.pem

# Options used in the renewal process
[renewalparams]
reuse_key = True
account = 350af8dbdab9721b9292e56859961070
rsa_key_size = 2048
key_type = rsa
pre_hook = 'echo "a"'
config_dir = /etc/letsencrypt
server = https://127.0.0.1:60977/directory
authenticator = webroot
webroot_path = /srv/www,
renew_hook = "echo 'hi, there' # x"
pref_challs = http-01,
[[webroot_map]]
a.example.com = /srv/www
b.example.com = /srv/www
"""


def test_certbot_written_renewal_params() -> None:
    doc = parse_conf(CERTBOT_WRITTEN)
    assert doc["archive_dir"] == "/etc/letsencrypt/archive/a.example.com"
    section = doc["renewalparams"]
    assert isinstance(section, dict)
    params = params_from_section(section)
    assert params.server == "https://127.0.0.1:60977/directory"
    assert params.account == "350af8dbdab9721b9292e56859961070"
    assert params.authenticator == "webroot"
    assert (params.key_type, params.rsa_key_size, params.reuse_key) == ("rsa", 2048, True)
    assert params.pre_hook == 'echo "a"'
    assert params.deploy_hook == "echo 'hi, there' # x"
    assert params.webroot_map == {"a.example.com": "/srv/www", "b.example.com": "/srv/www"}
    assert params.extra == {"config_dir": "/etc/letsencrypt", "pref_challs": ("http-01",)}


def full_params() -> RenewalParams:
    return RenewalParams(
        server="https://acme-v02.api.letsencrypt.org/directory",
        account="abc",
        authenticator="manual",
        key_type="rsa",
        rsa_key_size=4096,
        elliptic_curve="secp384r1",
        reuse_key=True,
        domains=("example.com", "www.example.com", "192.0.2.1"),
        webroot_map={"example.com": "/srv/a", "www.example.com": "/srv/b"},
        preferred_chain="ISRG Root X1",
        preferred_profile="shortlived",
        required_profile="tlsserver",
        http01_port=8080,
        http01_address="127.0.0.1",
        pre_hook="systemctl stop nginx",
        post_hook='echo "done, really" # not a comment',
        deploy_hook="cp $RENEWED_LINEAGE/*.pem '/etc/it''s'",
        manual_auth_hook="/usr/local/bin/auth.sh --flag",
        manual_cleanup_hook="/usr/local/bin/cleanup.sh",
        dns_rfc2136_credentials="/etc/letsencrypt/rfc2136.ini",
        extra={"config_dir": "/etc/letsencrypt", "pref_challs": ("dns-01", "http-01")},
    )


def test_params_round_trip_through_text_and_configobj() -> None:
    params = full_params()
    text = format_conf({"version": "0.1.0", "renewalparams": params_to_section(params)})
    section = parse_conf(text)["renewalparams"]
    assert isinstance(section, dict)
    assert params_from_section(section) == params
    theirs = configobj_reads(text)["renewalparams"]
    assert isinstance(theirs, dict)
    # certbot's key names, as certbot reads them.
    assert theirs["renew_hook"] == params.deploy_hook
    assert theirs["rsa_key_size"] == "4096"
    assert theirs["reuse_key"] == "True"
    assert theirs["webroot_map"] == params.webroot_map
    assert theirs["webroot_path"] == ["/srv/a", "/srv/b"]
    assert theirs["pref_challs"] == ["dns-01", "http-01"]


def test_minimal_params_round_trip() -> None:
    params = RenewalParams(server="https://ca/dir", account="", authenticator="standalone")
    section = parse_conf(format_conf({"renewalparams": params_to_section(params)}))
    assert params_from_section(section["renewalparams"]) == params  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rsa_key_size = big", "not a number"),
        ("reuse_key = maybe", "neither True nor False"),
        ("server = a, b", "single value"),
        ("webroot_map = x", "should be a section"),
    ],
)
def test_bad_renewal_params(text: str, message: str) -> None:
    section = parse_conf(text)
    with pytest.raises(ConfSyntaxError, match=message):
        params_from_section(section)


def test_deploy_hook_key_is_also_read() -> None:
    params = params_from_section({"deploy_hook": "reload", "server": "s"})
    assert params.deploy_hook == "reload"


def test_webroot_path_without_map_serves_every_domain_from_the_last_path() -> None:
    params = params_from_section(
        {"domains": ["a.example", "b.example"], "webroot_path": ["/x", "/y"]}
    )
    assert params.webroot_map == {"a.example": "/y", "b.example": "/y"}
