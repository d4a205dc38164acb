"""``renewal/<name>.conf``: certbot's renewal configuration, read and written.

certbot stores how a certificate was obtained in a configobj file::

    version = 5.8.0
    archive_dir = /etc/letsencrypt/archive/example.com
    cert = /etc/letsencrypt/live/example.com/cert.pem
    ...
    [renewalparams]
    authenticator = webroot
    webroot_path = /var/www/html,
    [[webroot_map]]
    example.com = /var/www/html

We read and write the same files so that a user can move between certbot and
certmint in either direction. ``configparser`` cannot read nested
``[[sections]]`` or configobj's list and quoting rules, and configobj itself
is not a dependency of the agent, so this module carries a small, strict
reader and writer of that format:

- ``key = value``; ``#`` starts a comment outside quotes; indentation is free.
- A value is a string, or a list when it holds an unquoted comma
  (``a, b``; ``a,`` is a one-item list; a lone ``,`` the empty list).
- Items may be quoted with ``'`` or ``"``; a value holding both quote
  characters or a newline is triple-quoted (``'''`` or ``\"\"\"``), and may
  then span lines.
- ``[name]`` opens a section, ``[[name]]`` a section inside it.

The writer quotes exactly as configobj does, so configobj (and certbot) read
back every value we write unchanged. The reader accepts everything configobj
writes; a few contortions configobj tolerates when reading (such as
``"a"b"``, a quoted value with a stray quote inside) are refused here as a
broken file rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

ConfValue = Union[str, list[str], "ConfSection"]
ConfSection = dict[str, ConfValue]


class ConfSyntaxError(ValueError):
    """A configuration file we cannot read, or a value we cannot write safely."""


# ------------------------------------------------------------------ reading

_SECTION_LINE = re.compile(r"^\s*((?:\[\s*)+)(.*?)((?:\s*\])+)\s*(#.*)?$")
_KEY_LINE = re.compile(r"""^\s*("[^"]*"|'[^']*'|[^'"=\s][^=]*?)\s*=\s*(.*)$""")
_TRIPLE_ONE_LINE = {
    "'''": re.compile(r"^'''(.*?)'''\s*(#.*)?$"),
    '"""': re.compile(r'^"""(.*?)"""\s*(#.*)?$'),
}
_TRIPLE_LAST_LINE = {
    "'''": re.compile(r"^(.*?)'''\s*(#.*)?$"),
    '"""': re.compile(r'^(.*?)"""\s*(#.*)?$'),
}


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _at_end(text: str, i: int) -> bool:
    return i >= len(text) or text[i] == "#"


def parse_value(text: str) -> str | list[str]:
    """One value (everything after ``=``), with its inline comment dropped."""
    i = _skip_spaces(text, 0)
    if _at_end(text, i):
        return ""
    if text[i] == ",":
        if _at_end(text, _skip_spaces(text, i + 1)):
            return []
        raise ConfSyntaxError("a list may not start with a comma")
    items: list[str] = []
    commas = 0
    while True:
        if text[i] in "'\"":
            end = text.find(text[i], i + 1)
            if end < 0:
                raise ConfSyntaxError(f"unbalanced quote in {text!r}")
            items.append(text[i + 1 : end])
            i = end + 1
        else:
            j = i
            while j < len(text) and text[j] not in ",#":
                j += 1
            items.append(text[i:j].rstrip(" \t"))
            i = j
        i = _skip_spaces(text, i)
        if _at_end(text, i):
            break
        if text[i] != ",":
            raise ConfSyntaxError(f"unexpected text after a quoted value in {text!r}")
        commas += 1
        i = _skip_spaces(text, i + 1)
        if _at_end(text, i):
            break  # a trailing comma: "a," is a one-item list
        if text[i] == ",":
            raise ConfSyntaxError(f"empty list item in {text!r}")
    return items[0] if commas == 0 else items


def _triple_quoted(lines: list[str], index: int, value: str) -> tuple[str, int]:
    """A triple-quoted value starting on ``lines[index]``; returns (value, last index)."""
    quote = value[:3]
    one_line = _TRIPLE_ONE_LINE[quote].match(value)
    if one_line is not None:
        return one_line.group(1), index
    if quote in value[3:]:
        raise ConfSyntaxError(f"line {index + 1}: malformed triple-quoted value")
    parts = [value[3:]]
    for last in range(index + 1, len(lines)):
        if quote in lines[last]:
            closing = _TRIPLE_LAST_LINE[quote].match(lines[last])
            if closing is None:
                raise ConfSyntaxError(f"line {last + 1}: text after a closing {quote}")
            parts.append(closing.group(1))
            return "\n".join(parts), last
        parts.append(lines[last])
    raise ConfSyntaxError(f"line {index + 1}: triple-quoted value never closed")


def parse_conf(text: str) -> ConfSection:
    """Parse configobj text into nested dicts (insertion order kept)."""
    root: ConfSection = {}
    stack: list[ConfSection] = [root]  # stack[d] is the open section at depth d
    lines = text.removeprefix("\ufeff").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        section = _SECTION_LINE.match(line)
        if section is not None:
            opening, raw_name, closing = section.group(1), section.group(2), section.group(3)
            depth = opening.count("[")
            name = _unquote(raw_name.strip())
            if depth != closing.count("]") or not name:
                raise ConfSyntaxError(f"line {index + 1}: malformed section marker")
            if depth > len(stack):
                raise ConfSyntaxError(f"line {index + 1}: section {name!r} nested too deep")
            del stack[depth:]
            parent = stack[-1]
            if name in parent:
                raise ConfSyntaxError(f"line {index + 1}: duplicate section {name!r}")
            child: ConfSection = {}
            parent[name] = child
            stack.append(child)
            index += 1
            continue
        keyed = _KEY_LINE.match(line)
        if keyed is None:
            raise ConfSyntaxError(f"line {index + 1}: expected 'key = value', got {stripped!r}")
        key, raw_value = _unquote(keyed.group(1)), keyed.group(2)
        value: str | list[str]
        if raw_value[:3] in ("'''", '"""'):
            value, index = _triple_quoted(lines, index, raw_value)
        else:
            try:
                value = parse_value(raw_value)
            except ConfSyntaxError as exc:
                raise ConfSyntaxError(f"line {index + 1}: {exc}") from None
        target = stack[-1]
        if key in target:
            raise ConfSyntaxError(f"line {index + 1}: duplicate key {key!r}")
        target[key] = value
        index += 1
    return root


# ------------------------------------------------------------------ writing

# configobj quotes a value that starts or ends with one of these.
_EDGE_CHARACTERS = " \r\n\v\t'\""


def _quote_single(value: str) -> str:
    if "'" in value and '"' in value:
        raise ConfSyntaxError(f"{value!r} holds both quote characters and cannot be a list item")
    return f"'{value}'" if '"' in value else f'"{value}"'


# Characters str.splitlines() breaks on besides "\n": a reader would split the
# value there, so no value may carry them.
_OTHER_LINE_BREAKS = re.compile("[\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def quote_value(value: str, *, multiline: bool = True) -> str:
    """Quote one string exactly as configobj's ``_quote`` does."""
    if not value:
        return '""'
    if _OTHER_LINE_BREAKS.search(value):
        raise ConfSyntaxError(f"{value!r} holds a line-break character")
    if multiline and (("'" in value and '"' in value) or "\n" in value):
        if '"""' in value and "'''" in value:
            raise ConfSyntaxError(f"{value!r} holds both kinds of triple quote")
        # configobj prefers '''; it would wrap a value holding ''' in ''' too,
        # which does not read back, so there we switch to """.
        return f'"""{value}"""' if "'''" in value else f"'''{value}'''"
    if "\n" in value:
        raise ConfSyntaxError(f"{value!r} holds a line break and cannot be a list item")
    if value[0] in _EDGE_CHARACTERS or value[-1] in _EDGE_CHARACTERS or "," in value:
        return _quote_single(value)
    if "#" in value:
        return _quote_single(value)
    return value


def format_value(value: str | list[str] | tuple[str, ...]) -> str:
    if isinstance(value, str):
        return quote_value(value)
    if not value:
        return ","
    if len(value) == 1:
        return quote_value(value[0], multiline=False) + ","
    return ", ".join(quote_value(item, multiline=False) for item in value)


_SAFE_NAME = re.compile(r"[^\s'\"=#,\[\]][^\n\r=#,\[\]]*")


def _check_name(name: str) -> str:
    # Keys and section names are written bare; refuse anything that would
    # read back differently (webroot_map keys are domain names).
    if not _SAFE_NAME.fullmatch(name) or name != name.strip() or _OTHER_LINE_BREAKS.search(name):
        raise ConfSyntaxError(f"{name!r} cannot be written as a configuration key")
    return name


def format_conf(doc: Mapping[str, object]) -> str:
    """configobj text for nested dicts: a section's values, then its subsections."""
    lines: list[str] = []

    def emit(section: Mapping[str, object], depth: int) -> None:
        subsections: list[tuple[str, Mapping[str, object]]] = []
        for key, value in section.items():
            if isinstance(value, Mapping):
                subsections.append((key, value))
            elif isinstance(value, str | list | tuple):
                lines.append(f"{_check_name(key)} = {format_value(value)}")
            else:
                raise ConfSyntaxError(f"{key!r}: cannot write a {type(value).__name__}")
        for key, value in subsections:
            lines.append("[" * (depth + 1) + _check_name(key) + "]" * (depth + 1))
            emit(value, depth + 1)

    emit(doc, 0)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ renewal parameters


@dataclass(frozen=True)
class RenewalParams:
    """How a certificate was obtained, so that ``renew`` can do it again."""

    server: str
    account: str
    authenticator: str
    key_type: str = "ecdsa"  # "ecdsa" | "rsa", certbot's names
    rsa_key_size: int = 2048
    elliptic_curve: str = "secp256r1"
    reuse_key: bool = False
    domains: tuple[str, ...] = ()
    webroot_map: dict[str, str] = field(default_factory=dict)
    preferred_chain: str | None = None
    preferred_profile: str | None = None
    required_profile: str | None = None
    http01_port: int | None = None
    http01_address: str | None = None
    pre_hook: str | None = None
    post_hook: str | None = None
    deploy_hook: str | None = None
    manual_auth_hook: str | None = None
    manual_cleanup_hook: str | None = None
    dns_rfc2136_credentials: str | None = None
    # renewalparams we do not interpret (certbot's config_dir, pref_challs,
    # other plugins' options), carried through unchanged.
    extra: dict[str, str | tuple[str, ...]] = field(default_factory=dict)


# Field ↔ certbot key for the optional string parameters. certbot writes the
# deploy hook as "renew_hook" so that older certbots can still read the file.
_OPTIONAL_STRINGS = {
    "preferred_chain": "preferred_chain",
    "preferred_profile": "preferred_profile",
    "required_profile": "required_profile",
    "http01_address": "http01_address",
    "pre_hook": "pre_hook",
    "post_hook": "post_hook",
    "deploy_hook": "renew_hook",
    "manual_auth_hook": "manual_auth_hook",
    "manual_cleanup_hook": "manual_cleanup_hook",
    "dns_rfc2136_credentials": "dns_rfc2136_credentials",
}
# Keys this module interprets; everything else in [renewalparams] is "extra".
_KNOWN_KEYS = frozenset(
    {
        "server", "account", "authenticator", "key_type", "rsa_key_size",
        "elliptic_curve", "reuse_key", "domains", "webroot_path", "webroot_map",
        "http01_port", "deploy_hook", *_OPTIONAL_STRINGS.values(),
    }
)  # fmt: skip
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def params_to_section(params: RenewalParams) -> ConfSection:
    """The ``[renewalparams]`` section certbot would write for these parameters."""
    section: ConfSection = {
        "authenticator": params.authenticator,
        "server": params.server,
        "account": params.account,
        "key_type": params.key_type,
        "rsa_key_size": str(params.rsa_key_size),
        "elliptic_curve": params.elliptic_curve,
        "reuse_key": "True" if params.reuse_key else "False",
    }
    # certbot keeps no list of names (it reads them from the certificate);
    # we record the order the user gave, and certbot ignores the key.
    if params.domains:
        section["domains"] = list(params.domains)
    if params.http01_port is not None:
        section["http01_port"] = str(params.http01_port)
    for attribute, key in _OPTIONAL_STRINGS.items():
        value = getattr(params, attribute)
        if value is not None:
            section[key] = value
    for key, extra_value in params.extra.items():
        if key in _KNOWN_KEYS:
            continue
        section[key] = extra_value if isinstance(extra_value, str) else list(extra_value)
    if params.webroot_map:
        # certbot's webroot plugin writes both: the paths in order, and the map.
        paths = list(dict.fromkeys(params.webroot_map.values()))
        section["webroot_path"] = paths
        section["webroot_map"] = dict(params.webroot_map)
    return section


def _string(section: ConfSection, key: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfSyntaxError(f"renewalparams: {key} should be a single value")
    return value


def _integer(section: ConfSection, key: str) -> int | None:
    text = _string(section, key)
    if text is None or text == "" or text == "None":
        return None
    if not text.isdigit() or len(text) > 6:
        raise ConfSyntaxError(f"renewalparams: {key} = {text!r} is not a number")
    return int(text)


def _boolean(section: ConfSection, key: str) -> bool:
    text = _string(section, key)
    if text is None or text == "":
        return False
    if text.lower() in _TRUE_WORDS:
        return True
    if text.lower() in _FALSE_WORDS:
        return False
    raise ConfSyntaxError(f"renewalparams: {key} = {text!r} is neither True nor False")


def _string_list(section: ConfSection, key: str) -> tuple[str, ...]:
    value = section.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(value)
    raise ConfSyntaxError(f"renewalparams: {key} should be a list")


def params_from_section(section: ConfSection) -> RenewalParams:
    """Renewal parameters from a ``[renewalparams]`` section (ours or certbot's)."""
    domains = _string_list(section, "domains")
    raw_map = section.get("webroot_map", {})
    if not isinstance(raw_map, dict):
        raise ConfSyntaxError("renewalparams: webroot_map should be a section")
    webroot_map: dict[str, str] = {}
    for domain, path in raw_map.items():
        if not isinstance(path, str):
            raise ConfSyntaxError(f"renewalparams: webroot_map {domain} should be one path")
        webroot_map[domain] = path
    # A file with webroot_path but no map: certbot serves every name from the
    # last path given.
    webroot_paths = _string_list(section, "webroot_path")
    if webroot_paths and not webroot_map:
        webroot_map = dict.fromkeys(domains, webroot_paths[-1])
    optional = {attribute: _string(section, key) for attribute, key in _OPTIONAL_STRINGS.items()}
    if optional["deploy_hook"] is None:
        optional["deploy_hook"] = _string(section, "deploy_hook")
    extra: dict[str, str | tuple[str, ...]] = {}
    for key, value in section.items():
        if key in _KNOWN_KEYS or isinstance(value, dict):
            continue
        extra[key] = value if isinstance(value, str) else tuple(value)
    return RenewalParams(
        server=_string(section, "server") or "",
        account=_string(section, "account") or "",
        authenticator=_string(section, "authenticator") or "",
        key_type=(_string(section, "key_type") or "ecdsa").lower(),
        rsa_key_size=_integer(section, "rsa_key_size") or 2048,
        elliptic_curve=_string(section, "elliptic_curve") or "secp256r1",
        reuse_key=_boolean(section, "reuse_key"),
        domains=domains,
        webroot_map=webroot_map,
        http01_port=_integer(section, "http01_port"),
        extra=extra,
        **optional,
    )
