"""The agent's value types for files on disk: the three directories and a
lineage (one certificate name and its current version). ``storage.py`` reads
and writes them; these only describe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

from cryptography import x509

from certmint.client.renewal_conf import RenewalParams


@dataclass(frozen=True)
class Paths:
    """The agent's three directories (certbot's --config-dir, --work-dir, --logs-dir)."""

    config_dir: Path
    work_dir: Path
    logs_dir: Path

    @property
    def live_dir(self) -> Path:
        return self.config_dir / "live"

    @property
    def archive_dir(self) -> Path:
        return self.config_dir / "archive"

    @property
    def renewal_dir(self) -> Path:
        return self.config_dir / "renewal"

    @property
    def accounts_dir(self) -> Path:
        return self.config_dir / "accounts"

    @property
    def renewal_hooks_dir(self) -> Path:
        return self.config_dir / "renewal-hooks"


def default_paths(is_root: bool, home: Path) -> Paths:
    """certbot's directories as root; per-user XDG directories otherwise."""
    if is_root:
        return Paths(
            config_dir=Path("/etc/letsencrypt"),
            work_dir=Path("/var/lib/letsencrypt"),
            logs_dir=Path("/var/log/letsencrypt"),
        )
    return Paths(
        config_dir=home / ".config" / "certmint",
        work_dir=home / ".local" / "share" / "certmint",
        logs_dir=home / ".local" / "state" / "certmint",
    )


@dataclass(frozen=True)
class Lineage:
    """One certificate name and its current version, as found on disk."""

    name: str
    live_dir: Path
    cert_path: Path
    chain_path: Path
    fullchain_path: Path
    privkey_path: Path
    version: int
    params: RenewalParams
    archive_dir: Path
    renewal_conf_path: Path
    cert_pem: bytes = field(repr=False)

    def certificate(self) -> x509.Certificate:
        return self._parsed

    @cached_property
    def _parsed(self) -> x509.Certificate:
        # names(), not_before and not_after all read the certificate: parse once.
        return x509.load_pem_x509_certificate(self.cert_pem)

    def names(self) -> tuple[str, ...]:
        """The certificate's names, certbot's way: the common name first, then SANs."""
        cert = self.certificate()
        names: list[str] = []
        for attribute in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
            names.append(str(attribute.value).lower())
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = x509.SubjectAlternativeName([])
        names += [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        return tuple(dict.fromkeys(names))

    @property
    def not_before(self) -> datetime:
        return self.certificate().not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate().not_valid_after_utc
