"""The verbs, certbot's way: certonly, renew, revoke, certificates, delete,
register, update_account, show_account, unregister, run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certmint.client.acme import AcmeClient, ari_cert_id
from certmint.client.context import Context
from certmint.client.errors import ClientError
from certmint.client.flow import Issued, choose_profile, obtain_certificate
from certmint.client.hooks import run_directory_hooks, run_shell_hook
from certmint.client.keys import generate_key, key_to_pem, make_csr
from certmint.client.options import REVOCATION_REASONS
from certmint.client.renewal import decide_renewal
from certmint.client.storage import Lineage, RenewalParams

# certbot sleeps up to 8 minutes before a non-interactive renew, so that
# every machine's cron job does not hit the CA in the same second.
MAX_RANDOM_RENEW_SLEEP_SECONDS = 480.0


# -- certonly ---------------------------------------------------------------------


def certonly(ctx: Context) -> int:
    args = ctx.args
    domains = list(args.domains)
    if args.csr:
        return _certonly_with_csr(ctx, domains)
    if not domains:
        if not ctx.term.interactive:
            raise ClientError("name the certificate's domains with -d DOMAIN")
        answer = ctx.term.ask("Domain names for the certificate (comma or space separated):")
        domains = [d.strip().lower() for d in answer.replace(",", " ").split() if d.strip()]
        if not domains:
            raise ClientError("no domain names given")
    name = args.cert_name or domains[0]
    with ctx.store.lock():
        existing = ctx.store.load(name) if ctx.store.exists(name) else None
        if (
            existing is not None
            and not args.force_renewal
            and not args.dry_run
            and sorted(existing.names()) == sorted(domains)
            and not _due(ctx, existing, None).renew
        ):
            ctx.term.say(
                f"Certificate for {name} is not yet due for renewal "
                f"(expires {existing.not_after:%Y-%m-%d}); no action taken."
            )
            return 0
        params = _params_from_args(ctx, domains, existing.params if existing else None)
        _run_pre_hooks(ctx, params)
        try:
            lineage = _obtain_and_save(ctx, name, domains, params, existing)
        finally:
            _run_post_hooks(ctx, params)
    if lineage is None:
        ctx.term.say("The dry run was successful.")
        return 0
    ctx.term.say(
        f"Successfully received certificate.\n"
        f"Certificate is saved at: {lineage.fullchain_path}\n"
        f"Key is saved at:         {lineage.privkey_path}\n"
        f"This certificate expires on {lineage.not_after:%Y-%m-%d}."
    )
    return 0


def _params_from_args(
    ctx: Context, domains: list[str], stored: RenewalParams | None
) -> RenewalParams:
    args = ctx.args
    base = stored or RenewalParams(server=ctx.server, account="", authenticator="")
    webroot_map = dict(base.webroot_map)
    webroot_map.update(args.webroot_map or {})
    return RenewalParams(
        server=ctx.server if args.server or stored is None else base.server,
        account=base.account,
        authenticator=args.authenticator or base.authenticator,
        key_type=args.key_type or base.key_type,
        rsa_key_size=args.rsa_key_size or base.rsa_key_size,
        elliptic_curve=args.elliptic_curve or base.elliptic_curve,
        reuse_key=base.reuse_key if args.reuse_key is None else bool(args.reuse_key),
        domains=tuple(domains),
        webroot_map=webroot_map,
        preferred_chain=args.preferred_chain or base.preferred_chain,
        preferred_profile=args.preferred_profile or base.preferred_profile,
        required_profile=args.required_profile or base.required_profile,
        http01_port=args.http_01_port if args.http_01_port is not None else base.http01_port,
        http01_address=args.http_01_address or base.http01_address,
        pre_hook=args.pre_hook or base.pre_hook,
        post_hook=args.post_hook or base.post_hook,
        deploy_hook=args.deploy_hook or base.deploy_hook,
        manual_auth_hook=args.manual_auth_hook or base.manual_auth_hook,
        manual_cleanup_hook=args.manual_cleanup_hook or base.manual_cleanup_hook,
        dns_rfc2136_credentials=args.dns_rfc2136_credentials or base.dns_rfc2136_credentials,
        extra=_with_challenge_choice(args, base.extra),
    )


def _with_challenge_choice(
    args: argparse.Namespace, stored: dict[str, str | tuple[str, ...]]
) -> dict[str, str | tuple[str, ...]]:
    """Record --preferred-challenges and --tls-alpn-01-port for ``renew``.

    Without them a lineage obtained with tls-alpn-01 on a given port was
    renewed with http-01 on port 80 and failed. certbot keeps the first as
    ``pref_challs`` (a list); the second is ours (certbot's standalone has no
    tls-alpn-01), and certbot carries unknown keys through unchanged.
    """
    extra = dict(stored)
    preferred = getattr(args, "preferred_challenges", None)
    if preferred:
        extra["pref_challs"] = tuple(p.strip() for p in preferred.split(",") if p.strip())
    port = getattr(args, "tls_alpn_01_port", None)
    if port is not None:
        extra["tls_alpn_01_port"] = str(port)
    return extra


def _obtain_and_save(
    ctx: Context,
    name: str,
    domains: list[str],
    params: RenewalParams,
    existing: Lineage | None,
    *,
    replaces: str | None = None,
) -> Lineage | None:
    """Issue a certificate; save it unless --dry-run. None for a dry run."""
    client, thumbprint = ctx.account_client(params.server)
    if existing is not None and params.reuse_key:
        key = serialization.load_pem_private_key(existing.privkey_path.read_bytes(), None)
    else:
        key = generate_key(params.key_type, params.rsa_key_size, params.elliptic_curve)
    offered = list((client.session.directory.meta.get("profiles") or {}).keys())
    profile = choose_profile(offered, params.preferred_profile, params.required_profile)
    issued = obtain_certificate(
        client,
        ctx.authenticator(params),
        domains=domains,
        csr_der=make_csr(key, domains),  # type: ignore[arg-type]
        account_thumbprint=thumbprint,
        progress=ctx.term,
        replaces=replaces,
        profile=profile,
        preferred_chain=params.preferred_chain,
    )
    if ctx.args.dry_run:
        return None
    account_id = _account_id(ctx, params.server)
    params = _with(params, account=account_id)
    key_pem = key_to_pem(key)  # type: ignore[arg-type]
    if existing is None:
        lineage = ctx.store.save_new(name, key_pem=key_pem, **_pems(issued), params=params)
    else:
        lineage = ctx.store.save_renewal(name, key_pem=key_pem, **_pems(issued), params=params)
    _run_deploy_hooks(ctx, params, lineage)
    return lineage


def _pems(issued: Issued) -> dict[str, bytes]:
    return {
        "cert_pem": issued.cert_pem,
        "chain_pem": issued.chain_pem,
        "fullchain_pem": issued.fullchain_pem,
    }


def _with(params: RenewalParams, **changes: object) -> RenewalParams:
    from dataclasses import replace

    return replace(params, **changes)  # type: ignore[arg-type]


def _account_id(ctx: Context, server: str) -> str:
    stored = ctx.accounts.load_for_server(server)
    return stored[0].id if stored else ""


def _certonly_with_csr(ctx: Context, domains: list[str]) -> int:
    """--csr: the key stays with the user; files go to the current directory
    under certbot's names (0000_cert.pem, 0000_chain.pem, 0001_chain.pem)."""
    raw = Path(ctx.args.csr).read_bytes()
    try:
        csr = (
            x509.load_pem_x509_csr(raw) if b"-----BEGIN" in raw else x509.load_der_x509_csr(raw)
        )
    except ValueError:
        raise ClientError(f"{ctx.args.csr} is not a certificate signing request") from None
    names = _csr_names(csr)
    if domains and sorted(domains) != sorted(names):
        raise ClientError("the -d names differ from the names in --csr")
    params = _params_from_args(ctx, names, None)
    client, thumbprint = ctx.account_client(params.server)
    with ctx.store.lock():
        issued = obtain_certificate(
            client,
            ctx.authenticator(params),
            domains=names,
            csr_der=csr.public_bytes(serialization.Encoding.DER),
            account_thumbprint=thumbprint,
            progress=ctx.term,
            preferred_chain=params.preferred_chain,
        )
    if ctx.args.dry_run:
        ctx.term.say("The dry run was successful.")
        return 0
    for filename, content in (
        ("0000_cert.pem", issued.cert_pem),
        ("0000_chain.pem", issued.chain_pem),
        ("0001_chain.pem", issued.fullchain_pem),
    ):
        Path(filename).write_bytes(content)
    ctx.term.say("Certificate saved to 0000_cert.pem, full chain to 0001_chain.pem.")
    return 0


def _csr_names(csr: x509.CertificateSigningRequest) -> list[str]:
    names: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    for attribute in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        value = str(attribute.value).lower()
        if value not in names:
            names.append(value)
    if not names:
        raise ClientError("the CSR names no domain")
    return names


# -- renew ------------------------------------------------------------------------


def _due(ctx: Context, lineage: Lineage, client: AcmeClient | None):  # type: ignore[no-untyped-def]
    window = None
    if client is not None:
        info = client.renewal_info(lineage.cert_path.read_bytes())
        if info is not None:
            window = (info.start, info.end)
    return decide_renewal(
        not_before=lineage.not_before,
        not_after=lineage.not_after,
        now=ctx.clock.now(),
        ari_window=window,
        pick=ctx.entropy.randbelow(1_000_000) / 1_000_000,
    )


def renew(ctx: Context) -> int:
    args = ctx.args
    with ctx.store.lock():
        lineages = ctx.store.lineages()
        if args.cert_name:
            lineages = [item for item in lineages if item.name == args.cert_name]
            if not lineages:
                raise ClientError(f"no certificate named {args.cert_name}")
        if not lineages:
            ctx.term.say("No certificates found.")
            return 0
        due: list[tuple[Lineage, str | None]] = []
        for lineage in lineages:
            client, _ = ctx.account_client(lineage.params.server)
            decision = None if args.force_renewal else _due(ctx, lineage, client)
            if decision is not None and not decision.renew:
                if not args.dry_run:
                    ctx.term.say(f"{lineage.name}: not due for renewal ({decision.reason})")
                    continue
                # certbot's renew --dry-run simulates every renewal, due or not.
                ctx.term.say(
                    f"{lineage.name}: not due for renewal ({decision.reason}); "
                    "simulating it for the dry run"
                )
            elif decision is not None:
                # Say why (ARI window, expiry, a third of the lifetime left), so
                # the person reading cron mail knows what triggered it.
                ctx.term.say(f"{lineage.name}: renewal due: {decision.reason}")
            # RFC 9773 §5: tell the CA which certificate this one replaces.
            has_ari = bool(client.session.directory.renewal_info)
            replaces = ari_cert_id(lineage.cert_path.read_bytes()) if has_ari else None
            due.append((lineage, replaces))
        if not due:
            return 0
        if not ctx.term.interactive and not args.no_random_sleep_on_renew and not args.dry_run:
            ctx.sleep(ctx.entropy.randbelow(int(MAX_RANDOM_RENEW_SLEEP_SECONDS * 1000)) / 1000)
        failures: list[str] = []
        hook_params = due[0][0].params
        _run_pre_hooks(ctx, hook_params)
        try:
            for lineage, replaces in due:
                params = _params_from_args(ctx, list(lineage.params.domains), lineage.params)
                try:
                    _obtain_and_save(
                        ctx, lineage.name, list(params.domains), params, lineage, replaces=replaces
                    )
                    ctx.term.done(f"{lineage.name}: renewed")
                except ClientError as exc:
                    failures.append(f"{lineage.name}: renewal failed: {exc}")
        finally:
            _run_post_hooks(ctx, hook_params)
    for line in failures:
        ctx.term.error(line)
    if args.dry_run and not failures:
        ctx.term.say("The dry run was successful.")
    return 1 if failures else 0


# -- hooks --------------------------------------------------------------------------


def _hooks_dir(ctx: Context, which: str) -> Path:
    return ctx.paths.config_dir / "renewal-hooks" / which


def _run_pre_hooks(ctx: Context, params: RenewalParams) -> None:
    if ctx.args.dry_run:
        return
    if not ctx.args.no_directory_hooks:
        run_directory_hooks(_hooks_dir(ctx, "pre"), base_env=ctx.environ)
    if params.pre_hook:
        run_shell_hook(params.pre_hook, base_env=ctx.environ, what="pre")


def _run_post_hooks(ctx: Context, params: RenewalParams) -> None:
    if ctx.args.dry_run:
        return
    if params.post_hook:
        run_shell_hook(params.post_hook, base_env=ctx.environ, what="post")
    if not ctx.args.no_directory_hooks:
        run_directory_hooks(_hooks_dir(ctx, "post"), base_env=ctx.environ)


def _run_deploy_hooks(ctx: Context, params: RenewalParams, lineage: Lineage) -> None:
    env = {"RENEWED_LINEAGE": str(lineage.live_dir), "RENEWED_DOMAINS": " ".join(lineage.names())}
    if not ctx.args.no_directory_hooks:
        run_directory_hooks(_hooks_dir(ctx, "deploy"), base_env=ctx.environ, env=env)
    if params.deploy_hook:
        run_shell_hook(params.deploy_hook, base_env=ctx.environ, env=env, what="deploy")


# -- revoke, certificates, delete ---------------------------------------------------


def revoke(ctx: Context) -> int:
    args = ctx.args
    if args.cert_path:
        cert_path = Path(args.cert_path)
        lineage = _lineage_for_cert(ctx, cert_path)
    elif args.cert_name:
        lineage = ctx.store.load(args.cert_name)
        cert_path = lineage.cert_path
    else:
        raise ClientError("say which certificate to revoke: --cert-path FILE or --cert-name NAME")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    reason = REVOCATION_REASONS[args.reason]
    server = lineage.params.server if lineage else ctx.server
    der = cert.public_bytes(serialization.Encoding.DER)
    if args.key_path:
        key = serialization.load_pem_private_key(Path(args.key_path).read_bytes(), None)
        client = AcmeClient(ctx.session(server, key))  # type: ignore[arg-type]
        client.revoke(der, reason=reason, cert_key=key)  # type: ignore[arg-type]
    else:
        client, _ = ctx.account_client(server, create=False)
        client.revoke(der, reason=reason)
    ctx.term.done(f"revoked the certificate {cert_path}")
    if lineage is not None:
        delete_it = args.delete_after_revoke
        if delete_it is None:
            delete_it = (not ctx.term.interactive) or ctx.term.confirm(
                f"Delete the certificate {lineage.name} and its files?"
            )
        if delete_it:
            with ctx.store.lock():
                ctx.store.delete(lineage.name)
            ctx.term.done(f"deleted {lineage.name}")
    return 0


def _lineage_for_cert(ctx: Context, cert_path: Path) -> Lineage | None:
    target = cert_path.resolve()
    for lineage in ctx.store.lineages():
        if target in (lineage.cert_path.resolve(), lineage.fullchain_path.resolve()):
            return lineage
    return None


def certificates(ctx: Context) -> int:
    lineages = ctx.store.lineages()
    if not lineages:
        ctx.term.say("No certificates found.")
        return 0
    now = ctx.clock.now()
    lines = ["Found the following certificates:"]
    for lineage in lineages:
        days = (lineage.not_after - now).days
        state = f"VALID: {days} days" if lineage.not_after > now else "EXPIRED"
        lines += [
            f"  Certificate Name: {lineage.name}",
            f"    Domains: {' '.join(lineage.names())}",
            f"    Expiry Date: {lineage.not_after:%Y-%m-%d %H:%M:%S+00:00} ({state})",
            f"    Certificate Path: {lineage.fullchain_path}",
            f"    Private Key Path: {lineage.privkey_path}",
        ]
    ctx.term.say("\n".join(lines))
    return 0


def delete(ctx: Context) -> int:
    name = ctx.args.cert_name
    if not name:
        if not ctx.term.interactive:
            raise ClientError("say which certificate to delete: --cert-name NAME")
        name = ctx.term.ask("Name of the certificate to delete:")
    with ctx.store.lock():
        if not ctx.store.exists(name):
            raise ClientError(f"no certificate named {name}")
        if ctx.term.interactive and not ctx.term.confirm(f"Delete {name} and all its files?"):
            return 1
        ctx.store.delete(name)
    ctx.term.done(f"deleted {name}")
    return 0


# -- accounts -----------------------------------------------------------------------


def register(ctx: Context) -> int:
    if ctx.accounts.load_for_server(ctx.server):
        raise ClientError(f"there is already an account for {ctx.server}")
    ctx.register(ctx.server)
    return 0


def update_account(ctx: Context) -> int:
    if not ctx.args.email:
        raise ClientError("give the new contact address with --email")
    client, _ = ctx.account_client(create=False)
    body = client.update_account([f"mailto:{e.strip()}" for e in ctx.args.email.split(",")])
    ctx.term.done(f"account contact is now {', '.join(body.contact or ())}")
    return 0


def show_account(ctx: Context) -> int:
    client, _ = ctx.account_client(create=False)
    body = client.account()
    emails = ", ".join(c.removeprefix("mailto:") for c in body.contact or ()) or "none"
    ctx.term.say(
        f"Account details for server {ctx.server}:\n"
        f"  Account URL: {client.session.kid}\n"
        f"  Account status: {body.status}\n"
        f"  Email contact: {emails}"
    )
    return 0


def unregister(ctx: Context) -> int:
    stored = ctx.accounts.load_for_server(ctx.server)
    if not stored:
        raise ClientError(f"there is no account for {ctx.server}")
    if ctx.term.interactive and not ctx.term.confirm(
        "Deactivate your account? Certificates stay valid, but it cannot be used again."
    ):
        return 1
    client, _ = ctx.account_client(create=False)
    client.deactivate_account()
    ctx.accounts.delete(ctx.server, stored[0].id)
    ctx.term.done("account deactivated")
    return 0


def run(ctx: Context) -> int:
    from certmint.client.authenticators import INSTALLERS

    installed = ", ".join(sorted(INSTALLERS)) or "none yet"
    ctx.term.error(
        f"`run` obtains and installs a certificate; installers available: {installed}. "
        "Use `certmint certonly` and point your web server at the files in live/."
    )
    return 1


COMMANDS: dict[str, Callable[[Context], int]] = {
    "certonly": certonly,
    "renew": renew,
    "revoke": revoke,
    "certificates": certificates,
    "delete": delete,
    "register": register,
    "update_account": update_account,
    "show_account": show_account,
    "unregister": unregister,
    "run": run,
}

