"""Idempotency-Key: a retried request returns its first result, whole, and changes nothing.

The key is looked up and its result stored inside the request's own unit of work, so the result
is kept exactly when the change it describes is committed. Two requests racing with one key
cannot both commit: the second fails on the key's primary key and is rolled back, then answers
with the first one's stored result.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from zenzefi_core.domain import IdempotencyRecord
from zenzefi_core.errors import IdempotencyConflict, InsufficientBalance, InvalidInput
from zenzefi_core.ports import Clock, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.security import SecretCipher

logger = logging.getLogger("zenzefi.idempotency")

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


#: How long a key is remembered, and the secrets of its first response kept: a retry within
#: this gets the first response; after it, the key is forgotten and the request is new.
KEY_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Kept:
    """What is kept of a first result: the response without its secrets, and the secrets
    (access tokens' plaintexts) apart, to be stored encrypted."""

    response: dict[str, Any]
    secrets: tuple[str, ...] = ()


class ReplaySecrets:
    """Encrypts the secrets of a first response for its record, and decrypts them for a replay.

    The plaintext names the key's owner and the key, and a replay checks them, so a sealed
    value copied into another user's record (by someone with write access to the database
    alone) opens for nobody.
    """

    def __init__(self, cipher: SecretCipher) -> None:
        self._cipher = cipher

    def seal(self, key: IdempotencyKey, secrets: Sequence[str]) -> str:
        sealed = {"user_id": str(key.user_id), "key": key.key, "secrets": list(secrets)}
        return self._cipher.encrypt(json.dumps(sealed, separators=(",", ":")))

    def open(self, record: IdempotencyRecord) -> tuple[str, ...] | None:
        """The secrets, or None when there are none or they cannot be read (the server's
        secret key was changed since, or the value does not belong to this record)."""
        if record.secrets_encrypted is None:
            return None
        plaintext = self._cipher.try_decrypt(record.secrets_encrypted)
        if plaintext is None:
            logger.warning("the secrets kept for an Idempotency-Key cannot be decrypted")
            return None
        sealed = json.loads(plaintext)
        if sealed.get("user_id") != str(record.user_id) or sealed.get("key") != record.key:
            logger.warning("the secrets kept for an Idempotency-Key belong to another record")
            return None
        return tuple(str(secret) for secret in sealed["secrets"])


def _stored(uow: UnitOfWork, key: IdempotencyKey, now: datetime) -> IdempotencyRecord | None:
    """The first result made with this key within its lifetime; None for a new key. A key
    past its lifetime is deleted here (the purge job may not have run yet), so it can be used
    again. The same key used for another request is an `IdempotencyConflict`."""
    record = uow.idempotency.get(key.user_id, key.key)
    if record is None:
        return None
    if record.created_at <= now - KEY_LIFETIME:
        uow.idempotency.remove(key.user_id, key.key)
        return None
    if record.operation != key.operation or record.request_hash != key.request_hash:
        raise IdempotencyConflict()
    return record


def run_once(
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    key: IdempotencyKey | None,
    work: Callable[[UnitOfWork], R],
    *,
    save: Callable[[R], Kept],
    load: Callable[[dict[str, Any], tuple[str, ...] | None], R],
    authorize: Callable[[UnitOfWork], object],
    vault: ReplaySecrets | None = None,
) -> R:
    """Run `work` in one unit of work and commit it, unless `key` was used before.

    A key seen before returns `load(first response, its secrets)` and runs nothing, once
    `authorize` (which raises to refuse) has accepted the caller as it would for the work
    itself: a replay shows secrets, so a session that may no longer act gets nothing. Otherwise
    `save(result)` is stored with the key in the same transaction as the work's own changes,
    its secrets encrypted by `vault`; without a vault they are not kept, and a replay gets None
    for them.
    """
    if key is None:
        with uow_factory() as uow:
            result = work(uow)
            uow.commit()
        return result
    with uow_factory() as uow:
        stored = _stored(uow, key, clock.now())
        if stored is not None:
            return _replay(uow, stored, load, authorize, vault)
        try:
            result = work(uow)
            kept = save(result)
            uow.idempotency.add(
                IdempotencyRecord(
                    user_id=key.user_id,
                    key=key.key,
                    operation=key.operation,
                    request_hash=key.request_hash,
                    response=kept.response,
                    created_at=clock.now(),
                    secrets_encrypted=(
                        vault.seal(key, kept.secrets)
                        if vault is not None and kept.secrets
                        else None
                    ),
                )
            )
            uow.commit()
            return result
        except (IdempotencyConflict, InsufficientBalance) as error:
            # Perhaps a concurrent request with this key committed while this one waited (on
            # the key, or on the balance it had just spent); this one's writes roll back.
            lost_race = error
    with uow_factory() as uow:
        stored = _stored(uow, key, clock.now())
        if stored is None:
            raise lost_race
        return _replay(uow, stored, load, authorize, vault)


def _replay(
    uow: UnitOfWork,
    record: IdempotencyRecord,
    load: Callable[[dict[str, Any], tuple[str, ...] | None], R],
    authorize: Callable[[UnitOfWork], object],
    vault: ReplaySecrets | None,
) -> R:
    authorize(uow)
    return load(record.response, None if vault is None else vault.open(record))


class PurgeExpiredKeys:
    """Delete every key past its lifetime, and with it the encrypted secrets of its response:
    the scheduled `idempotency-purge` job. Returns how many were deleted."""

    def __init__(
        self, uow_factory: UnitOfWorkFactory, clock: Clock, lifetime: timedelta = KEY_LIFETIME
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._lifetime = lifetime

    def __call__(self) -> int:
        with self._uow_factory() as uow:
            purged = uow.idempotency.purge(created_up_to=self._clock.now() - self._lifetime)
            uow.commit()
        return purged
