"""Typed CA errors and the ONE function that maps them to RFC 7807 documents.

Components raise ``AcmeError`` subclasses (or return failure as data, in the
VA's case). Anything else that escapes is a bug: ``to_problem`` turns it into a
bare ``serverInternal`` carrying only the request id, and the WFE logs it.
"""

from __future__ import annotations

from certmint.protocol.problems import Problem, ProblemType


class AcmeError(Exception):
    problem_type: str = ProblemType.MALFORMED
    status: int = 400

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        subproblems: tuple[Problem, ...] = (),
        identifier: tuple[str, str] | None = None,
        algorithms: tuple[str, ...] = (),
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.subproblems = subproblems
        self.identifier = identifier
        self.algorithms = algorithms

    def problem(self) -> Problem:
        return Problem(
            type=self.problem_type,
            detail=self.detail,
            status=self.status,
            identifier=self.identifier,
            subproblems=self.subproblems,
            algorithms=self.algorithms,
        )


def _error(name: str, ptype: str, status: int) -> type[AcmeError]:
    return type(name, (AcmeError,), {"problem_type": ptype, "status": status})


Malformed = _error("Malformed", ProblemType.MALFORMED, 400)
BadNonce = _error("BadNonce", ProblemType.BAD_NONCE, 400)
BadSignatureAlgorithm = _error("BadSignatureAlgorithm", ProblemType.BAD_SIGNATURE_ALGORITHM, 400)
BadCSR = _error("BadCSR", ProblemType.BAD_CSR, 400)
BadPublicKey = _error("BadPublicKey", ProblemType.BAD_PUBLIC_KEY, 400)
BadRevocationReason = _error("BadRevocationReason", ProblemType.BAD_REVOCATION_REASON, 400)
AlreadyRevoked = _error("AlreadyRevoked", ProblemType.ALREADY_REVOKED, 400)
# RFC 9773 §5: replacing a certificate that another order already replaced.
AlreadyReplaced = _error("AlreadyReplaced", ProblemType.ALREADY_REPLACED, 409)
Unauthorized = _error("Unauthorized", ProblemType.UNAUTHORIZED, 403)
AccountDoesNotExist = _error("AccountDoesNotExist", ProblemType.ACCOUNT_DOES_NOT_EXIST, 400)
ExternalAccountRequired = _error(
    "ExternalAccountRequired", ProblemType.EXTERNAL_ACCOUNT_REQUIRED, 400
)
InvalidContact = _error("InvalidContact", ProblemType.INVALID_CONTACT, 400)
UnsupportedContact = _error("UnsupportedContact", ProblemType.UNSUPPORTED_CONTACT, 400)
InvalidProfile = _error("InvalidProfile", ProblemType.INVALID_PROFILE, 400)
OrderNotReady = _error("OrderNotReady", ProblemType.ORDER_NOT_READY, 403)
RejectedIdentifier = _error("RejectedIdentifier", ProblemType.REJECTED_IDENTIFIER, 400)
UnsupportedIdentifier = _error("UnsupportedIdentifier", ProblemType.UNSUPPORTED_IDENTIFIER, 400)
RateLimited = _error("RateLimited", ProblemType.RATE_LIMITED, 429)
UserActionRequired = _error("UserActionRequired", ProblemType.USER_ACTION_REQUIRED, 403)
# The CAA re-check at finalize (RFC 8659): refused, or its lookup failed.
CAA = _error("CAA", ProblemType.CAA, 403)
DNS = _error("DNS", ProblemType.DNS, 400)
# 404/405/409/415 are plain HTTP conditions; RFC 8555 gives them no type of
# their own, so they travel as ``malformed`` with the right status.
NotFound = _error("NotFound", ProblemType.MALFORMED, 404)
MethodNotAllowed = _error("MethodNotAllowed", ProblemType.MALFORMED, 405)
Conflict = _error("Conflict", ProblemType.MALFORMED, 409)
UnsupportedMediaType = _error("UnsupportedMediaType", ProblemType.MALFORMED, 415)
ServerInternal = _error("ServerInternal", ProblemType.SERVER_INTERNAL, 500)


def to_problem(exc: BaseException, request_id: str) -> Problem:
    """Map any exception to the problem document a client may see.

    Typed errors keep their detail; anything untyped is hidden behind the
    request id so that nothing internal leaks (the caller logs ``exc``).
    """
    if isinstance(exc, AcmeError):
        return exc.problem()
    return Problem(
        type=ProblemType.SERVER_INTERNAL,
        detail=f"internal error; quote request id {request_id} to the operator",
        status=500,
    )
