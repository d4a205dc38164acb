"""The agent's wire layer: signed ACME requests over one kept-alive connection.

``AcmeSession`` knows RFC 8555 §6 and nothing about orders or accounts: it
signs every POST with the shared ``protocol.jws`` code (``kid`` once the
account URL is known, ``jwk`` before that, §6.2), keeps a pool of the
``Replay-Nonce`` values the CA hands out (§6.5) so a run rarely spends a
round trip on newNonce, retries a request the CA refused with ``badNonce``
(§6.5: "clients SHOULD retry"), and turns every problem document (§6.7,
RFC 7807) into ``AcmeProblemError`` and every other failure into a one-line
``ClientError``.

Everything the CA sends is hostile until checked: response bodies are read up
to a size limit, nonces must be base64url (§6.5.1 says to ignore others), and
problem details are stripped of control characters before anybody prints
them, so a CA cannot write escape sequences to the user's terminal.

Usage::

    with AcmeSession("https://acme.example/directory", account_key) as session:
        session.directory.new_order
        response = session.post(url, {"identifiers": [...]})
"""

from __future__ import annotations

import email.utils
import re
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from certmint import __version__
from certmint.client.errors import AcmeProblemError, ClientError
from certmint.protocol.jwk import PrivateKey
from certmint.protocol.jws import sign_acme_request
from certmint.protocol.messages import DirectoryMsg, MessageError
from certmint.protocol.problems import PROBLEM_CONTENT_TYPE, Problem, ProblemType
from certmint.protocol.strictjson import strict_json_loads
from certmint.runtime import Clock, SystemClock

JOSE_CONTENT_TYPE = "application/jose+json"
DEFAULT_USER_AGENT = f"certmint/{__version__}"
DEFAULT_TIMEOUT_SECONDS = 30.0

# Pebble rejects 5 % of good nonces by default; ten refusals in a row of one
# request would mean something else is wrong (0.05^10).
MAX_BAD_NONCE_RETRIES = 10
# The largest answer we read: a certificate chain or an order with a few
# hundred identifiers is far below this; anything larger is not ACME.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# Nonces are single-use and expire at the CA; a few in hand is plenty, and the
# newest is the least likely to have expired (we hand out the newest first).
_NONCE_POOL_SIZE = 8
# RFC 8555 §6.5.1: base64url without padding; the length cap is ours.
_NONCE_SYNTAX = re.compile(r"[A-Za-z0-9_-]{1,256}")
_PROBLEM_TEXT_LIMIT = 1000
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Headers that describe the encoding on the wire; dropped once the body is
# decoded so the response we hand on describes the bytes it holds.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def clean_text(text: str, limit: int = _PROBLEM_TEXT_LIMIT) -> str:
    """One printable line from untrusted text: control characters become a
    space, and the length is capped."""
    flat = _CONTROL_CHARACTERS.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _clean_problem(problem: Problem, http_status: int) -> Problem:
    subproblems = tuple(_clean_problem(sub, 0) for sub in problem.subproblems[:100])
    identifier = problem.identifier
    if identifier is not None:
        identifier = (clean_text(identifier[0], 64), clean_text(identifier[1], 256))
    return Problem(
        type=clean_text(problem.type, 200),
        detail=clean_text(problem.detail),
        status=problem.status or http_status,
        identifier=identifier,
        subproblems=subproblems,
        algorithms=tuple(clean_text(a, 32) for a in problem.algorithms[:20]),
    )


def retry_after_seconds(response: httpx.Response, now: datetime) -> float | None:
    """The response's ``Retry-After`` (RFC 9110 §10.2.3) in seconds from ``now``.

    Either a number of seconds or an HTTP-date; None when absent or unreadable.
    Never negative.
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 §5.6.7: HTTP-dates are in GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def parse_link_header(values: Iterable[str]) -> list[tuple[str, frozenset[str]]]:
    """``(target, relations)`` for every link in ``Link`` headers (RFC 8288 §3).

    httpx's ``response.links`` keeps one link per relation; ACME sends several
    ``rel="alternate"`` links (RFC 8555 §7.4.2), so we parse them ourselves.
    """
    links: list[tuple[str, frozenset[str]]] = []
    for value in values:
        position = 0
        while len(links) < 100:
            start = value.find("<", position)
            if start < 0:
                break
            end = value.find(">", start)
            if end < 0:
                break
            target = value[start + 1 : end].strip()
            # Parameters run to the next link: a "," outside quotes.
            cursor, in_quotes = end + 1, False
            while cursor < len(value) and (in_quotes or value[cursor] != ","):
                if value[cursor] == '"':
                    in_quotes = not in_quotes
                cursor += 1
            relations: set[str] = set()
            for parameter in value[end + 1 : cursor].split(";"):
                name, _, raw = parameter.partition("=")
                if name.strip().lower() == "rel":
                    relations.update(raw.strip().strip('"').lower().split())
            links.append((target, frozenset(relations)))
            position = cursor + 1
    return links


def _tls_setting(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    # A path is a CA bundle (a test CA's root, a corporate proxy's).
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(f"cannot read the CA bundle {verify}: {exc}") from None
    return verify


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


class AcmeSession:
    """Signed requests to one ACME server with one account key.

    ``http`` may be an ``httpx.Client`` of the caller's (tests pass one over a
    ``MockTransport``); it is then used as given and not closed by ``close``,
    and ``verify``, ``timeout`` and ``user_agent`` do not apply to it.
    """

    def __init__(
        self,
        directory_url: str,
        key: PrivateKey,
        *,
        verify: bool | str | ssl.SSLContext = True,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        user_agent: str = DEFAULT_USER_AGENT,
        kid: str | None = None,
        clock: Clock | None = None,
        http: httpx.Client | None = None,
        max_bad_nonce_retries: int = MAX_BAD_NONCE_RETRIES,
        trust_env: bool = False,
    ) -> None:
        self.directory_url = directory_url
        self.key: PrivateKey = key
        self.kid = kid
        self.clock: Clock = clock or SystemClock()
        self.max_bad_nonce_retries = max_bad_nonce_retries
        # How many requests were sent again after badNonce, for the curious
        # (tests, -v output, benchmarks).
        self.bad_nonce_retries = 0
        self._nonces: list[str] = []
        self._directory: DirectoryMsg | None = None
        self._owns_http = http is None
        if http is None:
            # One HTTP/1.1 client for the whole run: every request after the
            # first reuses the kept-alive TLS connection.
            http = httpx.Client(
                verify=_tls_setting(verify),
                timeout=httpx.Timeout(timeout),
                headers={"User-Agent": user_agent},
                # ACME never redirects; a 3xx is reported, not followed.
                follow_redirects=False,
                # Proxy and CA-bundle variables (HTTPS_PROXY, SSL_CERT_FILE)
                # only when the CLI asks: nothing below it reads the
                # environment (DESIGN.md §2).
                trust_env=trust_env,
            )
        self._http = http

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> AcmeSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the directory (RFC 8555 §7.1.1) -----------------------------------

    @property
    def directory(self) -> DirectoryMsg:
        """The CA's directory, fetched on first use and kept for the session."""
        if self._directory is None:
            response = self.get(self.directory_url)
            try:
                self._directory = DirectoryMsg.from_json(self.json(response))
            except MessageError as exc:
                raise ClientError(
                    f"{self.directory_url} is not an ACME directory: {clean_text(str(exc))}"
                ) from None
        return self._directory

    # -- nonces (RFC 8555 §6.5) ---------------------------------------------

    def _remember_nonce(self, response: httpx.Response) -> None:
        nonce = response.headers.get("Replay-Nonce")
        # §6.5.1: a client MUST ignore an invalid Replay-Nonce value.
        if nonce is not None and _NONCE_SYNTAX.fullmatch(nonce):
            self._nonces.append(nonce)
            del self._nonces[:-_NONCE_POOL_SIZE]

    def _take_nonce(self) -> str:
        # The directory first: fetching it may bring a nonce of its own.
        new_nonce = self.directory.new_nonce
        if not self._nonces:
            response = self._send("HEAD", new_nonce)
            if not response.is_success:
                self._raise_for(response, new_nonce)
            if not self._nonces:
                raise ClientError(f"{_host_of(new_nonce)} gave no usable Replay-Nonce")
        return self._nonces.pop()

    @property
    def pooled_nonces(self) -> int:
        return len(self._nonces)

    # -- requests ----------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP exchange, the body read up to ``MAX_RESPONSE_BYTES``."""
        try:
            request = self._http.build_request(method, url, **kwargs)
            response = self._http.send(request, stream=True)
            try:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                    raise ClientError(f"{_host_of(url)} sent a response of {declared} bytes")
                chunks: list[bytes] = []
                size = 0
                # iter_bytes decodes gzip and friends: the cap holds after
                # decompression too.
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise ClientError(
                            f"{_host_of(url)} sent more than {MAX_RESPONSE_BYTES} bytes"
                        )
                    chunks.append(chunk)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            reason = clean_text(str(exc), 300) or type(exc).__name__
            raise ClientError(f"could not reach {_host_of(url)}: {reason}") from None
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in _WIRE_HEADERS
        ]
        decoded = httpx.Response(
            response.status_code, headers=headers, content=b"".join(chunks), request=request
        )
        self._remember_nonce(decoded)
        return decoded

    def get(self, url: str) -> httpx.Response:
        """An unauthenticated GET (directory, renewalInfo, RFC 8555 §6.3)."""
        response = self._send("GET", url)
        if not response.is_success:
            self._raise_for(response, url)
        return response

    def post(
        self,
        url: str,
        payload: Any | None,
        *,
        use_jwk: bool = False,
        key: PrivateKey | None = None,
        accept: str | None = None,
    ) -> httpx.Response:
        """Sign ``payload`` (None: POST-as-GET, §6.3) and POST it to ``url``.

        Signed with ``kid`` once the session has an account URL, else (or
        with ``use_jwk``) with the public key embedded as ``jwk`` (§6.2).
        ``key`` signs instead of the account key (revocation by the
        certificate's own key, §7.6). Returns the 2xx response; raises
        ``AcmeProblemError`` for a problem document, ``ClientError`` otherwise.
        """
        signing_key = key or self.key
        kid = None if use_jwk else self.kid
        headers = {"Content-Type": JOSE_CONTENT_TYPE}
        if accept is not None:
            headers["Accept"] = accept
        for attempt in range(self.max_bad_nonce_retries + 1):
            body = sign_acme_request(
                signing_key, payload, url=url, nonce=self._take_nonce(), kid=kid
            )
            response = self._send("POST", url, content=body, headers=headers)
            if response.is_success:
                return response
            problem = self._problem_of(response)
            # §6.5: the error response carries a fresh nonce (now pooled),
            # and the request may simply be sent again.
            if (
                problem is not None
                and problem.type == ProblemType.BAD_NONCE
                and attempt < self.max_bad_nonce_retries
            ):
                self.bad_nonce_retries += 1
                continue
            self._raise_for(response, url, problem)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def post_as_get(self, url: str, *, accept: str | None = None) -> httpx.Response:
        """POST-as-GET (RFC 8555 §6.3): a signed request with an empty payload."""
        return self.post(url, None, accept=accept)

    # -- reading answers ---------------------------------------------------

    def retry_after(self, response: httpx.Response) -> float | None:
        """``Retry-After`` in seconds from now, or None (see ``retry_after_seconds``)."""
        return retry_after_seconds(response, self.clock.now())

    @staticmethod
    def json(response: httpx.Response) -> Any:
        """The body as JSON, parsed strictly (no duplicate keys, no NaN)."""
        try:
            return strict_json_loads(response.content)
        except ValueError as exc:
            raise ClientError(
                f"{_host_of(str(response.request.url))} answered with invalid JSON: "
                f"{clean_text(str(exc), 200)}"
            ) from None

    @staticmethod
    def _problem_of(response: httpx.Response) -> Problem | None:
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        # Some servers label problems application/json; accept any JSON
        # object with a "type" then.
        if content_type not in (PROBLEM_CONTENT_TYPE, "application/json"):
            return None
        try:
            document = strict_json_loads(response.content)
        except ValueError:
            return None
        if not isinstance(document, dict) or not isinstance(document.get("type"), str):
            return None
        try:
            return _clean_problem(Problem.from_json(document), response.status_code)
        except (ValueError, RecursionError):
            return None

    def _raise_for(
        self, response: httpx.Response, url: str, problem: Problem | None = None
    ) -> None:
        problem = problem or self._problem_of(response)
        if problem is not None:
            raise AcmeProblemError(problem, url)
        reason = response.reason_phrase or "error"
        raise ClientError(
            f"{_host_of(url)} answered HTTP {response.status_code} {clean_text(reason, 80)} "
            f"to {response.request.method} {clean_text(url, 300)}"
        )
