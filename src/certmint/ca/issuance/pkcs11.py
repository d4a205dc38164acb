"""Issuing keys that never leave a PKCS#11 token (an HSM, or SoftHSM2 in tests).

``Pkcs11Signer`` is the ``Signer`` seam over python-pkcs11: the CA hands it
the to-be-signed bytes and gets back an X.509 signatureValue, the private key
staying in the token (CKA_SENSITIVE, never extractable). ``generate_key_pair``
makes such keys for the key ceremony.

Threading. python-pkcs11 initialises every module with ``C_Initialize(NULL)``,
which per PKCS#11 v2.40 §5.4 tells the library that the application will not
call it from several threads at once, and SoftHSM2 then runs without its
mutexes. So every call into one module goes through that module's lock.
One logged-in session per (module, token) is shared by all its signers: the
PKCS#11 login state is per application and token (a second ``C_Login`` fails
with CKR_USER_ALREADY_LOGGED_IN), and with calls serialised per module more
sessions would buy nothing. A session per call was measured too (bench/
signers.py, row "raw, session per call"): C_OpenSession + C_Login + key lookup
+ C_CloseSession cost two to four times the signature itself on SoftHSM2.

Forks. A PKCS#11 module must be initialised again in a child process (§5.4,
"C_Initialize ... after fork"). ``serve`` loads and checks the hierarchy in the
parent, calls ``release_modules()`` and lets each worker open its own.

Several processes. Opening a session (C_Initialize, the token lookup, C_Login)
takes an exclusive advisory lock on ``open_lock`` when one is given, so the
CA's processes open their sessions one at a time. SoftHSM2's file store
rewrites the token's object file on C_Login (and its generation file in
C_Initialize) while another process may be reading it: a worker that looked
the token up at that moment was told "no token labelled ..." and died at
start-up (SoftHSMv2 issue #757, "Token integrity check failed"). Signing
writes nothing, so signatures from several processes need no such lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from certmint.ca.issuance.signer import SignatureHash, SignerError, hash_for

# What the ceremony may generate: BR 6.1.5 (RSA ≥ 2048 with a modulus a
# multiple of 8, ECDSA P-256/P-384) as Let's Encrypt's hierarchy uses them.
KEY_SPECS: dict[str, tuple[str, int]] = {
    "ecdsa-p256": ("secp256r1", 256),
    "ecdsa-p384": ("secp384r1", 384),
    "rsa-2048": ("rsa", 2048),
    "rsa-3072": ("rsa", 3072),
    "rsa-4096": ("rsa", 4096),
}

T = TypeVar("T")


@dataclass
class _Module:
    lib: Any  # pkcs11.lib: a Cython class without useful types
    lock: threading.RLock


_modules: dict[str, _Module] = {}
_sessions: dict[tuple[str, str], tuple[Any, bytes]] = {}  # (module, token) -> (session, PIN digest)
_registry_lock = threading.Lock()


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong, in the operator's words."""
    import pkcs11.exceptions as p11e

    reasons: dict[type[BaseException], str] = {
        p11e.PinIncorrect: "wrong PIN",
        p11e.PinLocked: "the PIN is locked (too many wrong attempts)",
        p11e.PinExpired: "the PIN has expired",
        p11e.PinLenRange: "the PIN has the wrong length",
        p11e.UserPinNotInitialized: "the token's user PIN is not initialised",
        p11e.TokenNotPresent: "the token is not present",
        p11e.TokenNotRecognised: "the token is not recognised",
        p11e.DeviceRemoved: "the token was removed",
        p11e.DeviceError: "the device reported an error",
        p11e.SessionCount: "the token has no free session",
        p11e.MechanismInvalid: "the token does not support this mechanism",
        p11e.KeySizeRange: "the token does not support this key size",
        p11e.DomainParamsInvalid: "the token does not support this curve",
        p11e.TokenWriteProtected: "the token is write-protected",
    }
    for kind, text in reasons.items():
        if isinstance(exc, kind):
            return text
    detail = str(exc).strip()
    return type(exc).__name__ + (f": {detail}" if detail else "")


def _module(module_path: str) -> _Module:
    with _registry_lock:
        module = _modules.get(module_path)
        if module is None:
            import pkcs11

            try:
                lib = pkcs11.lib(module_path)
            except Exception as exc:  # RuntimeError/OSError from dlopen or C_Initialize
                raise SignerError(f"cannot load PKCS#11 module {module_path}: {exc}") from None
            module = _Module(lib=lib, lock=threading.RLock())
            _modules[module_path] = module
        return module


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode("utf-8")).digest()


@contextmanager
def _opening(open_lock: Path | None) -> Iterator[None]:
    """Hold ``open_lock`` (flock, exclusive) while a session is opened: see
    "Several processes" above. The lock goes with the descriptor, so a
    process that dies holding it frees it."""
    if open_lock is None:
        yield
        return
    try:
        open_lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(open_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SignerError(f"cannot open the PKCS#11 lock {open_lock}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_session_of(key: tuple[str, str], pin: str) -> Any | None:
    """The session already open on ``key``, if any (under the module's lock).

    The token is then already logged in and a second C_Login would fail,
    so the PIN is checked against the one that opened it instead."""
    existing = _sessions.get(key)
    if existing is None:
        return None
    session, digest = existing
    if not hmac.compare_digest(digest, _pin_digest(pin)):
        raise SignerError(f"token {key[1]!r}: wrong PIN")
    return session


def _session(
    module_path: str, token_label: str, pin: str, open_lock: Path | None = None
) -> tuple[_Module, Any]:
    """The logged-in session on ``token_label`` (opened on first use)."""
    import pkcs11
    import pkcs11.exceptions as p11e

    key = (module_path, token_label)
    with _registry_lock:
        known = _modules.get(module_path)
    if known is not None:
        with known.lock:
            session = _open_session_of(key, pin)
            if session is not None:
                return known, session
    with _opening(open_lock):
        module = _module(module_path)
        with module.lock:
            session = _open_session_of(key, pin)  # another thread may have opened it
            if session is not None:
                return module, session
            try:
                token = module.lib.get_token(token_label=token_label)
            except p11e.NoSuchToken:
                raise SignerError(f"no token labelled {token_label!r} in {module_path}") from None
            except p11e.MultipleTokensReturned:
                raise SignerError(
                    f"several tokens labelled {token_label!r} in {module_path}"
                ) from None
            except pkcs11.PKCS11Error as exc:
                raise SignerError(f"token {token_label!r}: {_reason(exc)}") from None
            try:
                session = token.open(rw=True, user_pin=pin)
            except pkcs11.PKCS11Error as exc:
                raise SignerError(f"token {token_label!r}: {_reason(exc)}") from None
            _sessions[key] = (session, _pin_digest(pin))
            return module, session


def _forget_session(module_path: str, token_label: str) -> None:
    """Drop a session the token no longer knows (HSM restarted, token reinserted)."""
    existing = _sessions.pop((module_path, token_label), None)
    if existing is not None:
        try:
            existing[0].close()
        except Exception:  # noqa: S110 - it is already gone; nothing to tell anyone
            pass


def release_modules() -> None:
    """Close every session and finalise every module this process opened.

    Before a fork (the children initialise their own), and in tests between
    tokens of different SoftHSM2 configurations (SoftHSM2 reads
    SOFTHSM2_CONF in C_Initialize)."""
    import pkcs11

    with _registry_lock:
        for module_path, module in list(_modules.items()):
            with module.lock:
                for key in [k for k in _sessions if k[0] == module_path]:
                    _forget_session(*key)
                try:
                    pkcs11.unload(module_path)
                except Exception:  # noqa: S110 - finalising a broken module: nothing left to do
                    pass
        _modules.clear()


def _public_key_from_token(public: Any) -> CertificateIssuerPublicKeyTypes:
    """A token's CKO_PUBLIC_KEY as a ``cryptography`` key."""
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key

    if public.key_type == KeyType.EC:
        key = serialization.load_der_public_key(encode_ec_public_key(public))
    elif public.key_type == KeyType.RSA:
        modulus = int.from_bytes(public[Attribute.MODULUS], "big")
        exponent = int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big")
        key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    else:
        raise SignerError(f"issuing keys are RSA or ECDSA, not {public.key_type.name}")
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise SignerError(f"issuing keys are RSA or ECDSA, not {type(key).__name__}")
    return key


def _find_pair(session: Any, token_label: str, key_label: str) -> tuple[Any, Any]:
    import pkcs11
    import pkcs11.exceptions as p11e
    from pkcs11 import ObjectClass

    found = []
    for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
        what = "private" if object_class == ObjectClass.PRIVATE_KEY else "public"
        try:
            found.append(session.get_key(object_class=object_class, label=key_label))
        except p11e.NoSuchKey:
            raise SignerError(
                f"no {what} key labelled {key_label!r} on token {token_label!r}"
            ) from None
        except p11e.MultipleObjectsReturned:
            raise SignerError(
                f"several {what} keys labelled {key_label!r} on token {token_label!r}"
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise SignerError(f"token {token_label!r}: {_reason(exc)}") from None
    return found[0], found[1]


@dataclass(frozen=True)
class KeyProtection:
    """What the token says about a private key (PKCS#11 §4.9): the ceremony
    records it and refuses an issuing key that was ever extractable."""

    sensitive: bool
    always_sensitive: bool
    extractable: bool
    never_extractable: bool
    local: bool  # generated on the token, not imported

    @property
    def hardware_bound(self) -> bool:
        return self.always_sensitive and self.never_extractable and self.local


class Pkcs11Signer:
    """A ``Signer`` whose key is ``key_label`` on the token ``token_label``.

    ``open_lock``: the lock file every process of one CA shares while opening
    its session ("Several processes" above); None for a lone process."""

    def __init__(
        self,
        module_path: str,
        token_label: str,
        pin: str,
        key_label: str,
        *,
        open_lock: Path | None = None,
    ) -> None:
        self._module_path = module_path
        self._token_label = token_label
        self._pin = pin
        self._key_label = key_label
        self._open_lock = open_lock
        # RFC 7512 PKCS#11 URI: how HSM tools name the same key.
        self._key_id = f"pkcs11:token={token_label};object={key_label};type=private"
        # The private key object as found through one session: a key object
        # is only good with the session (and module) that found it.
        self._bound: tuple[Any, Any] | None = None
        public = self._with_key(lambda _private: self._public_object())
        self._public = public
        self._hash = hash_for(self._public)
        self._is_ec = isinstance(self._public, ec.EllipticCurvePublicKey)

    def _public_object(self) -> CertificateIssuerPublicKeyTypes:
        assert self._bound is not None
        _, public = _find_pair(self._bound[0], self._token_label, self._key_label)
        return _public_key_from_token(public)

    def _with_key(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation(private key object)`` under the module's lock.

        The key is looked up again whenever the session changed: after
        ``release_modules()`` (a fork) or a lost session, which is reopened
        once (an HSM restart or a reinserted token invalidates sessions)."""
        import pkcs11
        import pkcs11.exceptions as p11e

        lost = (p11e.SessionHandleInvalid, p11e.SessionClosed, p11e.DeviceRemoved)
        for attempt in (1, 2):
            module, session = _session(
                self._module_path, self._token_label, self._pin, self._open_lock
            )
            with module.lock:
                try:
                    if self._bound is None or self._bound[0] is not session:
                        private, _ = _find_pair(session, self._token_label, self._key_label)
                        self._bound = (session, private)
                    return operation(self._bound[1])
                except lost as exc:
                    self._bound = None
                    _forget_session(self._module_path, self._token_label)
                    if attempt == 2:
                        raise SignerError(f"{self._key_id}: {_reason(exc)}") from None
                except pkcs11.PKCS11Error as exc:
                    raise SignerError(f"{self._key_id}: {_reason(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._public

    @property
    def hash_algorithm(self) -> SignatureHash:
        return self._hash

    def protection(self) -> KeyProtection:
        from pkcs11 import Attribute

        def read(key: Any) -> KeyProtection:
            return KeyProtection(
                sensitive=bool(key[Attribute.SENSITIVE]),
                always_sensitive=bool(key[Attribute.ALWAYS_SENSITIVE]),
                extractable=bool(key[Attribute.EXTRACTABLE]),
                never_extractable=bool(key[Attribute.NEVER_EXTRACTABLE]),
                local=bool(key[Attribute.LOCAL]),
            )

        return self._with_key(read)

    def sign(self, tbs: bytes) -> bytes:
        from pkcs11 import Mechanism

        if self._is_ec:
            # CKM_ECDSA signs a digest the caller computes (PKCS#11 v2.40
            # §2.3.6); the token returns r || s, X.509 wants the DER
            # ECDSA-Sig-Value (RFC 3279 §2.2.3).
            hasher = hashes.Hash(self._hash)
            hasher.update(tbs)
            digest = hasher.finalize()
            raw: bytes = self._with_key(lambda key: key.sign(digest, mechanism=Mechanism.ECDSA))
            if len(raw) % 2:
                raise SignerError(f"{self._key_id}: malformed ECDSA signature")
            half = len(raw) // 2
            r = int.from_bytes(raw[:half], "big")
            s = int.from_bytes(raw[half:], "big")
            return encode_dss_signature(r, s)
        # CKM_SHA256_RSA_PKCS hashes on the token and pads with PKCS#1 v1.5
        # (RFC 8017 §8.2), BR 7.1.3.2.1's sha256WithRSAEncryption.
        signature: bytes = self._with_key(
            lambda key: key.sign(tbs, mechanism=Mechanism.SHA256_RSA_PKCS)
        )
        return signature


# -- key generation (the ceremony) -------------------------------------------


def key_exists(module_path: str, token_label: str, pin: str, key_label: str) -> bool:
    """True when any key object on the token is labelled ``key_label``."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    module, session = _session(module_path, token_label, pin)
    with module.lock:
        try:
            for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                template = {Attribute.CLASS: object_class, Attribute.LABEL: key_label}
                if any(True for _ in session.get_objects(template)):
                    return True
        except pkcs11.PKCS11Error as exc:
            raise SignerError(f"token {token_label!r}: {_reason(exc)}") from None
    return False


def generate_key_pair(
    module_path: str, token_label: str, pin: str, key_label: str, spec: str
) -> CertificateIssuerPublicKeyTypes:
    """Generate a ``spec`` key pair on the token, labelled ``key_label``.

    The private key is a token object, CKA_SENSITIVE and not CKA_EXTRACTABLE
    (so NEVER_EXTRACTABLE for its whole life), usable only to sign; CKA_ID is
    the RFC 5280 §4.2.1.2 method-1 key identifier, the certificate's SKI, as
    PKCS#11 tools expect to pair keys with certificates."""
    import pkcs11
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    if spec not in KEY_SPECS:
        raise SignerError(f"unknown key type {spec!r} (one of {', '.join(KEY_SPECS)})")
    if key_exists(module_path, token_label, pin, key_label):
        raise SignerError(f"token {token_label!r} already holds a key labelled {key_label!r}")
    family, size = KEY_SPECS[spec]
    private_template = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    public_template = {
        Attribute.TOKEN: True,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
    }
    module, session = _session(module_path, token_label, pin)
    with module.lock:
        try:
            if family == "rsa":
                public, private = session.generate_keypair(
                    KeyType.RSA,
                    size,
                    store=True,
                    label=key_label,
                    public_template=public_template,
                    private_template=private_template,
                )
            else:
                parameters = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(family)},
                    local=True,
                )
                public, private = parameters.generate_keypair(
                    store=True,
                    label=key_label,
                    public_template=public_template,
                    private_template=private_template,
                )
            key = _public_key_from_token(public)
            key_id = _method1_key_id(key)
            public[Attribute.ID] = key_id
            private[Attribute.ID] = key_id
        except pkcs11.PKCS11Error as exc:
            raise SignerError(f"token {token_label!r}: {_reason(exc)}") from None
    return key


def _method1_key_id(key: CertificateIssuerPublicKeyTypes) -> bytes:
    from cryptography import x509

    return x509.SubjectKeyIdentifier.from_public_key(key).digest
