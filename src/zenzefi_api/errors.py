"""How failures become responses: every body is `{"status_code", "detail"}` (plus `errors` for
validation), and nothing internal (stack traces, SQL, host names) ever reaches a client.

Domain errors carry messages written for users, so their text is passed on; the status comes
from the most specific class in `STATUS_BY_ERROR`. Anything unexpected is logged with its
traceback and answered with a generic 500.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from zenzefi_api.schemas import ErrorBody, FieldError, ValidationErrorBody
from zenzefi_core.errors import (
    ActionRefused,
    AuthenticationFailed,
    Conflict,
    DomainError,
    DuplicateUser,
    InsufficientBalance,
    InvalidAmount,
    InvalidDuration,
    InvalidInput,
    InvalidReferralCode,
    InvalidScope,
    InvalidSignature,
    InvalidWebhookUrl,
    NotFound,
    PaymentMismatch,
    PermissionDenied,
    StorageUnavailable,
    TokenNotRefundable,
)
from zenzefi_core.money import Sign, parse_amount

logger = logging.getLogger("zenzefi.api")

#: A domain error's status is that of the first of its classes (most specific first) listed here.
STATUS_BY_ERROR: dict[type[DomainError], int] = {
    InvalidReferralCode: 400,
    InvalidDuration: 400,
    InvalidScope: 400,
    InvalidWebhookUrl: 400,
    TokenNotRefundable: 400,
    DuplicateUser: 400,
    ActionRefused: 400,
    PaymentMismatch: 400,
    InvalidInput: 422,
    InvalidAmount: 422,
    AuthenticationFailed: 401,
    InvalidSignature: 401,
    InsufficientBalance: 402,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    StorageUnavailable: 503,
    DomainError: 400,
}

#: msgspec names the field of a whole-body problem only in its message.
_BODY_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")

#: How long a client should wait before retrying while the database is unavailable.
RETRY_AFTER_UNAVAILABLE = "5"


def status_for(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def _body(status: int, detail: str) -> ErrorBody:
    return ErrorBody(status_code=status, detail=detail)


def domain_error(
    _: Request[Any, Any, Any], error: DomainError
) -> Response[ErrorBody | ValidationErrorBody]:
    status = status_for(error)
    if status == 422:
        # Every 422 has the shape the schema documents for it; a domain rule names its field
        # in the message rather than in `errors`.
        body = ValidationErrorBody(status_code=422, detail=str(error), errors=[])
        return Response(body, status_code=422)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        headers["Retry-After"] = RETRY_AFTER_UNAVAILABLE
    return Response(_body(status, str(error)), status_code=status, headers=headers)


def validation_error(
    _: Request[Any, Any, Any], error: ValidationException
) -> Response[ValidationErrorBody]:
    """Litestar reports these as 400; the API contract says 422, with the fields named."""
    problems = error.extra if isinstance(error.extra, list) else []
    errors = []
    for problem in problems:
        if not isinstance(problem, dict):
            continue
        source = problem.get("source")
        field = str(problem.get("key") or "")
        message = str(problem.get("message") or "invalid value")
        named = _BODY_FIELD.search(message)
        if field == "data" and named:
            field = named.group(1)
        errors.append(
            FieldError(
                field=field,
                message=message,
                # Litestar gives an enum (`ParamType.QUERY`); clients want "query".
                source=str(getattr(source, "value", source)) if source else None,
            )
        )
    body = ValidationErrorBody(status_code=422, detail="Validation failed", errors=errors)
    return Response(body, status_code=422)


def http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[ErrorBody]:
    status = error.status_code
    if status >= 500:
        logger.error(
            "server error answering %s %s", request.method, request.url.path, exc_info=error
        )
        return Response(_body(status, "Internal server error"), status_code=status)
    return Response(_body(status, error.detail), status_code=status, headers=error.headers)


def too_deep(request: Request[Any, Any, Any], error: RecursionError) -> Response[ErrorBody]:
    """JSON nested deeper than the decoder recurses: a malformed request, not a server fault.
    (The decoder is the only recursion a request controls.)"""
    logger.warning("refused a too deeply nested body on %s %s", request.method, request.url.path)
    return Response(_body(400, "Request body is nested too deeply"), status_code=400)


def unexpected_error(request: Request[Any, Any, Any], error: Exception) -> Response[ErrorBody]:
    logger.error(
        "unhandled error answering %s %s", request.method, request.url.path, exc_info=error
    )
    return Response(_body(500, "Internal server error"), status_code=500)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: domain_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    RecursionError: too_deep,
    Exception: unexpected_error,
}


def amount_field(value: str, field: str, *, sign: Sign, maximum: Decimal | None) -> Decimal:
    """Parse a money field of a request body; a bad amount is a 422 naming the field."""
    try:
        return parse_amount(value, sign=sign, maximum=maximum)
    except InvalidAmount as error:
        raise ValidationException(
            detail="Validation failed",
            extra=[{"key": field, "message": str(error), "source": "body"}],
        ) from None
