"""The development PKI: two roots, one intermediate with a cross-signed twin, the server's TLS cert.

Shaped like Let's Encrypt's hierarchy (ISRG Root X1/X2, intermediate E5 and
its cross-signs) so that clients meet the same situations here as in
production: a default chain and an alternate chain (RFC 8555 §7.4.2, served
with ``Link: rel="alternate"``) ending in different roots.

Layout under ``data_dir``::

    ca/   (0700)  root-x1.key root-x1.pem  root-x2.key root-x2.pem
                  e1.key e1.pem (E1 signed by X1)  e1-cross-x2.pem (E1 signed by X2)
    tls/  (0700)  server.key  server.pem (full chain: server leaf, then E1)

The first start creates everything; later starts load and check it. Keys are
never overwritten: a half-present hierarchy is an error for a human to look at.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certmint.ca.issuance.keys import load_private_key, write_pem_atomic, write_private_key
from certmint.ca.issuance.lint import IssuanceExpectation, LintWaivers, SubscriberLinter
from certmint.ca.issuance.profile import (
    DV_POLICY_OID,
    key_usage,
    new_serial,
    subscriber_certificate_builder,
    truncate_to_seconds,
)
from certmint.ca.issuance.signer import FileSigner, Signer
from certmint.ca.issuance.signing import sign_certificate
from certmint.ca.keypolicy import KeyPolicy
from certmint.runtime import Clock, Entropy

ROOT_X1_NAME = "certmint Development Root X1"
ROOT_X2_NAME = "certmint Development Root X2"
INTERMEDIATE_E1_NAME = "certmint Development Intermediate E1"
ORGANIZATION = "certmint"
# BR 7.1.2.10.2: CA certificate subjects carry countryName. certmint is not a
# legal entity in any country; "XX" is ISO 3166-1's user-assigned code.
COUNTRY = "XX"

# BR 7.1.2.1.1: a root's validity is between 2922 and 9132 days; Let's
# Encrypt's roots run 20 years. Intermediates are not bounded by the BR; E5
# runs 3 years, a development intermediate 5 so a dev setup rarely re-keys.
ROOT_VALIDITY = timedelta(days=7305)
INTERMEDIATE_VALIDITY = timedelta(days=5 * 365)
SERVER_CERT_VALIDITY = timedelta(days=90)
# Reissue the server's own certificate a day before it expires so a restart
# never comes up with a certificate about to lapse.
SERVER_CERT_RENEW_BEFORE = timedelta(days=1)


class HierarchyError(Exception):
    """The files under ``data_dir/ca`` are incomplete or inconsistent."""


@dataclass(frozen=True)
class IssuerMaterial:
    id: str  # short, URL-safe: used in AIA and CRL URLs ("e1")
    cert: x509.Certificate  # the default-chain issuer certificate
    # Signs for this issuer (a key file or a PKCS#11 key); every signature
    # goes through signing.sign_certificate / sign_crl, lint first.
    signer: Signer
    # Each chain: the certificates after the leaf, up to but excluding a root.
    # chains[0] is the default, the rest are alternates.
    chains: tuple[tuple[x509.Certificate, ...], ...]


@dataclass(frozen=True)
class Hierarchy:
    roots: tuple[x509.Certificate, ...]  # roots[0] is the default
    issuers: tuple[IssuerMaterial, ...]
    root_paths: tuple[Path, ...]
    tls_cert_path: Path
    tls_key_path: Path


@dataclass(frozen=True)
class _Paths:
    ca_dir: Path
    tls_dir: Path

    @property
    def x1_key(self) -> Path:
        return self.ca_dir / "root-x1.key"

    @property
    def x1_cert(self) -> Path:
        return self.ca_dir / "root-x1.pem"

    @property
    def x2_key(self) -> Path:
        return self.ca_dir / "root-x2.key"

    @property
    def x2_cert(self) -> Path:
        return self.ca_dir / "root-x2.pem"

    @property
    def e1_key(self) -> Path:
        return self.ca_dir / "e1.key"

    @property
    def e1_cert(self) -> Path:
        return self.ca_dir / "e1.pem"

    @property
    def e1_cross(self) -> Path:
        return self.ca_dir / "e1-cross-x2.pem"

    @property
    def server_key(self) -> Path:
        return self.tls_dir / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.tls_dir / "server.pem"

    def ca_files(self) -> tuple[Path, ...]:
        return (
            self.x1_key,
            self.x1_cert,
            self.x2_key,
            self.x2_cert,
            self.e1_key,
            self.e1_cert,
            self.e1_cross,
        )


def _ca_name(common_name: str) -> x509.Name:
    # BR 7.1.2.10.2: countryName, organizationName and commonName, in that order.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _build_root(
    name: str, key: ec.EllipticCurvePrivateKey, now: datetime, entropy: Entropy
) -> x509.Certificate:
    """A self-signed root shaped per BR 7.1.2.1 (like ISRG Root X2)."""
    subject = _ca_name(name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .serial_number(new_serial(entropy))
        .issuer_name(subject)
        .subject_name(subject)
        .public_key(key.public_key())
        .not_valid_before(now)
        # RFC 5280 §4.1.2.5 counts validity inclusively: end one second early.
        .not_valid_after(now + ROOT_VALIDITY - timedelta(seconds=1))
        # BR 7.1.2.1.2: cA TRUE, critical, pathLenConstraint NOT RECOMMENDED.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # BR 7.1.2.10.7: keyCertSign and cRLSign, critical; no digitalSignature:
        # these keys never sign OCSP responses directly.
        .add_extension(key_usage(digital_signature=False, signs_certificates=True), critical=True)
        .add_extension(ski, critical=False)
        # BR 7.1.2.1.3: authorityKeyIdentifier, when present, equals the SKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return sign_certificate(builder, FileSigner(key, key_id=f"dev-root:{name}"))


def _build_intermediate(
    *,
    subject_key: ec.EllipticCurvePrivateKey,
    issuer_cert: x509.Certificate,
    issuer_signer: Signer,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A TLS subordinate CA per BR 7.1.2.2/7.1.2.10 (like Let's Encrypt's E5).

    The cross-certificate is the same call with the other root as issuer:
    same subject, same key, so the leaf's AKI matches either.
    """
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(issuer_cert.subject)
        .subject_name(_ca_name(INTERMEDIATE_E1_NAME))
        .public_key(subject_key.public_key())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # BR 7.1.2.10.4: cA TRUE, critical; pathLen 0 — E1 only signs leaves.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # BR 7.1.2.10.7: keyCertSign and cRLSign, critical; no digitalSignature:
        # these keys never sign OCSP responses directly.
        .add_extension(key_usage(digital_signature=False, signs_certificates=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        # BR 7.1.2.10.6: a TLS subordinate CA carries serverAuth (and nothing
        # that is not TLS).
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # BR 7.1.2.10.5: a reserved CA/B Forum policy; E1 issues DV only.
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(DV_POLICY_OID, None)]),
            critical=False,
        )
    )
    return sign_certificate(builder, issuer_signer)


def _create_ca(paths: _Paths, now: datetime, entropy: Entropy) -> None:
    x1_key = ec.generate_private_key(ec.SECP384R1())
    x2_key = ec.generate_private_key(ec.SECP384R1())
    e1_key = ec.generate_private_key(ec.SECP384R1())
    x1 = _build_root(ROOT_X1_NAME, x1_key, now, entropy)
    x2 = _build_root(ROOT_X2_NAME, x2_key, now, entropy)
    not_after = now + INTERMEDIATE_VALIDITY - timedelta(seconds=1)
    e1 = _build_intermediate(
        subject_key=e1_key,
        issuer_cert=x1,
        issuer_signer=FileSigner(x1_key, key_id="dev-root:x1"),
        serial=new_serial(entropy),
        not_before=now,
        not_after=not_after,
    )
    e1_cross = _build_intermediate(
        subject_key=e1_key,
        issuer_cert=x2,
        issuer_signer=FileSigner(x2_key, key_id="dev-root:x2"),
        serial=new_serial(entropy),
        not_before=now,
        not_after=not_after,
    )
    # Keys first: they create the directory 0700 before any public file lands in it.
    write_private_key(paths.x1_key, x1_key)
    write_private_key(paths.x2_key, x2_key)
    write_private_key(paths.e1_key, e1_key)
    write_pem_atomic(paths.x1_cert, _pem(x1))
    write_pem_atomic(paths.x2_cert, _pem(x2))
    write_pem_atomic(paths.e1_cross, _pem(e1_cross))
    # e1.pem last: its presence marks a completed ceremony.
    write_pem_atomic(paths.e1_cert, _pem(e1))


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _load_issuer_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key: PrivateKeyTypes = load_private_key(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise HierarchyError(f"{path}: expected an ECDSA key")
    return key


def _same_public_key(cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _load_ca(paths: _Paths, now: datetime) -> tuple[tuple[x509.Certificate, ...], IssuerMaterial]:
    x1 = _load_cert(paths.x1_cert)
    x2 = _load_cert(paths.x2_cert)
    e1 = _load_cert(paths.e1_cert)
    e1_cross = _load_cert(paths.e1_cross)
    e1_key = _load_issuer_key(paths.e1_key)
    # Check the files still fit together: a mismatched pair would otherwise
    # surface much later as certificates no client can verify.
    try:
        x1.verify_directly_issued_by(x1)
        x2.verify_directly_issued_by(x2)
        e1.verify_directly_issued_by(x1)
        e1_cross.verify_directly_issued_by(x2)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise HierarchyError(f"development hierarchy does not verify: {exc}") from exc
    if not (_same_public_key(e1, e1_key) and _same_public_key(e1_cross, e1_key)):
        raise HierarchyError("e1.key does not match the E1 certificates")
    if now > e1.not_valid_after_utc or now > x1.not_valid_after_utc:
        raise HierarchyError(
            f"the development hierarchy in {paths.ca_dir} has expired; move it away to re-create it"
        )
    signer = FileSigner(e1_key, key_id=f"file:{paths.e1_key}")
    issuer = IssuerMaterial(id="e1", cert=e1, signer=signer, chains=((e1,), (e1_cross,)))
    return (x1, x2), issuer


def _server_names_split(server_names: Sequence[str]) -> tuple[list[str], list[str]]:
    dns: list[str] = []
    ips: list[str] = []
    for name in server_names:
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name.lower())
    return dns, ips


def _cert_names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    names.update(str(address) for address in san.get_values_for_type(x509.IPAddress))
    return names


def _server_cert_is_current(
    paths: _Paths, issuer: IssuerMaterial, wanted: set[str], now: datetime
) -> bool:
    if not (paths.server_cert.exists() and paths.server_key.exists()):
        return False
    try:
        leaf = x509.load_pem_x509_certificates(paths.server_cert.read_bytes())[0]
        key = load_private_key(paths.server_key)
        leaf.verify_directly_issued_by(issuer.cert)
        names = _cert_names(leaf)
    except Exception:  # unreadable, foreign or stale files: reissue
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return False
    return names == wanted and now < leaf.not_valid_after_utc - SERVER_CERT_RENEW_BEFORE


@dataclass(frozen=True)
class ListenerUrls:
    """Where the CA publishes (its management base URL). The listener's own
    certificate names them like every certificate the CA signs (BR 7.1.2.7:
    CRL DP and AIA caIssuers), so that it passes the same lint before an
    issuing key signs it: nothing unlinted is signed by an issuing key."""

    aia_base_url: str  # ends with "/"
    crl_base_url: str  # ends with "/"
    crl_shards: int = 16

    @classmethod
    def under(cls, management_base_url: str, crl_shards: int = 16) -> ListenerUrls:
        base = management_base_url.rstrip("/")
        return cls(f"{base}/aia/", f"{base}/crl/", crl_shards)


# The playground's management port (certmint-ca serve's default).
DEV_LISTENER_URLS = ListenerUrls.under("http://127.0.0.1:15000")


def _issue_server_cert(
    paths: _Paths,
    issuer: IssuerMaterial,
    server_names: Sequence[str],
    now: datetime,
    entropy: Entropy,
    urls: ListenerUrls = DEV_LISTENER_URLS,
) -> None:
    # crl.py imports this module (IssuerMaterial): import its URL rules here.
    from certmint.ca.issuance.crl import crl_url_for, shard_for_serial

    dns, ips = _server_names_split(server_names)
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = now - timedelta(hours=1)  # tolerate client clock skew
    serial = new_serial(entropy)
    shard = shard_for_serial(serial, urls.crl_shards)
    builder = subscriber_certificate_builder(
        issuer_cert=issuer.cert,
        public_key=key.public_key(),
        serial=serial,
        dns_names=dns,
        ip_addresses=ips,
        not_before=max(not_before, issuer.cert.not_valid_before_utc),
        not_after=not_before + SERVER_CERT_VALIDITY - timedelta(seconds=1),
        aia_issuer_url=f"{urls.aia_base_url}{issuer.id}.der",
        crl_url=crl_url_for(urls.crl_base_url, issuer.id, shard),
    )
    # Linted like a subscriber certificate. Its names are the listener's
    # (localhost, loopback addresses, the --listen host), which the BR call
    # internal: those findings, and only those, are waived for it.
    expected = IssuanceExpectation.of(
        issuer=issuer.cert, dns_names=dns, ip_addresses=ips, max_validity=SERVER_CERT_VALIDITY
    )
    linter = SubscriberLinter(KeyPolicy.default(), LintWaivers.everything_internal())
    leaf = sign_certificate(builder, issuer.signer, lint=linter.hook(expected))
    # Key before certificate, so a crash in between leaves a mismatch that
    # the next start detects and repairs, never a certificate without its key.
    write_private_key(paths.server_key, key)
    full_chain = _pem(leaf) + "".join(_pem(cert) for cert in issuer.chains[0])
    write_pem_atomic(paths.server_cert, full_chain)


def load_or_create_dev_hierarchy(
    data_dir: Path,
    clock: Clock,
    entropy: Entropy,
    server_names: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    listener_urls: ListenerUrls = DEV_LISTENER_URLS,
) -> Hierarchy:
    """Load the development hierarchy under ``data_dir``, creating it on first start."""
    data_dir = Path(data_dir)
    paths = _Paths(ca_dir=data_dir / "ca", tls_dir=data_dir / "tls")
    now = truncate_to_seconds(clock.now())

    present = [path for path in paths.ca_files() if path.exists()]
    if not present:
        _create_ca(paths, now, entropy)
    elif len(present) != len(paths.ca_files()):
        missing = sorted(str(p) for p in set(paths.ca_files()) - set(present))
        raise HierarchyError(f"incomplete development hierarchy; missing: {', '.join(missing)}")
    roots, issuer = _load_ca(paths, now)

    dns, ips = _server_names_split(server_names)
    wanted = set(dns) | set(ips)
    if not _server_cert_is_current(paths, issuer, wanted, now):
        _issue_server_cert(paths, issuer, server_names, now, entropy, listener_urls)

    return Hierarchy(
        roots=roots,
        issuers=(issuer,),
        root_paths=(paths.x1_cert, paths.x2_cert),
        tls_cert_path=paths.server_cert,
        tls_key_path=paths.server_key,
    )
