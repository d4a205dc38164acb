"""Revocation rules (RFC 8555 §7.6; BR 4.9, 7.2.2): who may revoke what, for
which reason, and what a key compromise sets off. The RA delegates here.

Who may revoke (RFC 8555 §7.6), checked in this order:

1. A request signed by the certificate's own key (a ``jwk`` JWS): proof of
   possession of that key, so, as Boulder's ``RevokeCertByKey`` and Let's
   Encrypt's CPS 4.9.3, the reason is keyCompromise whatever the request
   says (a reason outside the subscriber set is still ``badRevocationReason``),
   the key is blocked, and every unexpired certificate with that key is
   revoked for keyCompromise, whichever account holds it. A certificate
   already revoked for another reason is re-revoked for keyCompromise, its
   revocation date kept (Boulder's ``UpdateRevokedCertificate``).
2. The account that ordered the certificate: any subscriber reason. When it
   says keyCompromise, certmint treats that as the evidence BR 4.9.1.1 item 3
   speaks of -- the subscriber proved possession of the key in its CSR -- and
   does all of (1). Let's Encrypt records the reason but blocks nothing until
   compromise is demonstrated; see docs/divergences.md.
3. Another account holding valid, unexpired authorizations for every
   identifier in the certificate (dns and ip; a wildcard name needs a
   wildcard authorization): like Boulder (Mozilla Root Store Policy 6.1.1),
   the reason becomes cessationOfOperation, whatever was asked, because that
   account is not the subscriber and can only say the subscriber no longer
   controls the names.

Reasons a subscriber may give (BR 7.2.2, Mozilla Root Store Policy 6.1.1):
unspecified (0, encoded as no reasonCode), keyCompromise (1),
affiliationChanged (3), superseded (4), cessationOfOperation (5).
privilegeWithdrawn (9) and the CA-only codes are the operator's
(``certmint-ca admin revoke``); anything else is ``badRevocationReason``.
An expired certificate is not revoked (``unauthorized``, as Boulder): CRLs
drop it anyway (RFC 5280 §5.1.2.6).
"""

from __future__ import annotations

import logging

from cryptography import x509

from certmint.ca import errors
from certmint.ca.issuance.profile import serial_to_string
from certmint.ca.storage.records import (
    BLOCKED_BY_REVOCATION,
    CERT_REVOKED,
    VALID,
    AccountRecord,
    CertificateRecord,
)
from certmint.ca.storage.sa import StorageAuthority
from certmint.protocol.jwk import PublicKey, public_keys_equal
from certmint.runtime import Clock

log = logging.getLogger("certmint.ca.revocation")

UNSPECIFIED = 0
KEY_COMPROMISE = 1
CESSATION_OF_OPERATION = 5
PRIVILEGE_WITHDRAWN = 9

# RFC 5280 §5.3.1 reason codes a subscriber may ask for (BR 7.2.2).
SUBSCRIBER_REVOCATION_REASONS = frozenset({0, 1, 3, 4, 5})
# ... and what the operator may use besides: privilegeWithdrawn (BR 4.9.1.1
# items 2 and 7). cACompromise and the rest never appear on a subscriber CRL.
OPERATOR_REVOCATION_REASONS = SUBSCRIBER_REVOCATION_REASONS | {PRIVILEGE_WITHDRAWN}
REASON_NAMES = {
    0: "unspecified",
    1: "keyCompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
    9: "privilegeWithdrawn",
}


class RevocationAuthority:
    """The RA's revocation door: ``revoke`` for ACME requests."""

    def __init__(self, *, sa: StorageAuthority, clock: Clock) -> None:
        self._sa = sa
        self._clock = clock

    def revoke(
        self,
        cert_der: bytes,
        reason: int | None,
        *,
        account: AccountRecord | None,
        signing_key: PublicKey | None,
    ) -> None:
        try:
            cert = x509.load_der_x509_certificate(cert_der)
        except ValueError:
            raise errors.Malformed("certificate is not a DER X.509 certificate") from None
        serial = serial_to_string(cert.serial_number)
        record = self._sa.get_certificate(serial)
        if record is None or record.der != cert_der:
            raise errors.NotFound("this CA did not issue that certificate")
        code = UNSPECIFIED if reason is None else reason
        if code not in SUBSCRIBER_REVOCATION_REASONS:
            raise errors.BadRevocationReason(
                f"reason {code} is not one a subscriber may give; use 0 (unspecified), "
                "1 (keyCompromise), 3 (affiliationChanged), 4 (superseded) or 5 "
                "(cessationOfOperation)"
            )
        now = self._clock.now()
        if account is None:
            if signing_key is None or not public_keys_equal(signing_key, cert.public_key()):
                raise errors.Unauthorized("the request is not signed by the certificate's key")
            method = "certificate key"
            code = KEY_COMPROMISE  # possession of the key was just demonstrated
        elif record.account_id == account.id:
            method = f"subscriber account {account.id}"
        elif self._holds_authzs_for(account, cert):
            method = f"account {account.id} holding authorizations for every name"
            code = CESSATION_OF_OPERATION
        else:
            raise errors.Unauthorized(
                "only the account that ordered this certificate, one holding valid "
                "authorizations for all its names, or its own key may revoke it"
            )
        if record.not_after <= now:
            raise errors.Unauthorized("the certificate has expired; it needs no revocation")
        if code == KEY_COMPROMISE:
            self._revoke_key_compromise(record, method)
            return
        if record.status == CERT_REVOKED or not self._sa.revoke_certificate(serial, code, now):
            raise errors.AlreadyRevoked("certificate is already revoked")
        log.info("revoked %s (reason %d) at the request of the %s", serial, code, method)

    def _revoke_key_compromise(self, record: CertificateRecord, method: str) -> None:
        """Block the key, revoke (or re-revoke) every unexpired certificate
        with it; ``alreadyRevoked`` only if this certificate already was
        revoked for keyCompromise (the key is blocked all the same)."""
        outcome = self._sa.revoke_key(
            record.key_spki_sha256,
            self._clock.now(),
            source=BLOCKED_BY_REVOCATION,
            comment=f"keyCompromise revocation of serial {record.serial} by the {method}",
            revoked_serial=record.serial,
        )
        others = [s for s in (*outcome.revoked, *outcome.reason_updated) if s != record.serial]
        log.info(
            "keyCompromise: revoked %s at the request of the %s; key %s blocked%s; "
            "%d other certificate(s) with the key revoked",
            record.serial,
            method,
            record.key_spki_sha256,
            "" if outcome.newly_blocked else " already",
            len(others),
        )
        if record.serial not in outcome.revoked and record.serial not in outcome.reason_updated:
            raise errors.AlreadyRevoked("certificate is already revoked for keyCompromise")

    def _holds_authzs_for(self, account: AccountRecord, cert: x509.Certificate) -> bool:
        """RFC 8555 §7.6: the server MUST also consider authorized "an
        account that holds authorizations for all of the identifiers in the
        certificate" -- read from the certificate itself: dNSName SANs as dns
        identifiers, iPAddress SANs as ip ones (RFC 8738 §3), valid and
        unexpired now; a wildcard name needs a wildcard authorization."""
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        wanted = [
            ("dns", name.removeprefix("*."), name.startswith("*."))
            for name in san.get_values_for_type(x509.DNSName)
        ]
        wanted += [
            ("ip", str(address), False) for address in san.get_values_for_type(x509.IPAddress)
        ]
        if not wanted:
            return False
        held = self._sa.find_reusable_authzs(account.id, wanted, (VALID,), self._clock.now())
        return all(key in held for key in wanted)
