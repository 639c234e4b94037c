"""Idempotency-Key: a retried request returns its first result and changes nothing.

The key is looked up and its result stored inside the request's own unit of work, so the result
is kept exactly when the change it describes is committed. Two requests racing with one key
cannot both commit: the second fails on the key's primary key and is rolled back, then answers
with the first one's stored result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from zenzefi_core.domain import IdempotencyRecord
from zenzefi_core.errors import IdempotencyConflict, InsufficientBalance, InvalidInput
from zenzefi_core.ports import Clock, UnitOfWork, UnitOfWorkFactory

R = TypeVar("R")

KEY_MAX = 255


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's key for one request, with a fingerprint of what the request asked for."""

    user_id: UUID
    key: str
    operation: str
    request_hash: str

    @classmethod
    def for_request(
        cls, user_id: UUID, key: str | None, operation: str, request: Mapping[str, Any]
    ) -> IdempotencyKey | None:
        """None when the client sent no key; `InvalidInput` for a key that cannot be stored."""
        if key is None:
            return None
        if not 1 <= len(key) <= KEY_MAX or not key.isascii() or not key.isprintable():
            raise InvalidInput(f"Idempotency-Key must be 1 to {KEY_MAX} printable ASCII characters")
        return cls(
            user_id=user_id,
            key=key,
            operation=operation,
            request_hash=request_hash(operation, request),
        )


def request_hash(operation: str, request: Mapping[str, Any]) -> str:
    """SHA-256 of the operation and its fields as canonical JSON."""
    canonical = json.dumps(
        {"operation": operation, "request": request},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def stored_response(uow: UnitOfWork, key: IdempotencyKey) -> dict[str, Any] | None:
    """The first result made with this key; None for a new key. The same key used for another
    request is an `IdempotencyConflict`."""
    record = uow.idempotency.get(key.user_id, key.key)
    if record is None:
        return None
    if record.operation != key.operation or record.request_hash != key.request_hash:
        raise IdempotencyConflict()
    return record.response


def run_once(
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    key: IdempotencyKey | None,
    work: Callable[[UnitOfWork], R],
    *,
    save: Callable[[R], dict[str, Any]],
    load: Callable[[dict[str, Any]], R],
) -> R:
    """Run `work` in one unit of work and commit it, unless `key` was used before.

    A key seen before returns `load(first result)` and runs nothing. Otherwise `save(result)` is
    stored with the key in the same transaction as the work's own changes.
    """
    if key is None:
        with uow_factory() as uow:
            result = work(uow)
            uow.commit()
        return result
    with uow_factory() as uow:
        stored = stored_response(uow, key)
        if stored is not None:
            return load(stored)
        try:
            result = work(uow)
            uow.idempotency.add(
                IdempotencyRecord(
                    user_id=key.user_id,
                    key=key.key,
                    operation=key.operation,
                    request_hash=key.request_hash,
                    response=save(result),
                    created_at=clock.now(),
                )
            )
            uow.commit()
            return result
        except (IdempotencyConflict, InsufficientBalance) as error:
            # Perhaps a concurrent request with this key committed while this one waited (on
            # the key, or on the balance it had just spent); this one's writes roll back.
            lost_race = error
    with uow_factory() as uow:
        stored = stored_response(uow, key)
    if stored is None:
        raise lost_race
    return load(stored)
