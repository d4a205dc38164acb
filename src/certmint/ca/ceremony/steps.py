"""Running a ceremony: look at everything first, then do what is left, in order.

A run has two phases. The plan reads every output that already exists and
decides, step by step, "already done" (the output is there and matches the
ceremony file: same key, same subject, signature verifies against the
issuer, same URLs and validity) or "to do". Any mismatch stops the run
before anything is created, so a wrong or edited ceremony file changes
nothing. Then each step to do is carried out: generate the key if it is not
there yet, build, lint, sign (``signing.sign_certificate``/``sign_crl``),
write atomically, print one line, append one audit record.

A key without its certificate (a run interrupted between the two) is
reused, and the audit record says so (``"generated": false``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from certmint.ca.ceremony import certs, lint
from certmint.ca.ceremony.audit import AuditLockedError, AuditLog, file_sha256, rfc3339
from certmint.ca.ceremony.config import (
    CeremonyConfig,
    CeremonyError,
    CertificateStep,
    CrlStep,
    Step,
)
from certmint.ca.ceremony.issuers_out import write_issuers_file
from certmint.ca.ceremony.keys import CeremonyKey
from certmint.ca.issuance.keys import write_pem_atomic
from certmint.ca.issuance.profile import new_serial, truncate_to_seconds
from certmint.ca.issuance.signer import Signer, spki_fingerprint
from certmint.ca.issuance.signing import LintError, SigningError, sign_certificate, sign_crl
from certmint.runtime import Clock, Entropy

ALREADY_DONE = "already done"
DONE = "done"


@dataclass
class StepState:
    step: Step
    status: str = "to do"  # or ALREADY_DONE, then DONE once carried out
    cert: x509.Certificate | None = None
    crl: x509.CertificateRevocationList | None = None
    key: CeremonyKey | None = None
    notes: list[str] = field(default_factory=list)
    # NOTICE/INFO findings pkilint reported on what this run signed (lint.py).
    lint_accepted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CeremonyResult:
    states: tuple[StepState, ...]
    audit_log: Path
    issuers_file: Path | None

    def status(self, step_id: str) -> str:
        return next(s.status for s in self.states if s.step.id == step_id)


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _fingerprint(key: CertificatePublicKeyTypes) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo (as signer.spki_fingerprint)."""
    return hashlib.sha256(_spki(key)).hexdigest()


def _cert_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Like keys.write_pem_atomic, for DER: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _jsonable(value: Any) -> Any:
    """A step's configuration as plain JSON for its audit record (never a PIN:
    the configuration holds only the PIN file's path)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _jsonable(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


class Ceremony:
    def __init__(
        self,
        config: CeremonyConfig,
        clock: Clock,
        entropy: Entropy,
        report: Callable[[str], None],
    ) -> None:
        self.config = config
        self._clock = clock
        self._entropy = entropy
        self._report = report
        # One "now" for the whole run: every default notBefore/thisUpdate is
        # the same second, so the plan can check validity nesting up front.
        self._now = truncate_to_seconds(clock.now())
        self._states: dict[str, StepState] = {}

    # -- running ----------------------------------------------------------

    def run(self) -> CeremonyResult:
        run_id = self._entropy.token_bytes(8).hex()
        audit = AuditLog(
            self.config.audit_log,
            ceremony=self.config.name,
            config_path=self.config.path,
            config_sha256=self.config.sha256,
            run=run_id,
        )
        try:
            audit.open()
        except (AuditLockedError, OSError) as exc:
            raise CeremonyError(f"audit log: {exc}") from None
        try:
            return self._run(audit)
        finally:
            audit.close()

    def _run(self, audit: AuditLog) -> CeremonyResult:
        audit.append("start", self._clock.now(), steps=[s.id for s in self.config.steps])
        current: str | None = None
        try:
            for step in self.config.steps:
                current = step.id
                self._plan(step)
            current = None
            for step in self.config.steps:
                current = step.id
                state = self._states[step.id]
                if state.status != ALREADY_DONE:
                    self._carry_out(state)
                    state.status = DONE
                audit.append("step", self._clock.now(), **self._record(state))
                self._report(self._line(state))
            current = None
            if self.config.issuers_file is not None:
                write_issuers_file(self.config, self._states)
                self._report(f"issuers file {self._rel(self.config.issuers_file)} written")
        except (CeremonyError, LintError, SigningError, OSError) as exc:
            reason = str(exc)
            where = f"step {current}: " if current else ""
            audit.append("refused", self._clock.now(), step=current, reason=reason)
            raise CeremonyError(f"{where}{reason}") from None
        done = [s.step.id for s in self._states.values() if s.status == DONE]
        already = [s.step.id for s in self._states.values() if s.status == ALREADY_DONE]
        finish: dict[str, Any] = {"done": done, "already_done": already}
        if self.config.issuers_file is not None:
            finish["issuers_file"] = {
                self._rel(self.config.issuers_file): file_sha256(self.config.issuers_file)
            }
        audit.append("finish", self._clock.now(), **finish)
        return CeremonyResult(
            states=tuple(self._states.values()),
            audit_log=self.config.audit_log,
            issuers_file=self.config.issuers_file,
        )

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.config.path.parent))
        except ValueError:
            return str(path)

    # -- the plan: read, compare, change nothing --------------------------

    def _done_state(self, step_id: str, needed_by: Step, output: Path) -> StepState:
        state = self._states[step_id]
        if state.status != ALREADY_DONE:
            raise CeremonyError(
                f"{self._rel(output)} exists but {step_id}, which {needed_by.id} depends on, "
                "is still to do; move it away or restore the earlier outputs"
            )
        return state

    def _plan(self, step: Step) -> None:
        state = StepState(step=step)
        self._states[step.id] = state
        if isinstance(step, CrlStep):
            self._plan_crl(state, step)
            return
        if step.key is not None:
            state.key = CeremonyKey(step.key)
        if not step.certificate.exists():
            self._plan_validity(step)
            if state.key is not None and state.key.exists():
                state.key.signer()  # the existing key must be what the file says
                state.notes.append("reusing the key already there")
            return
        path = self._rel(step.certificate)
        try:
            cert = x509.load_pem_x509_certificate(step.certificate.read_bytes())
        except ValueError:
            raise CeremonyError(f"{path} exists but is not a PEM certificate") from None
        if step.kind == "cross-sign":
            assert step.subject_step is not None
            subject = self._done_state(step.subject_step, step, step.certificate).cert
            assert subject is not None
            expected_name, expected_key = subject.subject, subject.public_key()
        else:
            assert state.key is not None and step.subject is not None
            if not state.key.exists():
                raise CeremonyError(f"{path} exists but its key ({state.key.describe()}) does not")
            expected_name = certs.ca_name(step.subject)
            expected_key = state.key.signer().public_key
        if cert.subject != expected_name:
            raise CeremonyError(
                f"{path} is for {cert.subject.rfc4514_string()}, "
                f"the ceremony file says {expected_name.rfc4514_string()}"
            )
        if _spki(cert.public_key()) != _spki(expected_key):
            raise CeremonyError(f"{path} certifies another key than this step's")
        if step.issuer is None:
            issuer_cert = cert
        else:
            issuer_state = self._done_state(step.issuer, step, step.certificate)
            assert issuer_state.cert is not None
            issuer_cert = issuer_state.cert
        try:
            cert.verify_directly_issued_by(issuer_cert)
        except (InvalidSignature, ValueError, TypeError):
            raise CeremonyError(f"{path} is not signed by {step.issuer or 'its own key'}") from None
        if step.crl_url is not None and certs.urls_of(cert) != (step.crl_url, step.ca_issuers_url):
            raise CeremonyError(f"{path} carries other CRL/caIssuers URLs than the ceremony file")
        span = cert.not_valid_after_utc - cert.not_valid_before_utc + timedelta(seconds=1)
        if span != timedelta(days=step.validity_days):
            raise CeremonyError(
                f"{path} lasts {span}, the ceremony file says {step.validity_days}d"
            )
        if step.not_before is not None and cert.not_valid_before_utc != step.not_before:
            raise CeremonyError(f"{path} starts at another time than the ceremony file says")
        state.cert = cert
        state.status = ALREADY_DONE

    def _planned_window(self, step: CertificateStep) -> tuple[datetime, datetime]:
        state = self._states[step.id]
        if state.cert is not None:
            return state.cert.not_valid_before_utc, state.cert.not_valid_after_utc
        start = truncate_to_seconds(step.not_before or self._now)
        return certs.validity(start, step.validity_days)

    def _plan_validity(self, step: CertificateStep) -> None:
        if step.issuer is None:
            return
        issuer = self.config.step(step.issuer)
        assert isinstance(issuer, CertificateStep)
        start, end = self._planned_window(step)
        issuer_start, issuer_end = self._planned_window(issuer)
        # A CA cannot vouch beyond its own validity (RFC 5280 §6.1.3 checks
        # every certificate of the path); refuse what would outlive its root.
        if end > issuer_end:
            raise CeremonyError(
                f"would end {rfc3339(end)}, after its issuer {issuer.id} ({rfc3339(issuer_end)})"
            )
        if start < issuer_start:
            raise CeremonyError(f"would start before its issuer {issuer.id}")

    def _plan_crl(self, state: StepState, step: CrlStep) -> None:
        if not step.crl.exists():
            return
        path = self._rel(step.crl)
        issuer = self._done_state(step.issuer, step, step.crl).cert
        assert issuer is not None
        data = step.crl.read_bytes()
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if data.startswith(b"-----")
                else x509.load_der_x509_crl(data)
            )
        except ValueError:
            raise CeremonyError(f"{path} exists but is not a CRL") from None
        issuer_key = issuer.public_key()
        if not isinstance(issuer_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise CeremonyError(f"{step.issuer}'s key is neither RSA nor ECDSA")
        if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer_key):
            raise CeremonyError(f"{path} is not signed by {step.issuer}")
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        if number != step.number:
            raise CeremonyError(
                f"{path} is CRL number {number}, the ceremony file says {step.number}"
            )
        listed = {entry.serial_number for entry in crl}
        if listed != {entry.serial for entry in step.revoked}:
            raise CeremonyError(f"{path} lists other serials than the ceremony file")
        state.crl = crl
        state.status = ALREADY_DONE

    # -- carrying out -------------------------------------------------------

    def _signer_of(self, step_id: str) -> tuple[x509.Certificate, Signer]:
        state = self._states[step_id]
        assert state.cert is not None and state.key is not None
        return state.cert, state.key.signer()

    def _carry_out(self, state: StepState) -> None:
        step = state.step
        if isinstance(step, CrlStep):
            self._carry_out_crl(state, step)
        else:
            self._carry_out_certificate(state, step)

    def _carry_out_crl(self, state: StepState, step: CrlStep) -> None:
        issuer_cert, signer = self._signer_of(step.issuer)
        this_update = truncate_to_seconds(step.this_update or self._now)
        builder = certs.ca_crl_builder(
            issuer_cert, this_update, step.next_update_days, step.number, step.revoked
        )
        record = lint.LintRecord(f"CRL {step.id}")
        crl = sign_crl(builder, signer, record.crl)
        encoding = (
            serialization.Encoding.PEM if step.crl.suffix == ".pem" else serialization.Encoding.DER
        )
        _write_bytes_atomic(step.crl, crl.public_bytes(encoding))
        state.crl = crl
        state.lint_accepted.extend(record.accepted)

    def _carry_out_certificate(self, state: StepState, step: CertificateStep) -> None:
        start, _ = self._planned_window(step)
        serial = new_serial(self._entropy)
        if step.kind == "cross-sign":
            assert step.subject_step is not None and step.issuer is not None
            subject_state = self._states[step.subject_step]
            assert subject_state.cert is not None
            issuer_cert, signer = self._signer_of(step.issuer)
            assert step.crl_url is not None and step.ca_issuers_url is not None
            builder = certs.cross_builder(
                subject_state.cert,
                issuer_cert,
                serial,
                start,
                step.validity_days,
                step.crl_url,
                step.ca_issuers_url,
            )
            kind = (
                lint.CROSS_OF_ROOT
                if subject_state.step.kind == "root"
                else lint.CROSS_OF_INTERMEDIATE
            )
        else:
            key = state.key
            assert key is not None and step.subject is not None
            if not key.exists():
                key.generate()
            public_key = key.signer().public_key
            if step.kind == "root":
                signer = key.signer()
                builder = certs.root_builder(
                    step.subject, public_key, serial, start, step.validity_days
                )
                kind = lint.ROOT
            else:
                assert step.issuer is not None
                assert step.crl_url is not None and step.ca_issuers_url is not None
                issuer_cert, signer = self._signer_of(step.issuer)
                builder = certs.intermediate_builder(
                    step.subject,
                    public_key,
                    issuer_cert,
                    serial,
                    start,
                    step.validity_days,
                    step.crl_url,
                    step.ca_issuers_url,
                )
                kind = lint.INTERMEDIATE
        record = lint.LintRecord(f"{step.kind} {step.id}")
        cert = sign_certificate(builder, signer, record.certificate(kind))
        write_pem_atomic(
            step.certificate, cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        )
        state.cert = cert
        state.lint_accepted.extend(record.accepted)

    # -- what is said and recorded ------------------------------------------

    def _signing_key_id(self, state: StepState) -> str:
        step = state.step
        signer_step = step.id if step.kind == "root" else getattr(step, "issuer", None)
        assert signer_step is not None
        signer_state = self._states[signer_step]
        assert signer_state.key is not None
        return signer_state.key.signer().key_id

    def _record(self, state: StepState) -> dict[str, Any]:
        step = state.step
        record: dict[str, Any] = {
            "step": step.id,
            "kind": step.kind,
            "status": state.status,
            "inputs": _jsonable(step),
            "signed_by": self._signing_key_id(state),
            "notes": list(state.notes),
            "lint_accepted": list(state.lint_accepted),
        }
        if isinstance(step, CrlStep):
            crl = state.crl
            assert crl is not None
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            _, signer = self._signer_of(step.issuer)
            record.update(
                key_id=signer.key_id,
                spki_sha256=spki_fingerprint(signer.public_key),
                crl_number=number,
                this_update=rfc3339(crl.last_update_utc),
                next_update=rfc3339(crl.next_update_utc) if crl.next_update_utc else None,
                revoked=[f"{entry.serial_number:x}" for entry in crl],
                outputs={self._rel(step.crl): file_sha256(step.crl)},
            )
            return record
        cert = state.cert
        assert cert is not None
        public_key = cert.public_key()
        if state.key is not None:
            record["key"] = state.key.audit()
            record["key_id"] = record["key"]["id"]
        else:  # a cross-sign: the certified key is the subject step's
            assert step.subject_step is not None
            subject_key = self._states[step.subject_step].key
            record["key_id"] = subject_key.signer().key_id if subject_key else None
        record.update(
            spki_sha256=_fingerprint(public_key),
            cert_sha256=_cert_sha256(cert),
            serial=f"{cert.serial_number:x}",
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_before=rfc3339(cert.not_valid_before_utc),
            not_after=rfc3339(cert.not_valid_after_utc),
            outputs={self._rel(step.certificate): file_sha256(step.certificate)},
        )
        return record

    def _line(self, state: StepState) -> str:
        step = state.step
        head = f"{step.kind} {step.id}:"
        if isinstance(step, CrlStep):
            crl = state.crl
            assert crl is not None
            what = (
                f"{self._rel(step.crl)} (CRL number {step.number} by {step.issuer}, "
                f"{len(step.revoked)} revoked, next update {rfc3339(crl.next_update_utc)})"
                if crl.next_update_utc
                else self._rel(step.crl)
            )
            if state.status == ALREADY_DONE:
                return f"{head} already done: {what}"
            return f"{head} signed {what}"
        cert = state.cert
        assert cert is not None
        facts = (
            f"{self._rel(step.certificate)} serial {cert.serial_number:x}, "
            f"SPKI sha256 {_fingerprint(cert.public_key())[:16]}"
        )
        if state.status == ALREADY_DONE:
            return f"{head} already done: {facts}"
        parts = []
        if state.key is not None:
            verb = "generated" if state.key.generated else "reused"
            parts.append(
                f"{verb} {step.key.algorithm if step.key else ''} key {state.key.describe()}"
            )
        by = "self-signed" if step.issuer is None else f"signed by {step.issuer}"
        if step.kind == "cross-sign":
            by = f"{step.subject_step} certified by {step.issuer}"
        parts.append(f"{by}: {facts}")
        return f"{head} " + "; ".join(parts)
