"""The access proxy's decisions: who may pass, on which device, and what they used.

How a revocation or a ban takes effect at once, with a cache in front of the database:

- The cache holds a token (`tok:<hash>`) only once it is **activated**, and an activated token
  can no longer be revoked (`TokenRepository.revoke` refuses it). A token that is not activated
  yet is always read from the database, and its activation is a conditional update that a
  revoked token fails. So revocation needs no cache invalidation at all.
- Expiry needs none either: the entry carries `expires_at` and every hit compares it with now.
- Deactivating a user (`SetUserActive`) overwrites the entries of all the user's tokens with a
  tombstone *after* its commit (`forget_user_tokens`), and the proxy fills the cache only with an
  add-if-absent. Whichever way a fill and a deactivation interleave, the tombstone wins: a fill
  that read the database before the ban either lands before the tombstone (and is overwritten)
  or after it (and is refused). A tombstone only means "ask the database".
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
    activated_at: datetime
    expires_at: datetime

    def encode(self) -> str:
        return json.dumps(
            [
                str(self.token_id),
                str(self.user_id),
                self.scope.value,
                self.duration_hours,
                self.activated_at.isoformat(),
                self.expires_at.isoformat(),
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
            activated_at=datetime.fromisoformat(activated_at),
            expires_at=datetime.fromisoformat(expires_at),
        )

    @classmethod
    def of(cls, token: AccessToken) -> CachedToken:
        assert token.activated_at is not None
        assert token.expires_at is not None
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


def _cached_token(cache: AccessCache, token_hash: str) -> CachedToken | None:
    value = cache.get(token_key(token_hash))
    if value is None or value == _TOMBSTONE:
        return None
    return CachedToken.decode(value)


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
        token = _cached_token(self._cache, token_hash)
        if token is None:
            return None
        if self._clock.now() >= token.expires_at:
            raise InvalidAccessToken()
        holder = self._cache.get(device_key(token.token_id))
        if holder is None:
            return None
        session_id, _, device = holder.partition("|")
        if device != device_id:
            return None
        return ProxyGrant(
            token_id=token.token_id,
            user_id=token.user_id,
            scope=token.scope,
            expires_at=token.expires_at,
            session_id=UUID(session_id),
        )

    def authorize(self, request: ProxyRequest) -> ProxyGrant:
        now = self._clock.now()
        with self._uow_factory() as uow:
            token = _usable(uow, request.token_hash, now)
            if request.path is not None and not in_scope(token.scope, request.path):
                raise OutsideScope()
            if token.activated_at is None:
                token = self._activate(uow, token, now)
            session = self._claim_device(uow, token, request, now)
            uow.commit()
        assert token.expires_at is not None
        self._cache.add(
            token_key(token.token_hash), CachedToken.of(token).encode(), self._policy.cache_seconds
        )
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
    """The token's state for `/proxy/status`. Never activates, never binds a device."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock, cache: AccessCache) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._cache = cache

    def __call__(self, token_hash: str) -> TokenState:
        now = self._clock.now()
        cached = _cached_token(self._cache, token_hash)
        if cached is not None:
            if now >= cached.expires_at:
                raise InvalidAccessToken()
            return TokenState(
                token_id=cached.token_id,
                user_id=cached.user_id,
                duration_hours=cached.duration_hours,
                activated_at=cached.activated_at,
                expires_at=cached.expires_at,
                status=TokenStatus.ACTIVE,
                seconds_left=int((cached.expires_at - now).total_seconds()),
            )
        with self._uow_factory() as uow:
            token = _usable(uow, token_hash, now)
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
            cache.set(token_key(token.token_hash), _TOMBSTONE, ttl)
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
