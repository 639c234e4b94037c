"""Wire types shared by every controller: money and time as the API contract writes them, the
error bodies, and the OpenAPI description of each error status.

Money leaves as a string with exactly two decimals and time as ISO 8601 with an explicit
`+00:00` offset; both are rendered here, in one place, rather than by the JSON encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import msgspec
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIFormat
from litestar.params import HeaderParameter, KwargDefinition, QueryParameter

from zenzefi_core.money import format_amount
from zenzefi_core.paging import MAX_LIMIT, MAX_OFFSET, MIN_LIMIT
from zenzefi_core.ports import Page
from zenzefi_core.services.idempotency import KEY_MAX

Money = Annotated[
    str,
    KwargDefinition(
        description="ZNC amount: a string with exactly two decimals",
        pattern=r"^-?\d+\.\d{2}$",
        examples=[Example(value="81.00")],
    ),
]
Timestamp = Annotated[
    str,
    KwargDefinition(
        format=OpenAPIFormat.DATE_TIME,
        description="ISO 8601, UTC, with its offset",
        examples=[Example(value="2026-11-26T10:00:00+00:00")],
    ),
]
#: A moment that may not have happened yet (`null` until it does). `Timestamp | None` cannot be
#: written: the metadata of an Annotated type must be hashable to join a union.
OptionalTimestamp = Annotated[
    str | None,
    KwargDefinition(
        format=OpenAPIFormat.DATE_TIME,
        description="ISO 8601, UTC, with its offset; null until it happens",
        examples=[Example(value="2026-11-26T10:00:00+00:00")],
    ),
]

Limit = Annotated[
    int,
    QueryParameter(
        ge=MIN_LIMIT, le=MAX_LIMIT, description=f"Items per page ({MIN_LIMIT} to {MAX_LIMIT})"
    ),
]
Offset = Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET, description="Items to skip")]

IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        max_length=KEY_MAX,
        description="Any unique string (a UUID is fine), 1 to 255 printable ASCII characters. "
        "A retry with the same key returns the first result and changes nothing; the same key "
        "with a different request is 409.",
    ),
]
#: Set to `true` on the answer to a repeated Idempotency-Key: the stored first result.
REPLAYED_HEADER = "Idempotent-Replayed"
REPLAYED_RESPONSE_HEADERS = [
    ResponseHeader(
        name=REPLAYED_HEADER,
        documentation_only=True,
        description="`true` when this is the stored result of an earlier request with the "
        "same Idempotency-Key (nothing was charged again); absent otherwise",
    )
]


def replay_headers(replayed: bool) -> dict[str, str]:
    return {REPLAYED_HEADER: "true"} if replayed else {}


PageOut = TypeVar("PageOut", bound=msgspec.Struct)
Item = TypeVar("Item")


def page_of(page_type: type[PageOut], page: Page[Item], render: Callable[[Item], Any]) -> PageOut:
    """A core `Page` as the list envelope `{items, total, limit, offset}` of `page_type`."""
    return page_type(
        items=[render(item) for item in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


def money(amount: Decimal) -> str:
    return format_amount(amount)


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class ErrorBody(msgspec.Struct, kw_only=True):
    status_code: int
    detail: str


class FieldError(msgspec.Struct, kw_only=True):
    field: str
    message: str
    #: Where the field was: `body`, `query`, `path`, `header`.
    source: str | None = None


class ValidationErrorBody(msgspec.Struct, kw_only=True):
    status_code: int
    detail: str
    errors: list[FieldError]


_DESCRIPTIONS = {
    400: "Malformed request (not JSON, wrong content), or refused by a business rule",
    401: "Missing, malformed or expired bearer token, a login ended by a password change or a "
    "deactivation, or wrong credentials",
    402: "Insufficient balance",
    403: "Authenticated, but not allowed: inactive account or missing superuser role",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Validation failed",
    429: "Too many attempts from this address; see Retry-After",
    502: "The upstream server could not be reached or answered badly",
    503: "The database is unavailable; retry later",
    504: "The upstream server did not answer in time",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI description of the error statuses a route can answer with."""
    return {
        code: ResponseSpec(
            data_container=ValidationErrorBody if code == 422 else ErrorBody,
            description=_DESCRIPTIONS[code],
            generate_examples=False,
        )
        for code in codes
    }
