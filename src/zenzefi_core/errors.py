"""Domain errors. Adapters translate them to HTTP statuses or exit codes; the core only raises."""

from __future__ import annotations

from decimal import Decimal


class DomainError(Exception):
    """Base of every error the core raises on purpose; its message is safe to show a user."""


class InvalidAmount(DomainError, ValueError):
    """An amount is malformed, has more than two decimals, or has the wrong sign or size."""


class InsufficientBalance(DomainError):
    """A debit would take a balance below zero; nothing was changed."""

    def __init__(self, required: Decimal, available: Decimal) -> None:
        self.required = required
        self.available = available
        super().__init__(
            f"Insufficient balance. Required: {required:.2f} ZNC, Available: {available:.2f} ZNC"
        )


class NotFound(DomainError):
    """The thing asked for does not exist (or is not visible to the one asking)."""


class UserNotFound(NotFound):
    def __init__(self, user_id: object) -> None:
        self.user_id = user_id
        super().__init__("User not found")


class Conflict(DomainError):
    """The request clashes with existing state, e.g. a duplicate email or a reused key."""


class DuplicateUser(Conflict):
    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(f"A user with this {field} already exists")


class IdempotencyConflict(Conflict):
    """An Idempotency-Key was reused with a different request."""

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was already used with a different request")


class InvalidInput(DomainError, ValueError):
    """A field is malformed in a way the domain cares about (email, username, password)."""


class InvalidSignature(DomainError):
    """A signed message (a provider callback) failed verification or is too old."""

    def __init__(self, reason: str = "Invalid signature") -> None:
        super().__init__(reason)


class PaymentNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Payment not found")


class PaymentMismatch(DomainError):
    """A provider callback contradicts the intent it names (another amount, an unknown state)."""


class InvalidReferralCode(InvalidInput):
    """A registration named a referral code that no active user holds."""

    def __init__(self) -> None:
        super().__init__("Invalid referral code")


class AuthenticationFailed(DomainError):
    """Credentials or a login session do not identify an account that may log in."""

    def __init__(self, reason: str = "Incorrect email or password") -> None:
        super().__init__(reason)


class PermissionDenied(DomainError):
    """The caller is known but may not do this (not a superuser, a disabled account)."""


class AccountDisabled(PermissionDenied):
    def __init__(self) -> None:
        super().__init__("This account is disabled")


class ActionRefused(DomainError):
    """A request the caller may make in general, refused by a rule in this case
    (a wrong current password, an operator deactivating their own account)."""


class StorageUnavailable(DomainError):
    """The database cannot be reached right now; nothing was changed, the request may be retried."""

    def __init__(self) -> None:
        super().__init__("The service is temporarily unavailable, please retry shortly")


class InvalidDuration(InvalidInput):
    """A token duration the price table does not sell."""

    def __init__(self, duration_hours: object, available: tuple[int, ...]) -> None:
        self.duration_hours = duration_hours
        self.available = available
        listed = ", ".join(str(hours) for hours in available)
        super().__init__(
            f"Invalid duration: {duration_hours} hours. Available durations: {listed} hours"
        )


class InvalidScope(InvalidInput):
    def __init__(self, scope: object, available: tuple[str, ...]) -> None:
        self.scope = scope
        super().__init__(f"Invalid scope: {scope!r}. Available scopes: {', '.join(available)}")


class TokenNotFound(NotFound):
    """No such token, or it belongs to someone else: both look the same to the caller."""

    def __init__(self) -> None:
        super().__init__("Token not found")


class BundleNotFound(NotFound):
    """No such bundle, or it is no longer on sale."""

    def __init__(self) -> None:
        super().__init__("Bundle not found")


class TokenNotRefundable(DomainError):
    """A token that can no longer be revoked for a refund."""


class TokenAlreadyActivated(TokenNotRefundable):
    def __init__(self) -> None:
        super().__init__("Token has already been activated and cannot be refunded")


class TokenAlreadyRevoked(TokenNotRefundable):
    def __init__(self) -> None:
        super().__init__("Token has already been revoked")


class MailDeliveryFailed(DomainError):
    """The mail server did not take an email. `permanent` when trying again cannot help (it
    refused the recipient or the message); otherwise the attempt may be repeated later."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(reason)


class BrokerUnavailable(DomainError):
    """The message broker did not accept a message; whatever was not handed over stays in the
    outbox for the relay's next run."""


class InvalidWebhookUrl(InvalidInput):
    """A webhook URL that is not http(s), or whose host resolves to a non-public address."""


class WebhookNotFound(NotFound):
    """No such webhook endpoint, or it belongs to someone else: both look the same."""

    def __init__(self) -> None:
        super().__init__("Webhook not found")


class WebhookDeliveryNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Webhook delivery not found")


class WebhookSendFailed(DomainError):
    """A webhook receiver could not be reached or did not answer in time."""
