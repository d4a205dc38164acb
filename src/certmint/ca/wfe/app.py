"""The web front end (WFE): HTTP only. Routing, request authentication,
rendering, and the headers RFC 8555 asks for (Replay-Nonce, Link, Location,
Retry-After). Business decisions belong to the RA."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from certmint.ca import errors
from certmint.ca.ari import RETRY_AFTER_SECONDS
from certmint.ca.config import CAConfig
from certmint.ca.nonces import NonceService
from certmint.ca.policy import PolicyAuthority
from certmint.ca.ra import RegistrationAuthority
from certmint.ca.request_body import read_limited
from certmint.ca.storage.records import AccountRecord
from certmint.ca.storage.sa import StorageAuthority
from certmint.ca.urls import ACME_PREFIX, AcmeUrls
from certmint.ca.wfe.auth import Authenticated, KeyRule, RequestAuthenticator, check_content_type
from certmint.ca.wfe.render import Renderer
from certmint.protocol.b64 import b64url_encode
from certmint.protocol.csr import pem_encode_certificates
from certmint.protocol.messages import (
    AccountUpdateRequest,
    FinalizeRequest,
    MessageError,
    NewAccountRequest,
    NewOrderRequest,
    RevocationRequest,
)
from certmint.protocol.problems import PROBLEM_CONTENT_TYPE
from certmint.runtime import Entropy

log = logging.getLogger("certmint.ca.wfe")

JSON = "application/json"
PEM_CHAIN = "application/pem-certificate-chain"
Handler = Callable[[Request], Awaitable[Response]]


class WebFrontEnd:
    def __init__(
        self,
        *,
        config: CAConfig,
        ra: RegistrationAuthority,
        sa: StorageAuthority,
        pa: PolicyAuthority,
        nonces: NonceService,
        entropy: Entropy,
    ) -> None:
        self._config = config
        self._ra = ra
        self._nonces = nonces
        self._entropy = entropy
        self.urls = AcmeUrls(config.base_url)
        self._auth = RequestAuthenticator(self.urls, nonces, sa)
        self._render = Renderer(self.urls, config, pa)
        self._index_link = f'<{self.urls.directory}>;rel="index"'

    # -- plumbing ----------------------------------------------------------

    def _response(
        self,
        body: Any,
        *,
        status: int = 200,
        location: str | None = None,
        links: tuple[str, ...] = (),
        retry_after: bool = False,
        media_type: str = JSON,
    ) -> Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Replay-Nonce": self._nonces.issue(), "Cache-Control": "no-store"}
        all_links = (self._index_link, *links)
        headers["Link"] = ", ".join(all_links)
        if location is not None:
            headers["Location"] = location
        if retry_after:
            headers["Retry-After"] = str(self._config.retry_after_seconds)
        return Response(content, status_code=status, headers=headers, media_type=media_type)

    def _problem_response(self, exc: BaseException) -> Response:
        request_id = b64url_encode(self._entropy.token_bytes(9))
        problem = errors.to_problem(exc, request_id)
        if not isinstance(exc, errors.AcmeError):
            log.error("request %s failed", request_id, exc_info=exc)
        headers = {"Replay-Nonce": self._nonces.issue(), "Link": self._index_link}
        location = getattr(exc, "location", None)
        if location:
            headers["Location"] = location
        if isinstance(exc, errors.MethodNotAllowed):
            # RFC 9110 §15.5.6: a 405 MUST list the methods the resource
            # does allow; ACME resources take POST (RFC 8555 §6.3) unless
            # the router knows better (directory, newNonce).
            headers["Allow"] = getattr(exc, "allow", None) or "POST"
        return Response(
            problem.to_json_text().encode(),
            status_code=problem.status or 500,
            headers=headers,
            media_type=PROBLEM_CONTENT_TYPE,
        )

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # mapped by errors.to_problem; never leaked
                return self._problem_response(exc)

        return guarded

    def _request_url(self, request: Request) -> str:
        query = request.url.query
        return self.urls.base + request.url.path + (f"?{query}" if query else "")

    async def _authenticated(self, request: Request, rule: KeyRule) -> Authenticated:
        if request.method != "POST":
            raise errors.MethodNotAllowed(
                "use POST (or POST-as-GET, RFC 8555 §6.3) for this resource"
            )
        check_content_type(request.headers.get("content-type"))
        body = await read_limited(request, self._config.max_body_bytes)
        if body is None:
            raise errors.Malformed("request body is too large", status=413)
        return self._auth.authenticate(body, self._request_url(request), rule)

    @staticmethod
    def _require_post_as_get(auth: Authenticated) -> None:
        if not auth.jws.is_post_as_get:
            raise errors.Malformed("this resource takes POST-as-GET: the payload must be empty")

    @staticmethod
    def _message(parse: Callable[[Any], Any], payload: Any) -> Any:
        try:
            return parse(payload)
        except MessageError as exc:
            raise errors.Malformed(str(exc)) from None

    @staticmethod
    def _account_of(auth: Authenticated) -> AccountRecord:
        if auth.account is None:  # KeyRule.KID guarantees it; never trust that silently
            raise errors.ServerInternal("request was not authenticated by an account")
        return auth.account

    # -- directory and nonces (RFC 8555 §7.1.1, §7.2) ----------------------

    async def directory(self, request: Request) -> Response:
        if request.method not in ("GET", "POST"):
            raise errors.MethodNotAllowed("use GET for the directory")
        return Response(
            self._render.directory_body,
            media_type=JSON,
            headers={"Replay-Nonce": self._nonces.issue()},
        )

    async def new_nonce(self, request: Request) -> Response:
        if request.method == "POST":
            await self._authenticated(request, KeyRule.KID)
            status = 200
        else:
            status = 200 if request.method == "HEAD" else 204
        return Response(
            status_code=status,
            headers={
                "Replay-Nonce": self._nonces.issue(),
                "Cache-Control": "no-store",
                "Link": self._index_link,
            },
        )

    # -- accounts ----------------------------------------------------------

    async def new_account(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.JWK)
        message = self._message(NewAccountRequest.from_json, auth.payload())
        assert auth.jwk is not None
        account, created = self._ra.accounts.new_account(auth.jwk, message)
        if account.status != "valid":
            raise errors.Unauthorized(f"the account for this key is {account.status}")
        return self._response(
            self._render.account(account),
            status=201 if created else 200,
            location=self.urls.account(account.id),
        )

    async def account(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.KID)
        account = self._account_of(auth)
        if account.id != request.path_params["account_id"]:
            raise errors.Unauthorized("the request is not signed by this account's key")
        if not auth.jws.is_post_as_get:
            message = self._message(AccountUpdateRequest.from_json, auth.payload())
            account = self._ra.accounts.update_account(account, message)
        return self._response(self._render.account(account), location=self.urls.account(account.id))

    async def account_orders(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.KID)
        account = self._account_of(auth)
        if account.id != request.path_params["account_id"]:
            raise errors.Unauthorized("only the account itself may list its orders")
        self._require_post_as_get(auth)
        raw_cursor = request.query_params.get("cursor")
        if raw_cursor is not None and not raw_cursor.isdigit():
            raise errors.Malformed("cursor must be a number")
        views, next_cursor = self._ra.list_orders(account, int(raw_cursor) if raw_cursor else None)
        links: tuple[str, ...] = ()
        if next_cursor is not None:
            links = (f'<{self.urls.account_orders(account.id, next_cursor)}>;rel="next"',)
        body = {"orders": [self.urls.order(v.order.id) for v in views]}
        return self._response(body, links=links)

    async def key_change(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.KID)
        account = self._ra.accounts.change_key(
            self._account_of(auth), auth.payload(), auth.jws.url or ""
        )
        return self._response(self._render.account(account), location=self.urls.account(account.id))

    # -- orders ------------------------------------------------------------

    async def new_order(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.KID)
        message = self._message(NewOrderRequest.from_json, auth.payload())
        view = self._ra.new_order(self._account_of(auth), message)
        return self._response(
            self._render.order(view),
            status=201,
            location=self.urls.order(view.order.id),
            retry_after=view.status in ("pending", "processing"),
        )

    async def order(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.KID)
        self._require_post_as_get(auth)
        view = self._ra.get_order(self._account_of(auth), request.path_params["order_id"])
        return self._response(
            self._render.order(view),
            location=self.urls.order(view.order.id),
            retry_after=view.status in ("pending", "processing"),
        )

    async def finalize(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.KID)
        message = self._message(FinalizeRequest.from_json, auth.payload())
        account = self._account_of(auth)
        # BR 3.2.2.8: CAA re-checked for authorizations validated long ago.
        await self._ra.recheck_caa(account, request.path_params["order_id"])
        view = self._ra.finalize(account, request.path_params["order_id"], message.csr_der)
        return self._response(
            self._render.order(view),
            location=self.urls.order(view.order.id),
            retry_after=view.status == "processing",
        )

    # -- authorizations and challenges ------------------------------------

    async def authz(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.KID)
        account = self._account_of(auth)
        authz_id = request.path_params["authz_id"]
        if auth.jws.is_post_as_get:
            view = self._ra.get_authz(account, authz_id)
        else:
            payload = auth.payload()
            # §7.5.2: the only update a client may make is deactivation.
            if payload != {"status": "deactivated"}:
                raise errors.Malformed('an authorization update must be {"status": "deactivated"}')
            view = self._ra.deactivate_authz(account, authz_id)
        return self._response(
            self._render.authz(view),
            location=self.urls.authz(authz_id),
            retry_after=view.status == "pending",
        )

    async def challenge(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.KID)
        account = self._account_of(auth)
        authz_id = request.path_params["authz_id"]
        challenge_id = request.path_params["challenge_id"]
        if auth.jws.is_post_as_get:
            view = self._ra.get_authz(account, authz_id)
            challenge = next((c for c in view.authz.challenges if c.id == challenge_id), None)
            if challenge is None:
                raise errors.NotFound(f"no challenge {challenge_id}")
        else:
            # §7.5.1: the response to a challenge is exactly the empty object.
            if auth.payload() != {}:
                raise errors.Malformed("a challenge response must be the empty JSON object {}")
            view, challenge, validation = self._ra.start_challenge(
                account, authz_id, challenge_id, account.key_thumbprint
            )
            wait = self._config.inline_validation_wait_seconds
            if validation is not None and wait > 0:
                # Answer with the outcome when validation is quick (it usually
                # is): the client's first poll then finds the authorization
                # settled instead of polling while it runs.
                settled = await self._ra.await_validation(validation, wait)
                if settled is not None:
                    challenge = next(c for c in settled.challenges if c.id == challenge_id)
        return self._response(
            self._render.challenge(challenge),
            location=self.urls.challenge(authz_id, challenge_id),
            links=(f'<{self.urls.authz(authz_id)}>;rel="up"',),
            retry_after=challenge.status == "processing",
        )

    # -- certificates (RFC 8555 §7.4.2) and revocation (§7.6) --------------

    async def certificate(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.KID)
        self._require_post_as_get(auth)
        serial = request.path_params["serial"]
        raw_alt = request.path_params.get("alternate", "0")
        if not raw_alt.isdigit():
            raise errors.NotFound("no such alternate chain")
        cert = self._ra.get_certificate(self._account_of(auth), serial)
        chains = self._ra.chains_pem(cert.issuer_id)
        alternate = int(raw_alt)
        if alternate >= len(chains):
            raise errors.NotFound("no such alternate chain")
        body = (pem_encode_certificates([cert.der]) + chains[alternate]).encode()
        links = tuple(
            f'<{self.urls.certificate(serial, n)}>;rel="alternate"'
            for n in range(len(chains))
            if n != alternate
        )
        return self._response(body, links=links, media_type=PEM_CHAIN)

    async def revoke_cert(self, request: Request) -> Response:
        auth = await self._authenticated(request, KeyRule.EITHER)
        message = self._message(RevocationRequest.from_json, auth.payload())
        self._ra.revoke(
            message.certificate_der,
            message.reason,
            account=auth.account,
            signing_key=auth.key if auth.account is None else None,
        )
        return self._response(b"", media_type=JSON)

    # -- renewal information (RFC 9773 §4) ---------------------------------

    async def renewal_info(self, request: Request) -> Response:
        """RFC 9773 §4.1: an unauthenticated GET of ``<renewalInfo>/<certID>``
        (the router answers any other method with 405 and ``Allow``)."""
        window = self._ra.renewals.renewal_window(request.path_params["cert_id"])
        return Response(
            json.dumps(self._render.renewal_info(window)).encode(),
            media_type=JSON,
            headers={
                # §4.3: when to ask again; §4.2 windows may change (incidents).
                "Retry-After": str(RETRY_AFTER_SECONDS),
                "Link": self._index_link,
            },
        )

    async def not_found(self, request: Request) -> Response:
        raise errors.NotFound(f"no ACME resource at {request.url.path}")

    # -- routing -----------------------------------------------------------

    def routes(self) -> list[Route]:
        p = ACME_PREFIX
        table: list[tuple[str, Handler, list[str]]] = [
            ("/directory", self.directory, ["GET", "POST"]),
            (f"{p}/new-nonce", self.new_nonce, ["GET", "HEAD", "POST"]),
            (f"{p}/new-account", self.new_account, ["GET", "POST"]),
            (f"{p}/acct/{{account_id}}", self.account, ["GET", "POST"]),
            (f"{p}/acct/{{account_id}}/orders", self.account_orders, ["GET", "POST"]),
            (f"{p}/key-change", self.key_change, ["GET", "POST"]),
            (f"{p}/new-order", self.new_order, ["GET", "POST"]),
            (f"{p}/order/{{order_id}}", self.order, ["GET", "POST"]),
            (f"{p}/order/{{order_id}}/finalize", self.finalize, ["GET", "POST"]),
            (f"{p}/authz/{{authz_id}}", self.authz, ["GET", "POST"]),
            (f"{p}/chall/{{authz_id}}/{{challenge_id}}", self.challenge, ["GET", "POST"]),
            (f"{p}/cert/{{serial}}", self.certificate, ["GET", "POST"]),
            (f"{p}/cert/{{serial}}/{{alternate}}", self.certificate, ["GET", "POST"]),
            (f"{p}/revoke-cert", self.revoke_cert, ["GET", "POST"]),
            (f"{p}/renewal-info/{{cert_id}}", self.renewal_info, ["GET"]),
        ]
        return [Route(path, self._guard(h), methods=m) for path, h, m in table]

    def asgi_app(self) -> Starlette:
        app = Starlette(routes=self.routes())
        not_found = self._guard(self.not_found)

        async def on_404(request: Request, exc: Exception) -> Response:
            return await not_found(request)

        async def on_405(request: Request, exc: Exception) -> Response:
            error = errors.MethodNotAllowed("method not allowed here")
            # Starlette's router knows this route's real methods.
            router_headers = getattr(exc, "headers", None) or {}
            error.allow = router_headers.get("Allow")  # type: ignore[attr-defined]
            return self._problem_response(error)

        app.add_exception_handler(404, on_404)
        app.add_exception_handler(405, on_405)
        return app
