"""The rules of email notifications: which event becomes which email, how often a user may get
one, how failed attempts are spaced, and the signed unsubscribe links.

Pure rules, no I/O. The use cases that apply them are in `services.notifications`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode
from uuid import UUID

from zenzefi_core.domain.notifications import NotificationKind
from zenzefi_core.errors import InvalidSignature
from zenzefi_core.settings import Settings

#: The outbox events that lead to an email, and the kind of email each one is.
KIND_FOR_EVENT: dict[str, NotificationKind] = {
    "token.expiring": NotificationKind.TOKEN_EXPIRING,
    "balance.low": NotificationKind.BALANCE_LOW,
    "referral.bonus": NotificationKind.REFERRAL_BONUS,
}

#: The window the daily limit counts over: the last 24 hours, not the calendar day, so a burst
#: around midnight cannot deliver twice the limit.
DAILY_WINDOW = timedelta(hours=24)

#: How long a token may have left when the scan tells its owner it expires soon.
DEFAULT_EXPIRY_NOTICE = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class NotificationPolicy:
    """How many emails, how many attempts, and how far apart; the defaults suit production."""

    #: At most this many emails of one kind to one user within `DAILY_WINDOW`.
    daily_limit: int = 2
    #: Attempts to hand an email to the mail server before it is recorded as failed.
    max_attempts: int = 6
    #: The wait after the first failed attempt; it doubles after each further one.
    retry_base: timedelta = timedelta(seconds=30)
    retry_max: timedelta = timedelta(hours=1)
    #: How long one worker may hold an email it is sending before another may try it.
    lease: timedelta = timedelta(minutes=5)
    expiry_notice: timedelta = DEFAULT_EXPIRY_NOTICE
    #: The relay's sweep re-sends a queued email only once its attempt is this overdue, so it
    #: does not race the retry message the worker scheduled for that moment.
    sweep_grace: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if self.daily_limit < 0 or self.max_attempts < 1:
            raise ValueError("daily_limit must be >= 0 and max_attempts >= 1")
        if self.retry_base <= timedelta(0) or self.retry_max < self.retry_base:
            raise ValueError("retry delays must be positive, and retry_max >= retry_base")

    @classmethod
    def from_settings(cls, settings: Settings) -> NotificationPolicy:
        configured = settings.notifications
        base = timedelta(seconds=configured.retry_base_seconds)
        return cls(
            daily_limit=configured.daily_limit,
            max_attempts=configured.max_attempts,
            retry_base=base,
            retry_max=max(base, timedelta(seconds=configured.retry_max_seconds)),
            # Long enough for the slowest mail server conversation the timeout allows.
            lease=max(timedelta(minutes=1), timedelta(seconds=settings.smtp.timeout_seconds * 6)),
            expiry_notice=timedelta(hours=configured.expiry_notice_hours),
            sweep_grace=min(timedelta(minutes=1), base * 2),
        )

    def retry_delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt: base, 2 x base, 4 x base, ... capped."""
        exponent = max(attempts - 1, 0)
        # Capping the exponent keeps the multiplication small however many attempts there were.
        delay: timedelta = self.retry_base * (2 ** min(exponent, 32))
        return min(delay, self.retry_max)


def dedup_key(kind: NotificationKind, user_id: UUID, reference: str) -> str:
    """The notification log's unique key: one email per user, kind and triggering thing
    (a token for `token_expiring`, the outbox event for the others)."""
    return f"{kind.value}:{user_id}:{reference}"


class UnsubscribeLinks:
    """Signed one-click unsubscribe links: `<user id>.<kind>.<HMAC-SHA256>`.

    The key is derived from the secret key for this purpose alone, so a link can neither be
    forged nor turned into anything else the secret key signs. Links do not expire: an old email
    must still be able to turn its kind off.
    """

    PATH = "/api/v1/notifications/unsubscribe"

    def __init__(self, secret_key: str, public_url: str) -> None:
        self._key = hmac.new(
            secret_key.encode("utf-8"), b"zenzefi-unsubscribe-v1", hashlib.sha256
        ).digest()
        self._public_url = public_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> UnsubscribeLinks:
        return cls(settings.resolved_secret_key(), settings.public_url)

    def _signature(self, user_id: UUID, kind: NotificationKind) -> bytes:
        message = f"{user_id}:{kind.value}".encode("ascii")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def token(self, user_id: UUID, kind: NotificationKind) -> str:
        signature = base64.urlsafe_b64encode(self._signature(user_id, kind)).rstrip(b"=")
        return f"{user_id.hex}.{kind.value}.{signature.decode('ascii')}"

    def url(self, user_id: UUID, kind: NotificationKind) -> str:
        return f"{self._public_url}{self.PATH}?{urlencode({'token': self.token(user_id, kind)})}"

    def verify(self, token: str) -> tuple[UUID, NotificationKind]:
        """The user and kind a genuine token names; `InvalidSignature` for anything else."""
        parts = token.split(".") if len(token) <= 200 else []
        if len(parts) != 3:
            raise InvalidSignature("Invalid unsubscribe link")
        user_text, kind_text, _signature = parts
        try:
            user_id = UUID(hex=user_text)
            kind = NotificationKind(kind_text)
        except ValueError:
            raise InvalidSignature("Invalid unsubscribe link") from None
        # Comparing with the one canonical token leaves no second spelling of a valid link.
        expected = self.token(user_id, kind)
        if not hmac.compare_digest(token.encode("utf-8"), expected.encode("ascii")):
            raise InvalidSignature("Invalid unsubscribe link")
        return user_id, kind
