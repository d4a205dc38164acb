"""The ceremony's one input: a declarative TOML file, read strictly.

Every key is known, typed and checked before anything happens; an error is
one line naming the file and the key (``ceremony.toml: step[2] (e7).key.label:
missing``). Paths are relative to the file, so a ceremony directory can be
moved or copied to the ceremony laptop as a whole. See docs/ceremony.md for
the reference and an example.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from certmint.ca.issuance.pkcs11 import KEY_SPECS

# BR 7.1.2.1.1: a root's validity is at least 2922 and at most 9132 days.
ROOT_MIN_DAYS = 2922
ROOT_MAX_DAYS = 9132
# BR 4.9.7: a CRL covering CA certificates is reissued at least every twelve
# months, its nextUpdate no more than twelve months after thisUpdate.
CA_CRL_MAX_DAYS = 365
# BR 7.2.2 / RFC 5280 §5.3.1: the reasons a CA certificate may be revoked for.
CA_CRL_REASONS = (
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)
STEP_KINDS = ("root", "intermediate", "cross-sign", "crl")
# Step ids become issuer ids in AIA and CRL URLs: short and URL-safe.
_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_SERIAL_RE = re.compile(r"[0-9a-f]{1,40}")

T = TypeVar("T")


class CeremonyError(Exception):
    """The ceremony stopped; the message is one line for the operator."""


class CeremonyConfigError(CeremonyError):
    """The ceremony file is not valid; the message is one line naming the key."""


@dataclass(frozen=True)
class HsmConfig:
    name: str
    module: str
    token: str
    pin_file: Path


@dataclass(frozen=True)
class KeyConfig:
    algorithm: str  # one of KEY_SPECS
    file: Path | None = None  # a 0600 PEM file ...
    hsm: HsmConfig | None = None  # ... or a key labelled ``label`` on a token
    label: str | None = None


@dataclass(frozen=True)
class SubjectConfig:
    # BR 7.1.2.10.2: a CA's subject is countryName, organizationName, commonName.
    country: str
    organization: str
    common_name: str


@dataclass(frozen=True)
class CertificateStep:
    """``root``, ``intermediate`` or ``cross-sign``."""

    kind: str
    id: str
    certificate: Path
    validity_days: int
    not_before: datetime | None
    subject: SubjectConfig | None  # root, intermediate
    key: KeyConfig | None  # root, intermediate
    issuer: str | None  # intermediate, cross-sign: a root step's id
    subject_step: str | None  # cross-sign: the root or intermediate certified again
    crl_url: str | None  # intermediate, cross-sign: BR 7.1.2.11.2
    ca_issuers_url: str | None  # intermediate, cross-sign: BR 7.1.2.10.3
    issuing: bool  # intermediate: listed in the issuers file for serve


@dataclass(frozen=True)
class RevokedConfig:
    serial: int
    reason: str | None
    revoked_at: datetime


@dataclass(frozen=True)
class CrlStep:
    kind: str  # "crl"
    id: str
    issuer: str
    crl: Path
    number: int
    next_update_days: int
    this_update: datetime | None
    revoked: tuple[RevokedConfig, ...]


Step = CertificateStep | CrlStep


@dataclass(frozen=True)
class CeremonyConfig:
    path: Path
    sha256: str  # of the file's bytes: every audit record carries it
    name: str
    audit_log: Path
    issuers_file: Path | None
    hsms: dict[str, HsmConfig]
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


class _Table:
    """One TOML table read strictly: every key taken once, leftovers refused."""

    def __init__(self, data: Any, where: str, file: str) -> None:
        if not isinstance(data, dict):
            raise CeremonyConfigError(f"{file}: {where}: must be a table")
        self._data: dict[str, Any] = data
        self._taken: set[str] = set()
        self.where = where
        self.file = file

    def error(self, key: str, text: str) -> CeremonyConfigError:
        return CeremonyConfigError(f"{self.file}: {self.where}.{key}: {text}".replace(": .", ": "))

    def _get(self, key: str, kind: type[T], what: str, required: bool) -> T | None:
        self._taken.add(key)
        if key not in self._data:
            if required:
                raise self.error(key, "missing")
            return None
        value = self._data[key]
        # bool is an int in Python; TOML keeps them apart, and so do we.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"must be {what}")
        return value

    def text(self, key: str, *, required: bool = True) -> str | None:
        value = self._get(key, str, "a string", required)
        if value is not None and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def need_text(self, key: str) -> str:
        value = self.text(key)
        assert value is not None
        return value

    def integer(self, key: str, *, required: bool = True, minimum: int = 1) -> int | None:
        value = self._get(key, int, "an integer", required)
        if value is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, bool, "true or false", False)
        return default if value is None else value

    def when(self, key: str, *, required: bool = False) -> datetime | None:
        value = self._get(key, datetime, "an RFC 3339 date-time with a time zone", required)
        if value is not None and value.utcoffset() is None:
            raise self.error(key, "needs a time zone (e.g. 2026-01-01T00:00:00Z)")
        return None if value is None else value.astimezone(UTC)

    def table(self, key: str, *, required: bool = True) -> _Table | None:
        self._taken.add(key)
        if key not in self._data:
            if required:
                raise self.error(key, "missing")
            return None
        return _Table(self._data[key], f"{self.where}.{key}".lstrip("."), self.file)

    def array(self, key: str) -> list[Any]:
        value = self._get(key, list, "an array", False)
        return [] if value is None else value

    def path(self, key: str, base: Path, *, required: bool = True) -> Path | None:
        value = self.text(key, required=required)
        return None if value is None else (base / value).resolve()

    def url(self, key: str) -> str:
        value = self.need_text(key)
        if not re.fullmatch(r"https?://[^\s/]+/\S*", value):
            raise self.error(key, "must be an http:// or https:// URL with a path")
        # BR 7.1.2.11.2 / 7.1.2.10.3: relying parties fetch CRLs and issuer
        # certificates over plain HTTP (fetching them over HTTPS could loop).
        if not value.startswith("http://"):
            raise self.error(key, "must be an http:// URL (BR 7.1.2.10.3, 7.1.2.11.2)")
        return value

    def finish(self) -> None:
        extra = sorted(set(self._data) - self._taken)
        if extra:
            raise self.error(extra[0], "unknown key")


def load_ceremony_config(path: Path) -> CeremonyConfig:
    """Read and check the whole ceremony file; CeremonyConfigError if anything is off."""
    path = Path(path).resolve()
    file = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CeremonyConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CeremonyConfigError(f"{file}: not valid TOML: {exc}") from None
    base = path.parent
    top = _Table(data, "", file)

    ceremony = top.table("ceremony")
    assert ceremony is not None
    name = ceremony.need_text("name")
    audit_log = ceremony.path("audit_log", base)
    issuers_file = ceremony.path("issuers_file", base, required=False)
    ceremony.finish()
    assert audit_log is not None

    hsms: dict[str, HsmConfig] = {}
    hsm_tables = top.table("hsm", required=False)
    if hsm_tables is not None:
        for hsm_name in list(hsm_tables._data):
            table = hsm_tables.table(hsm_name)
            assert table is not None
            pin_file = table.path("pin_file", base)
            assert pin_file is not None
            hsms[hsm_name] = HsmConfig(
                name=hsm_name,
                module=table.need_text("module"),
                token=table.need_text("token"),
                pin_file=pin_file,
            )
            table.finish()

    raw_steps = top.array("step")
    if not raw_steps:
        raise top.error("step", "no [[step]] given")
    steps: list[Step] = []
    for index, raw_step in enumerate(raw_steps):
        label = raw_step.get("id") if isinstance(raw_step, dict) else None
        where = f"step[{index}]" + (f" ({label})" if isinstance(label, str) else "")
        table = _Table(raw_step, where, file)
        steps.append(_step(table, base, hsms, steps))
        table.finish()
    top.finish()
    _check_outputs(file, steps, audit_log, issuers_file)
    if issuers_file is not None and not any(
        isinstance(s, CertificateStep) and s.kind == "intermediate" and s.issuing for s in steps
    ):
        raise CeremonyConfigError(
            f"{file}: ceremony.issuers_file: no intermediate step is issuing = true"
        )
    return CeremonyConfig(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        name=name,
        audit_log=audit_log,
        issuers_file=issuers_file,
        hsms=hsms,
        steps=tuple(steps),
    )


def _step(table: _Table, base: Path, hsms: dict[str, HsmConfig], earlier: list[Step]) -> Step:
    kind = table.need_text("kind")
    if kind not in STEP_KINDS:
        raise table.error("kind", f"must be one of {', '.join(STEP_KINDS)}")
    step_id = table.need_text("id")
    if not _ID_RE.fullmatch(step_id):
        raise table.error("id", "must be 1-32 of a-z, 0-9 and '-', starting with a letter or digit")
    if any(step.id == step_id for step in earlier):
        raise table.error("id", f"{step_id!r} is used by an earlier step")
    by_id = {step.id: step for step in earlier}

    def earlier_step(key: str, kinds: tuple[str, ...]) -> str:
        ref = table.need_text(key)
        step = by_id.get(ref)
        if step is None:
            raise table.error(key, f"{ref!r} is not an earlier step")
        if step.kind not in kinds:
            raise table.error(key, f"{ref!r} is not a {' or '.join(kinds)} step ({step.kind})")
        return ref

    if kind == "crl":
        crl_issuer = earlier_step("issuer", ("root",))
        crl = table.path("crl", base)
        assert crl is not None
        next_update_days = table.integer("next_update_days")
        assert next_update_days is not None
        if next_update_days > CA_CRL_MAX_DAYS:
            raise table.error("next_update_days", f"at most {CA_CRL_MAX_DAYS} (BR 4.9.7)")
        number = table.integer("number")
        assert number is not None
        if number >= 2**159:  # RFC 5280 §5.2.3: at most 20 octets
            raise table.error("number", "at most 20 octets (RFC 5280 §5.2.3)")
        revoked = tuple(
            _revoked(_Table(entry, f"{table.where}.revoked[{n}]", table.file))
            for n, entry in enumerate(table.array("revoked"))
        )
        return CrlStep(
            kind=kind,
            id=step_id,
            issuer=crl_issuer,
            crl=crl,
            number=number,
            next_update_days=next_update_days,
            this_update=table.when("this_update"),
            revoked=revoked,
        )

    certificate = table.path("certificate", base)
    assert certificate is not None
    validity_days = table.integer("validity_days")
    assert validity_days is not None
    if kind == "root" and not ROOT_MIN_DAYS <= validity_days <= ROOT_MAX_DAYS:
        raise table.error(
            "validity_days", f"a root lasts {ROOT_MIN_DAYS} to {ROOT_MAX_DAYS} days (BR 7.1.2.1.1)"
        )
    subject: SubjectConfig | None = None
    key: KeyConfig | None = None
    issuer: str | None = None
    subject_step: str | None = None
    crl_url: str | None = None
    ca_issuers_url: str | None = None
    if kind in ("root", "intermediate"):
        subject = _subject(table)
        key_table = table.table("key")
        assert key_table is not None
        key = _key(key_table, base, hsms)
        key_table.finish()
    if kind in ("intermediate", "cross-sign"):
        issuer = earlier_step("issuer", ("root",))
        crl_url = table.url("crl_url")
        ca_issuers_url = table.url("ca_issuers_url")
    if kind == "cross-sign":
        subject_step = earlier_step("subject_step", ("root", "intermediate"))
        if subject_step == issuer:
            raise table.error("subject_step", "a root does not cross-sign itself")
    issuing = table.boolean("issuing", default=True) if kind == "intermediate" else False
    return CertificateStep(
        kind=kind,
        id=step_id,
        certificate=certificate,
        validity_days=validity_days,
        not_before=table.when("not_before"),
        subject=subject,
        key=key,
        issuer=issuer,
        subject_step=subject_step,
        crl_url=crl_url,
        ca_issuers_url=ca_issuers_url,
        issuing=issuing,
    )


def _subject(table: _Table) -> SubjectConfig:
    sub = table.table("subject")
    assert sub is not None
    country = sub.need_text("country")
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise sub.error("country", "must be a two-letter ISO 3166-1 code (BR 7.1.4.2)")
    subject = SubjectConfig(
        country=country,
        organization=sub.need_text("organization"),
        common_name=sub.need_text("common_name"),
    )
    for key, value in (
        ("organization", subject.organization),
        ("common_name", subject.common_name),
    ):
        if len(value) > 64:  # RFC 5280 Appendix A ub-organization-name, ub-common-name
            raise sub.error(key, "at most 64 characters (RFC 5280 Appendix A)")
    sub.finish()
    return subject


def _key(table: _Table, base: Path, hsms: dict[str, HsmConfig]) -> KeyConfig:
    algorithm = table.need_text("algorithm")
    if algorithm not in KEY_SPECS:
        raise table.error("algorithm", f"must be one of {', '.join(KEY_SPECS)}")
    file = table.path("file", base, required=False)
    hsm_name = table.text("hsm", required=False)
    label = table.text("label", required=False)
    if (file is None) == (hsm_name is None):
        raise table.error("file", "give either file = PATH or hsm = NAME with label = LABEL")
    if hsm_name is not None:
        if hsm_name not in hsms:
            raise table.error("hsm", f"no [hsm.{hsm_name}] table")
        if label is None:
            raise table.error("label", "missing (the key's CKA_LABEL on the token)")
        return KeyConfig(algorithm=algorithm, hsm=hsms[hsm_name], label=label)
    if label is not None:
        raise table.error("label", "only for keys in an hsm")
    return KeyConfig(algorithm=algorithm, file=file)


def _revoked(table: _Table) -> RevokedConfig:
    serial = table.need_text("serial").lower().removeprefix("0x").replace(":", "")
    if not _SERIAL_RE.fullmatch(serial) or int(serial, 16) == 0:
        raise table.error("serial", "must be a positive hex serial of at most 20 octets")
    reason = table.text("reason", required=False)
    if reason is not None and reason not in CA_CRL_REASONS:
        raise table.error("reason", f"must be one of {', '.join(CA_CRL_REASONS)} (BR 7.2.2)")
    revoked_at = table.when("revoked_at", required=True)
    assert revoked_at is not None
    table.finish()
    return RevokedConfig(serial=int(serial, 16), reason=reason, revoked_at=revoked_at)


def _check_outputs(
    file: str, steps: list[Step], audit_log: Path, issuers_file: Path | None
) -> None:
    """No two things written to one path, and no two keys sharing one label."""
    seen: dict[Path, str] = {audit_log: "ceremony.audit_log"}
    if issuers_file is not None:
        if issuers_file in seen:
            raise CeremonyConfigError(f"{file}: ceremony.issuers_file: same path as audit_log")
        seen[issuers_file] = "ceremony.issuers_file"
    labels: dict[tuple[str, str, str], str] = {}
    for step in steps:
        outputs = [step.crl] if isinstance(step, CrlStep) else [step.certificate]
        if isinstance(step, CertificateStep) and step.key is not None:
            if step.key.file is not None:
                outputs.append(step.key.file)
            elif step.key.hsm is not None and step.key.label is not None:
                slot = (step.key.hsm.module, step.key.hsm.token, step.key.label)
                if slot in labels:
                    raise CeremonyConfigError(
                        f"{file}: step {step.id}: key label {step.key.label!r} on token "
                        f"{step.key.hsm.token!r} is also step {labels[slot]}'s"
                    )
                labels[slot] = step.id
        for output in outputs:
            if output in seen:
                raise CeremonyConfigError(
                    f"{file}: step {step.id}: {output.name} is also written by {seen[output]}"
                )
            seen[output] = f"step {step.id}"
