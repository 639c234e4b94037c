"""The one pagination rule every list follows: 1 to 100 items a page, from a bounded offset."""

from __future__ import annotations

from zenzefi_core.errors import InvalidInput

MIN_LIMIT, MAX_LIMIT, DEFAULT_LIMIT = 1, 100, 20
#: Far beyond any real list, and small enough for every database's OFFSET.
MAX_OFFSET = 2**31 - 1


def check_page(limit: int, offset: int) -> None:
    if not MIN_LIMIT <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between {MIN_LIMIT} and {MAX_LIMIT}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"offset must be between 0 and {MAX_OFFSET}")
