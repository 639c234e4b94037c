"""The access proxy's decisions: who may pass, on which device, and what they used.

How a revocation or a ban takes effect at once, with a cache in front of the database:

- Every entry is filled with an add-if-absent after the database was read, and every change
  that makes an entry wrong overwrites it with a tombstone *after* its commit. Whichever way a
  fill and such a change interleave, the tombstone wins: a fill that read the database before
  the change either lands before the tombstone (and is overwritten) or after it (and is
  refused). A tombstone only means "ask the database".
- An **activated** token is cached as `tok:<hash>` (by the proxy's first request and by status
  calls); an activated token can no longer be revoked (`TokenRepository.revoke` refuses it).
- A token **not activated** yet is cached as `rdy:<hash>` for `/proxy/status` only: the proxy
  never passes a request on it (its first request is always decided by the database, where the
  activation is a conditional update a revoked token fails). Its revocation (`RevokeToken`) and
  its activation tombstone `rdy:<hash>` after their commit (`forget_token`), and status reads
  `tok:` before `rdy:`.
- Expiry needs no invalidation: the entry carries `expires_at` and every hit compares it.
- Deactivating a user (`SetUserActive`) tombstones both entries of all the user's usable tokens
  after its commit (`forget_user_tokens`).
- Which device holds a token (`dev:<token id>`) is cached for less than the idle timeout and
  never refreshed by a hit, so every device re-checks its session against the database a few
  times a minute, and a session closed by the idle cleanup is never used from the cache.

One device per token is the database's business: a unique index on the open sessions and a
conditional insert (`ProxySessionRepository.start`), so of two devices racing exactly one wins.
Usage is counted in memory (`UsageMeter`) and written in batches (`RecordUsage`), never once per
request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from uuid import UUID

from zenzefi_core.domain.proxy import ProxySession, UsageDelta
from zenzefi_core.domain.tokens import AccessToken, TokenScope, TokenStatus
from zenzefi_core.errors import AuthenticationFailed, Conflict, PermissionDenied
from zenzefi_core.ids import new_id
from zenzefi_core.ports import AccessCache, Clock, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.proxy_scope import in_scope
from zenzefi_core.referrals import ReferralPolicy
from zenzefi_core.services.events import record_event
from zenzefi_core.services.referrals import credit_referral_bonus

#: Tokens of a user listed per round when tombstoning them.
_PAGE = 100
#: Expired tokens reported per transaction.
_EXPIRY_BATCH = 500
_TOMBSTONE = "-"
#: Longest device id and user agent stored with a session.
DEVICE_ID_MIN = 8
DEVICE_ID_MAX = 255
USER_AGENT_MAX = 512
IP_MAX = 64
DEFAULT_CACHE_SECONDS = 300.0


class InvalidAccessToken(AuthenticationFailed):
    """Unknown, revoked or expired token, or its owner is deactivated: all look the same."""

    def __init__(self) -> None:
        super().__init__("Invalid or expired access token")


class OutsideScope(PermissionDenied):
    def __init__(self) -> None:
        super().__init__("Path is outside the access token's scope")


class TokenInUse(Conflict):
    """Another device holds the token and has used it within the idle timeout."""

    def __init__(self) -> None:
        super().__init__("Access token is in use on another device")


def token_key(token_hash: str) -> str:
    return f"tok:{token_hash}"


def ready_key(token_hash: str) -> str:
    return f"rdy:{token_hash}"


def device_key(token_id: UUID) -> str:
    return f"dev:{token_id}"


@dataclass(frozen=True, slots=True)
class ProxyPolicy:
    #: A session unused this long may be taken over by another device (and is closed).
    idle_seconds: float = 300.0
    #: How long an activated token stays in the cache.
    cache_seconds: float = DEFAULT_CACHE_SECONDS
    #: How long a device's hold on a token is trusted before the database is asked again.
    device_recheck_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class ProxyGrant:
    """A request may pass: forwarded for this token, user and session."""

    token_id: UUID
    user_id: UUID
    scope: TokenScope
    expires_at: datetime
    session_id: UUID


@dataclass(frozen=True, slots=True)
class CachedToken:
    """What the cache keeps of an activated token: enough to decide without the database."""

    token_id: UUID
    user_id: UUID
    scope: TokenScope
    duration_hours: int
    #: Both None in a `rdy:` entry (a token not activated yet).
    activated_at: datetime | None
    expires_at: datetime | None

    def encode(self) -> str:
        return json.dumps(
            [
                str(self.token_id),
                str(self.user_id),
                self.scope.value,
                self.duration_hours,
                None if self.activated_at is None else self.activated_at.isoformat(),
                None if self.expires_at is None else self.expires_at.isoformat(),
            ]
        )

    @classmethod
    def decode(cls, value: str) -> CachedToken:
        token_id, user_id, scope, hours, activated_at, expires_at = json.loads(value)
        return cls(
            token_id=UUID(token_id),
            user_id=UUID(user_id),
            scope=TokenScope(scope),
            duration_hours=int(hours),
            activated_at=None if activated_at is None else datetime.fromisoformat(activated_at),
            expires_at=None if expires_at is None else datetime.fromisoformat(expires_at),
        )

    @classmethod
    def of(cls, token: AccessToken) -> CachedToken:
        return cls(
            token_id=token.id,
            user_id=token.user_id,
            scope=token.scope,
            duration_hours=token.duration_hours,
            activated_at=token.activated_at,
            expires_at=token.expires_at,
        )


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    token_hash: str
    device_id: str
    ip: str | None = None
    user_agent: str | None = None
    #: The normalised path asked for (`proxy_scope.normalise_path`): checked against the
    #: token's scope before the token is activated or a device bound. None: not checked here.
    path: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class TokenState:
    """What `/proxy/status` reports."""

    token_id: UUID
    user_id: UUID
    duration_hours: int
    activated_at: datetime | None
    expires_at: datetime | None
    status: TokenStatus
    seconds_left: int


@lru_cache(maxsize=4096)
def cached_token(value: str | None) -> CachedToken | None:
    """A cache entry's token; None for a miss or a tombstone. Entries are immutable strings, so
    the hot path decodes each one once, not on every hit."""
    if value is None or value == _TOMBSTONE:
        return None
    return CachedToken.decode(value)


def grant_from_cache(
    token: CachedToken, holder: str | None, device_id: str, now: datetime
) -> ProxyGrant | None:
    """The grant an activated token's cache entry and its device hold (`dev:<token id>`) give,
    or None when the database must decide. Raises `InvalidAccessToken` once it has expired."""
    expires_at = token.expires_at
    if expires_at is None:
        return None
    if now >= expires_at:
        raise InvalidAccessToken()
    if holder is None:
        return None
    session_id, _, device = holder.partition("|")
    if device != device_id:
        return None
    return ProxyGrant(
        token_id=token.token_id,
        user_id=token.user_id,
        scope=token.scope,
        expires_at=expires_at,
        session_id=UUID(session_id),
    )


def state_from_cache(
    active: CachedToken | None, ready: CachedToken | None, now: datetime
) -> TokenState | None:
    """What `/proxy/status` says from the `tok:` and `rdy:` entries, or None (ask the database).
    Raises `InvalidAccessToken` for a cached token that has expired."""
    if active is not None and active.expires_at is not None:
        if now >= active.expires_at:
            raise InvalidAccessToken()
        return TokenState(
            token_id=active.token_id,
            user_id=active.user_id,
            duration_hours=active.duration_hours,
            activated_at=active.activated_at,
            expires_at=active.expires_at,
            status=TokenStatus.ACTIVE,
            seconds_left=int((active.expires_at - now).total_seconds()),
        )
    if ready is not None and ready.expires_at is None:
        return TokenState(
            token_id=ready.token_id,
            user_id=ready.user_id,
            duration_hours=ready.duration_hours,
            activated_at=None,
            expires_at=None,
            status=TokenStatus.READY,
            seconds_left=ready.duration_hours * 3600,
        )
    return None


def remember_token(cache: AccessCache, token: AccessToken, ttl: float) -> None:
    """Fill the cache with a usable token just read from the database (add-if-absent, so a
    tombstone written meanwhile stays)."""
    key = token_key(token.token_hash) if token.activated_at else ready_key(token.token_hash)
    cache.add(key, CachedToken.of(token).encode(), ttl)


def forget_token(cache: AccessCache, token_hash: str, ttl: float) -> None:
    """Tombstone both entries of a token, after a change to it has committed."""
    cache.set(token_key(token_hash), _TOMBSTONE, ttl)
    cache.set(ready_key(token_hash), _TOMBSTONE, ttl)


def _usable(uow: UnitOfWork, token_hash: str, now: datetime) -> AccessToken:
    token = uow.tokens.get_by_hash(token_hash)
    if token is None or not token.is_active_at(now):
        raise InvalidAccessToken()
    owner = uow.users.get(token.user_id)
    if owner is None or not owner.is_active:
        raise InvalidAccessToken()
    return token


class ProxyAccess:
    """Decides whether a proxied request may pass, activating the token on its first use and
    binding it to the first device. `check_cached` answers from the cache alone (the hot path);
    `authorize` is the full decision, reading the database.

    A token's first use makes its purchase final (it can no longer be refunded), so the
    activation's transaction also pays the referrer the token's pending bonus share, under
    `referrals` (the monthly cap)."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        cache: AccessCache,
        policy: ProxyPolicy | None = None,
        referrals: ReferralPolicy | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._cache = cache
        self._policy = policy or ProxyPolicy()
        self._referrals = referrals or ReferralPolicy()

    def check_cached(self, token_hash: str, device_id: str) -> ProxyGrant | None:
        """The grant if the cache alone can give it, else None (then call `authorize`). Raises
        `InvalidAccessToken` for a cached token that has expired."""
        token = cached_token(self._cache.get(token_key(token_hash)))
        if token is None or token.expires_at is None:
            return None
        if self._clock.now() >= token.expires_at:
            raise InvalidAccessToken()
        holder = self._cache.get(device_key(token.token_id))
        return grant_from_cache(token, holder, device_id, self._clock.now())

    def authorize(self, request: ProxyRequest) -> ProxyGrant:
        now = self._clock.now()
        with self._uow_factory() as uow:
            token = _usable(uow, request.token_hash, now)
            if request.path is not None and not in_scope(token.scope, request.path):
                raise OutsideScope()
            activated = token.activated_at is None
            if activated:
                token = self._activate(uow, token, now)
            session = self._claim_device(uow, token, request, now)
            uow.commit()
        assert token.expires_at is not None
        if activated:
            # A status call may have cached the token as not activated.
            self._cache.set(ready_key(token.token_hash), _TOMBSTONE, self._policy.cache_seconds)
        remember_token(self._cache, token, self._policy.cache_seconds)
        self._cache.set(
            device_key(token.id),
            f"{session.id}|{session.device_id}",
            self._policy.device_recheck_seconds,
        )
        return ProxyGrant(
            token_id=token.id,
            user_id=token.user_id,
            scope=token.scope,
            expires_at=token.expires_at,
            session_id=session.id,
        )

    def _activate(self, uow: UnitOfWork, token: AccessToken, now: datetime) -> AccessToken:
        activated = uow.tokens.activate(token.id, now)
        if activated is None:
            # Another first request started the clock, or the token was revoked meanwhile.
            current = uow.tokens.get(token.id)
            if current is None or not current.is_active_at(now) or current.activated_at is None:
                raise InvalidAccessToken()
            return current
        record_event(
            uow,
            self._clock,
            "token.activated",
            {
                "user_id": str(activated.user_id),
                "token_id": str(activated.id),
                "token_prefix": activated.token_prefix,
                "activated_at": now.isoformat(),
                "expires_at": activated.expires_at.isoformat() if activated.expires_at else None,
            },
            user_id=activated.user_id,
        )
        credit_referral_bonus(uow, self._clock, self._referrals, activated)
        return activated

    def _claim_device(
        self, uow: UnitOfWork, token: AccessToken, request: ProxyRequest, now: datetime
    ) -> ProxySession:
        sessions = uow.proxy_sessions
        current = sessions.open_for_token(token.id)
        if current is not None and current.device_id == request.device_id:
            return current
        if current is not None:
            idle_before = now - timedelta(seconds=self._policy.idle_seconds)
            # An idle session ended when it was last used, not when another device arrived.
            if not sessions.end(current.id, current.last_activity, idle_before=idle_before):
                raise TokenInUse()
        session = ProxySession(
            id=new_id(),
            token_id=token.id,
            user_id=token.user_id,
            device_id=request.device_id,
            started_at=now,
            last_activity=now,
            ip=request.ip[:IP_MAX] if request.ip else None,
            user_agent=request.user_agent[:USER_AGENT_MAX] if request.user_agent else None,
        )
        if sessions.start(session):
            return session
        # Another request opened a session first: fine if it was this device's.
        winner = sessions.open_for_token(token.id)
        if winner is not None and winner.device_id == request.device_id:
            return winner
        raise TokenInUse()


class ProxyStatus:
    """The token's state for `/proxy/status`. Never activates, never binds a device. Served from
    the cache when it can be; a miss reads the database and fills the cache for the next call."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        cache: AccessCache,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._cache = cache
        self._cache_seconds = cache_seconds

    def __call__(self, token_hash: str) -> TokenState:
        now = self._clock.now()
        state = state_from_cache(
            cached_token(self._cache.get(token_key(token_hash))),
            cached_token(self._cache.get(ready_key(token_hash))),
            now,
        )
        if state is not None:
            return state
        return self.from_database(token_hash)

    def from_database(self, token_hash: str) -> TokenState:
        now = self._clock.now()
        with self._uow_factory() as uow:
            token = _usable(uow, token_hash, now)
        remember_token(self._cache, token, self._cache_seconds)
        return TokenState(
            token_id=token.id,
            user_id=token.user_id,
            duration_hours=token.duration_hours,
            activated_at=token.activated_at,
            expires_at=token.expires_at,
            status=token.status_at(now),
            seconds_left=token.seconds_left_at(now),
        )


def forget_user_tokens(
    uow_factory: UnitOfWorkFactory, clock: Clock, cache: AccessCache, user_id: UUID, ttl: float
) -> None:
    """Tombstone the cache entries of every usable token of the user (after the change that
    made them unusable has committed; see the module docstring for why that order is safe)."""
    offset = 0
    while True:
        with uow_factory() as uow:
            page = uow.tokens.list_for_user(
                user_id, now=clock.now(), active_only=True, limit=_PAGE, offset=offset
            )
        for token in page.items:
            forget_token(cache, token.token_hash, ttl)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


class UsageMeter:
    """Counts requests and bytes per session in memory, between flushes. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[UUID, list[int]] = {}
        self._last: dict[UUID, datetime] = {}

    def count(
        self, session_id: UUID, *, requests: int, bytes_in: int, bytes_out: int, at: datetime
    ) -> None:
        with self._lock:
            counters = self._pending.setdefault(session_id, [0, 0, 0])
            counters[0] += requests
            counters[1] += bytes_in
            counters[2] += bytes_out
            last = self._last.get(session_id)
            if last is None or at > last:
                self._last[session_id] = at

    def drain(self) -> list[UsageDelta]:
        with self._lock:
            pending, self._pending = self._pending, {}
            last, self._last = self._last, {}
        return [
            UsageDelta(
                session_id=session_id,
                requests=counters[0],
                bytes_in=counters[1],
                bytes_out=counters[2],
                last_activity=last[session_id],
            )
            for session_id, counters in pending.items()
        ]

    def restore(self, deltas: Sequence[UsageDelta]) -> None:
        """Put back a batch whose flush failed, so the next flush carries it."""
        for delta in deltas:
            self.count(
                delta.session_id,
                requests=delta.requests,
                bytes_in=delta.bytes_in,
                bytes_out=delta.bytes_out,
                at=delta.last_activity,
            )


class RecordUsage:
    """Write one batch of usage in one transaction."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self, deltas: Sequence[UsageDelta]) -> None:
        if not deltas:
            return
        with self._uow_factory() as uow:
            uow.proxy_sessions.add_usage(deltas)
            uow.commit()


class CloseIdleSessions:
    """End every session unused for the idle timeout (the `session-cleanup` job). A device
    coming back after that simply opens a new session."""

    def __init__(
        self, uow_factory: UnitOfWorkFactory, clock: Clock, idle_seconds: float = 300.0
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._idle = timedelta(seconds=idle_seconds)

    def __call__(self) -> int:
        now = self._clock.now()
        with self._uow_factory() as uow:
            closed = uow.proxy_sessions.close_idle(now - self._idle)
            uow.commit()
        return closed


class ReportExpiredTokens:
    """Write a `token.expired` event once for every token whose time has run out."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def __call__(self) -> int:
        reported = 0
        while True:
            with self._uow_factory() as uow:
                tokens = uow.token_expiries.claim_expired(self._clock.now(), limit=_EXPIRY_BATCH)
                for token in tokens:
                    record_event(
                        uow,
                        self._clock,
                        "token.expired",
                        {
                            "user_id": str(token.user_id),
                            "token_id": str(token.id),
                            "token_prefix": token.token_prefix,
                            "expires_at": token.expires_at.isoformat()
                            if token.expires_at
                            else None,
                        },
                        user_id=token.user_id,
                    )
                uow.commit()
            reported += len(tokens)
            if len(tokens) < _EXPIRY_BATCH:
                return reported
