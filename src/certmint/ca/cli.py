"""``certmint-ca``: serve the CA, and operate it (EAB keys).

This is the top of the program: the only place that reads the real clock,
the environment and the terminal, and turns every failure into one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from certmint.ca.admin_cli import add_revoke_parser
from certmint.ca.admin_cli import run as run_admin_revoke
from certmint.ca.ceremony_cli import add_parser as add_ceremony_parser
from certmint.ca.ceremony_cli import run as run_ceremony
from certmint.ca.config import (
    CHALLENGE_TYPES,
    DEFAULT_CHALLENGES,
    DEFAULT_PROFILES,
    CAConfig,
    ChaosConfig,
    PolicyConfig,
)
from certmint.ca.crl_cli import add_crl_arguments, crl_config
from certmint.ca.perspective_cli import PerspectiveCliError, add_private_network_argument
from certmint.ca.perspective_cli import add_parser as add_perspective_parser
from certmint.ca.perspective_cli import run as run_perspective

DEFAULT_DATA_DIR = "certmint-ca-data"
DEV_DNS = ("127.0.0.1", 8053)
DEV_HTTP01_PORT = 5002
DEV_TLSALPN01_PORT = 5001

log = logging.getLogger("certmint.ca")


class CliError(Exception):
    """A failure to report as one plain line."""


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise CliError(f"{what} must look like HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard listen address, not a bind
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certmint-ca", description="certmint's ACME certificate authority (RFC 8555)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the CA (ACME over HTTPS + management API)")
    serve.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    serve.add_argument("--listen", default="127.0.0.1:14000", help="ACME HTTPS address")
    serve.add_argument("--management-listen", default="127.0.0.1:15000")
    serve.add_argument("--base-url", help="public ACME base URL (default from --listen)")
    serve.add_argument("--management-base-url", help="public management/CRL base URL")
    serve.add_argument("--database-url", help="default: SQLite file in the data dir")
    serve.add_argument("--http01-port", type=int, help="port the VA uses for http-01 (80)")
    serve.add_argument("--tlsalpn01-port", type=int, help="port for tls-alpn-01 (443)")
    serve.add_argument("--dns-resolver", action="append", default=[], metavar="HOST:PORT")
    serve.add_argument("--allow-private-addresses", action="store_true")
    add_private_network_argument(serve)
    serve.add_argument(
        "--weak-keys-file",
        metavar="FILE",
        help="more Debian weak-key fingerprints (openssl-vulnkey lists or Boulder's "
        "JSON list), refused besides the shipped ones",
    )
    serve.add_argument(
        "--blocked-keys-file",
        metavar="FILE",
        help="keys to refuse: PEM public keys or SHA-256 hex digests of their "
        "SubjectPublicKeyInfo, one a line",
    )
    serve.add_argument(
        "--allow-unlisted-tlds",
        action="store_true",
        help="accept names whose TLD is not on the Public Suffix List (.test, .internal)",
    )
    serve.add_argument(
        "--allow-private-ip-identifiers",
        action="store_true",
        help="accept ip identifiers in special-purpose ranges (loopback, RFC 1918, ...)",
    )
    serve.add_argument(
        "--blocked-names-file",
        metavar="FILE",
        help="names to refuse, one a line; '*.NAME' refuses NAME and all its subdomains",
    )
    serve.add_argument(
        "--max-names", type=int, default=None, help="most identifiers in one order (100)"
    )
    serve.add_argument(
        "--default-profile",
        default=PolicyConfig.default_profile,
        choices=[p.name for p in DEFAULT_PROFILES],
        help="profile for orders that name none (draft-ietf-acme-profiles; default classic)",
    )
    serve.add_argument(
        "--enable-challenge",
        action="append",
        default=[],
        choices=CHALLENGE_TYPES,
        metavar="TYPE",
        help=f"also offer this challenge type (repeatable; on by default: "
        f"{', '.join(DEFAULT_CHALLENGES)}; also: "
        f"{', '.join(t for t in CHALLENGE_TYPES if t not in DEFAULT_CHALLENGES)})",
    )
    serve.add_argument(
        "--disable-challenge",
        action="append",
        default=[],
        choices=CHALLENGE_TYPES,
        metavar="TYPE",
        help="do not offer this challenge type (repeatable)",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="local playground: test DNS on 127.0.0.1:8053 answering 127.0.0.1 for "
        "every name, http-01 on port 5002, tls-alpn-01 on port 5001; names under "
        "unlisted TLDs and private ip identifiers accepted",
    )
    serve.add_argument("--terms-of-service", help="URL clients must agree to")
    serve.add_argument("--eab-required", action="store_true")
    serve.add_argument(
        "--ocsp", action="store_true", help="OCSP responder (RFC 6960) at MGMT-URL/ocsp, in AIA"
    )
    serve.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    serve.add_argument("--chaos-nonce-reject", type=float, default=0.0, metavar="PCT")
    serve.add_argument("--chaos-validation-delay", type=float, default=0.0, metavar="SECONDS")
    serve.add_argument("--chaos-authz-reuse", type=float, default=None, metavar="PCT")
    serve.add_argument("--chaos-seed", type=int, default=None)
    serve.add_argument(
        "--remote-va",
        action="append",
        default=[],
        metavar="REGION=URL",
        help="a remote VA perspective (certmint-ca va-perspective) that must corroborate "
        "each validation (BR 3.2.2.9); repeatable",
    )
    serve.add_argument("--remote-va-secret-file", metavar="PATH", help="shared secret file")
    serve.add_argument("--remote-va-timeout", type=float, default=10.0, metavar="SECONDS")
    serve.add_argument(
        "--issuers-file",
        metavar="ISSUERS.toml",
        help="roots and issuing intermediates (key files or PKCS#11 keys), as written by "
        "`certmint-ca ceremony run`; default: a development hierarchy in the data dir",
    )
    add_crl_arguments(serve)

    add_perspective_parser(sub)
    add_ceremony_parser(sub)

    eab = sub.add_parser("eab", help="external account binding keys")
    eab_sub = eab.add_subparsers(dest="eab_command", required=True)
    for name, text in (("create", "create an EAB key"), ("list", "list EAB keys")):
        cmd = eab_sub.add_parser(name, help=text)
        cmd.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
        cmd.add_argument("--database-url")

    admin = sub.add_parser("admin", help="operator actions on the CA's records")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    window = admin_sub.add_parser(
        "renewal-window",
        help="set (or --clear) a certificate's ARI renewal window (RFC 9773)",
    )
    window.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    window.add_argument("--database-url")
    window.add_argument("--serial", required=True, help="hex serial")
    window.add_argument("--start", help="RFC 3339, e.g. 2026-01-02T00:00:00Z")
    window.add_argument("--end", help="RFC 3339, after --start")
    window.add_argument("--clear", action="store_true", help="back to the default window")
    add_revoke_parser(admin_sub)
    return parser


def _database_url(args: argparse.Namespace, data_dir: Path) -> str:
    url: str | None = args.database_url
    return url or f"sqlite:///{data_dir / 'certmint.db'}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "eab":
            return _eab(args)
        if args.command == "admin" and args.admin_command == "revoke":
            return run_admin_revoke(args)
        if args.command == "admin":
            return _renewal_window(args)
        if args.command == "va-perspective":
            return run_perspective(args)
        if args.command == "ceremony":
            return run_ceremony(args)
    except CliError as exc:
        print(f"certmint-ca: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except PerspectiveCliError as exc:
        print(f"certmint-ca: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line, never a traceback (-v shows it)
        if args.verbose:
            log.exception("failed")
        print(f"certmint-ca: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 2


def _eab(args: argparse.Namespace) -> int:
    from certmint.ca.ra_accounts import new_eab_key
    from certmint.ca.storage import open_storage
    from certmint.protocol.b64 import b64url_encode
    from certmint.runtime import SystemClock, SystemEntropy

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    sa = open_storage(_database_url(args, data_dir))
    try:
        if args.eab_command == "create":
            record = new_eab_key(SystemClock(), SystemEntropy())
            sa.create_eab_key(record)
            print(f"kid: {record.kid}")
            print(f"hmac-key: {b64url_encode(record.hmac_key)}")
        else:
            for key in sa.list_eab_keys():
                bound = f"bound to account {key.account_id}" if key.account_id else "unused"
                print(f"{key.kid}  created {key.created_at:%Y-%m-%d %H:%M}  {bound}")
    finally:
        sa.close()
    return 0


def _renewal_window(args: argparse.Namespace) -> int:
    """The management API's POST/DELETE /renewal-info/<serial>, for an
    operator with the database but no running CA."""
    from certmint.ca.storage import StaleState, open_storage
    from certmint.protocol.messages import MessageError, parse_rfc3339

    if args.clear == (args.start is not None or args.end is not None):
        raise CliError("give --start and --end, or --clear")
    start = end = None
    if not args.clear:
        if args.start is None or args.end is None:
            raise CliError("give both --start and --end")
        try:
            start, end = parse_rfc3339(args.start), parse_rfc3339(args.end)
        except MessageError as exc:
            raise CliError(str(exc)) from None
        if not start < end:
            raise CliError("--end must be after --start")
    from certmint.ca.issuance.profile import SERIAL_BYTES, serial_to_string

    text = str(args.serial).lower().removeprefix("0x")
    if not text or len(text) > 40 or any(c not in "0123456789abcdef" for c in text):
        raise CliError("--serial must be the certificate's serial in hex")
    value = int(text, 16)
    if value <= 0 or value.bit_length() > SERIAL_BYTES * 8:
        raise CliError(f"no certificate with serial {text}")
    serial = serial_to_string(value)
    data_dir = Path(args.data_dir).resolve()
    sa = open_storage(_database_url(args, data_dir))
    try:
        record = sa.set_renewal_window(serial, start, end)
    except StaleState:
        raise CliError(f"no certificate with serial {serial}") from None
    finally:
        sa.close()
    if record.ari_window_start is None or record.ari_window_end is None:
        print(f"{record.serial}: default renewal window")
    else:
        print(
            f"{record.serial}: renewal window {record.ari_window_start:%Y-%m-%dT%H:%M:%SZ}"
            f" .. {record.ari_window_end:%Y-%m-%dT%H:%M:%SZ}"
        )
    return 0


def _policy_config(args: argparse.Namespace) -> PolicyConfig:
    exact: frozenset[str] = frozenset()
    suffixes: frozenset[str] = frozenset()
    if args.blocked_names_file is not None:
        exact, suffixes = read_blocked_names(Path(args.blocked_names_file))
    max_names = PolicyConfig.max_names_per_order if args.max_names is None else args.max_names
    if max_names < 1:
        raise CliError("--max-names must be at least 1")
    weak, blocked = _key_lists(args)
    return PolicyConfig(
        extra_weak_rsa_fingerprints=weak,
        blocked_key_digests=blocked,
        max_names_per_order=max_names,
        default_profile=args.default_profile,
        enabled_challenges=_enabled_challenges(args.enable_challenge, args.disable_challenge),
        blocked_names=exact,
        blocked_suffixes=suffixes,
        allow_unlisted_tlds=args.allow_unlisted_tlds or args.dev,
        allow_private_ip_identifiers=args.allow_private_ip_identifiers or args.dev,
    )


def _key_lists(args: argparse.Namespace) -> tuple[frozenset[str], frozenset[bytes]]:
    """The operator's extra weak-key fingerprints and blocked key digests."""
    from cryptography.exceptions import UnsupportedAlgorithm

    from certmint.ca.keypolicy import parse_blocked_keys, parse_weak_rsa_fingerprints

    weak: frozenset[str] = frozenset()
    blocked: frozenset[bytes] = frozenset()
    if args.weak_keys_file is not None:
        try:
            weak = parse_weak_rsa_fingerprints(Path(args.weak_keys_file).read_bytes())
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot use --weak-keys-file {args.weak_keys_file}: {exc}") from None
    if args.blocked_keys_file is not None:
        path = args.blocked_keys_file
        try:
            blocked = parse_blocked_keys(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, UnsupportedAlgorithm) as exc:
            raise CliError(f"cannot use --blocked-keys-file {path}: {exc}") from None
    return weak, blocked


def _enabled_challenges(enable: Sequence[str], disable: Sequence[str]) -> tuple[str, ...]:
    """The default challenge types plus ``enable`` minus ``disable``."""
    both = sorted(set(enable) & set(disable))
    if both:
        raise CliError(f"--enable-challenge and --disable-challenge both name {both[0]}")
    enabled = tuple(
        dict.fromkeys(t for t in (*DEFAULT_CHALLENGES, *enable) if t not in set(disable))
    )
    if not enabled:
        raise CliError("--disable-challenge leaves no challenge type enabled")
    return enabled


def read_blocked_names(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(exact names, suffixes) from a blocklist file: one name a line, "#"
    comments and blank lines ignored, "*.NAME" meaning NAME and every name
    under it. Names are normalised (IDNs to A-labels) like identifiers."""
    from certmint.protocol.identifiers import IdentifierError, normalize_dns_identifier

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read --blocked-names-file {path}: {exc}") from None
    exact: set[str] = set()
    suffixes: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        wildcard = line.startswith("*.")
        candidate = line.removeprefix("*.")
        # A whole TLD ("*.test") is a fair entry, but identifiers need two
        # labels: normalise a single label under a throwaway parent.
        single = "." not in candidate
        try:
            name = normalize_dns_identifier(candidate + ".invalid" if single else candidate)
        except IdentifierError as exc:
            raise CliError(f"{path}:{number}: {exc}") from None
        name = name.removesuffix(".invalid") if single else name
        (suffixes if wildcard else exact).add(name)
    return frozenset(exact), frozenset(suffixes)


def _default_workers() -> int:
    # One worker per core (the CA is CPU-bound), capped: SQLite serialises
    # writes, so more processes than cores only add lock contention.
    return max(1, min(os.cpu_count() or 1, 8))


def _serve(args: argparse.Namespace) -> int:
    from certmint.ca.serve import ServeError, ServeSettings, prepare, serve
    from certmint.ca.va.model import VAConfig

    remote_vas, remote_va_secret = _remote_vas(args)
    acme_host, acme_port = _host_port(args.listen, "--listen")
    mgmt_host, mgmt_port = _host_port(args.management_listen, "--management-listen")
    base_url = args.base_url or f"https://{_url_host(acme_host)}:{acme_port}"
    mgmt_url = args.management_base_url or f"http://{_url_host(mgmt_host)}:{mgmt_port}"

    resolvers = tuple(args.dns_resolver)
    http01_port = args.http01_port
    tlsalpn01_port = args.tlsalpn01_port
    allow_private = args.allow_private_addresses
    if args.dev:
        resolvers = resolvers or (f"{DEV_DNS[0]}:{DEV_DNS[1]}",)
        http01_port = http01_port or DEV_HTTP01_PORT
        tlsalpn01_port = tlsalpn01_port or DEV_TLSALPN01_PORT
        allow_private = True
    policy = _policy_config(args)
    try:
        crl = crl_config(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    workers = args.workers if args.workers is not None else _default_workers()
    if workers < 1:
        raise CliError("--workers must be at least 1")

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings = ServeSettings(
        data_dir=data_dir,
        database_url=_database_url(args, data_dir),
        acme_address=(acme_host, acme_port),
        management_address=(mgmt_host, mgmt_port),
        config=CAConfig(
            base_url=base_url,
            management_base_url=mgmt_url,
            terms_of_service=args.terms_of_service,
            eab_required=args.eab_required,
            ocsp_enabled=args.ocsp,
            policy=policy,
            chaos=ChaosConfig(
                nonce_reject_percent=args.chaos_nonce_reject,
                validation_delay_seconds=args.chaos_validation_delay,
                authz_reuse_percent=args.chaos_authz_reuse,
                seed=args.chaos_seed,
            ),
        ),
        va_config=VAConfig(
            resolvers=resolvers,
            http01_port=http01_port or 80,
            tlsalpn01_port=tlsalpn01_port or 443,
            allow_private_addresses=allow_private,
            allowed_private_networks=tuple(args.allow_private_network),
            # The VA checks CAA for the identities the directory lists (the
            # CAConfig value: no flag changes it).
            caa_identities=CAConfig.caa_identities,
        ),
        server_names=tuple(
            sorted({"localhost", "127.0.0.1", "::1", _url_host(acme_host).strip("[]")})
        ),
        workers=workers,
        dev_dns=args.dev,
        remote_vas=remote_vas,
        remote_va_secret=remote_va_secret,
        remote_va_timeout=args.remote_va_timeout,
        issuers_file=Path(args.issuers_file).resolve() if args.issuers_file else None,
        crl=crl,
    )
    try:
        hierarchy, settings = prepare(settings)
    except ServeError as exc:
        raise CliError(str(exc)) from None
    root = hierarchy.root_paths[0]
    lines = [
        f"ACME directory {base_url}/directory",
        f"root certificate {root} (also {mgmt_url}/roots/0)",
        f"{workers} worker process{'es' if workers > 1 else ''}, "
        f"database {_safe_url(settings.database_url)}",
    ]
    if args.dev:
        lines.insert(0, f"dev DNS on {DEV_DNS[0]}:{DEV_DNS[1]} (control API http://127.0.0.1:8055)")
    if settings.config.chaos.enabled:
        lines.append(f"chaos on, seed {settings.config.chaos.seed}")
    if remote_vas:
        lines.append("remote VA perspectives: " + ", ".join(f"{r} {u}" for r, u in remote_vas))
    lines.append("try: " + _certbot_hint(base_url, root, http01_port or 80, args.dev))

    def announce() -> None:
        for line in [*lines, "ready"]:
            print(f"certmint-ca: {line}", flush=True)

    try:
        return serve(settings, announce)
    except ServeError as exc:
        raise CliError(str(exc)) from None


def _remote_vas(
    args: argparse.Namespace,
) -> tuple[tuple[tuple[str, str], ...], bytes | None]:
    """(region, URL) pairs of --remote-va and the shared secret (BR 3.2.2.9)."""
    from certmint.ca.perspective_cli import check_region
    from certmint.ca.va.perspective_wire import SecretError, load_secret

    if not args.remote_va:
        if args.remote_va_secret_file is not None:
            raise CliError("--remote-va-secret-file needs at least one --remote-va")
        return (), None
    if args.remote_va_secret_file is None:
        raise CliError("--remote-va needs --remote-va-secret-file")
    if not args.remote_va_timeout > 0:
        raise CliError("--remote-va-timeout must be positive")
    pairs: list[tuple[str, str]] = []
    for text in args.remote_va:
        region, sep, url = str(text).partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise CliError(f"--remote-va must look like REGION=http://HOST:PORT, not {text!r}")
        try:
            pairs.append((check_region(region), url))
        except PerspectiveCliError as exc:
            raise CliError(f"--remote-va {text!r}: {exc}") from None
    if len({region for region, _ in pairs}) != len(pairs) or "primary" in dict(pairs):
        raise CliError("each --remote-va needs its own region name (and not 'primary')")
    try:
        secret = load_secret(Path(args.remote_va_secret_file))
    except SecretError as exc:
        raise CliError(str(exc)) from None
    if len(pairs) < 2:
        print(
            "certmint-ca: warning: BR 3.2.2.9 requires at least 2 remote perspectives",
            file=sys.stderr,
        )
    return tuple(pairs), secret


def _safe_url(url: str) -> str:
    """The database URL without a password, for printing."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


def _certbot_hint(base_url: str, root: Path, http01_port: int, dev: bool) -> str:
    name = "www.example.com" if dev else "YOUR.DOMAIN"
    parts = [
        f"REQUESTS_CA_BUNDLE={shlex.quote(str(root))}",
        "certbot certonly --standalone",
        f"--server {base_url}/directory",
        f"-d {name}",
        "--agree-tos --register-unsafely-without-email --non-interactive",
    ]
    if http01_port != 80:
        parts.append(f"--http-01-port {http01_port}")
    if dev:
        parts.append(
            "--config-dir /tmp/certmint-try/config --work-dir /tmp/certmint-try/work "
            "--logs-dir /tmp/certmint-try/logs"
        )
    return " ".join(parts)
