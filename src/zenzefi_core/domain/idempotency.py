from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The first result of a request made with an `Idempotency-Key`.

    A retry with the same key and the same `request_hash` gets `response` back and changes
    nothing; the same key with another request is a conflict. `secrets_encrypted` holds the
    secrets the response showed once (access tokens), encrypted, so a retry can show them again;
    they are deleted with the record when its lifetime is over.
    """

    user_id: UUID
    key: str
    operation: str
    request_hash: str
    response: dict[str, Any]
    created_at: datetime
    secrets_encrypted: str | None = None
