"""Accounts: the rules for who a user is (email, username, password) and creating one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from uuid import UUID

from zenzefi_core.domain import User
from zenzefi_core.errors import DuplicateUser, InvalidInput
from zenzefi_core.ids import new_id
from zenzefi_core.ports import Clock, PasswordHasher, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.security import new_referral_code

USERNAME_MIN, USERNAME_MAX = 3, 50
PASSWORD_MIN_BYTES, PASSWORD_MAX_BYTES = 8, 72
EMAIL_MAX = 254
FULL_NAME_MAX = 200

# No whitespace or control characters anywhere: PostgreSQL refuses NUL in text, and a stored
# address with invisible characters could never be typed in again.
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def normalize_email(email: str) -> str:
    """Emails are compared and stored lower-cased and trimmed, so one person has one account."""
    value = email.strip().lower()
    if len(value) > EMAIL_MAX or not _EMAIL.match(value):
        raise InvalidInput("email is not a valid address")
    return value


def validate_username(username: str) -> str:
    value = username.strip()
    if not USERNAME_MIN <= len(value) <= USERNAME_MAX:
        raise InvalidInput(f"username must be {USERNAME_MIN} to {USERNAME_MAX} characters")
    if not _USERNAME.match(value):
        raise InvalidInput("username may contain only letters, digits, '_', '.' and '-'")
    return value


def one_line_text(value: str, field: str, maximum: int) -> str | None:
    """Free text on one line: trimmed, blank means none, at most `maximum` characters."""
    text = value.strip()
    if not text:
        return None
    if len(text) > maximum:
        raise InvalidInput(f"{field} must be at most {maximum} characters")
    if _CONTROL.search(text):
        raise InvalidInput(f"{field} must not contain control characters")
    return text


def validate_full_name(full_name: str | None) -> str | None:
    return None if full_name is None else one_line_text(full_name, "full_name", FULL_NAME_MAX)


def validate_password(password: str) -> str:
    """8 to 72 bytes of UTF-8: the upper bound keeps hashing cost bounded for any input."""
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("password must be valid Unicode text") from None
    if size < PASSWORD_MIN_BYTES:
        raise InvalidInput(f"password must be at least {PASSWORD_MIN_BYTES} bytes")
    if size > PASSWORD_MAX_BYTES:
        raise InvalidInput(f"password must be at most {PASSWORD_MAX_BYTES} bytes")
    return password


def unused_referral_code(uow: UnitOfWork) -> str:
    """A fresh code not yet held by anyone (a clash among 36¹² codes is rare, but checked)."""
    while True:
        code = new_referral_code()
        if uow.users.get_by_referral_code(code) is None:
            return code


@dataclass(frozen=True, slots=True)
class NewUser:
    """A new account's fields, validated, with the password already hashed."""

    email: str
    username: str
    password_hash: str
    full_name: str | None = None


def prepare_user(
    hasher: PasswordHasher,
    *,
    email: str,
    username: str,
    password: str,
    full_name: str | None = None,
) -> NewUser:
    """Validate the fields, then hash the password: the slow part, which a use case runs before
    its unit of work opens so that no transaction is held (nor, on SQLite, the write lock)
    while it runs."""
    email = normalize_email(email)
    username = validate_username(username)
    validate_password(password)
    full_name = validate_full_name(full_name)
    return NewUser(
        email=email, username=username, password_hash=hasher.hash(password), full_name=full_name
    )


def store_user(
    uow: UnitOfWork,
    clock: Clock,
    new_user: NewUser,
    *,
    referred_by_id: UUID | None = None,
    is_superuser: bool = False,
) -> User:
    """Store a prepared user inside the caller's unit of work, unless the email or username is
    taken."""
    if uow.users.get_by_email(new_user.email) is not None:
        raise DuplicateUser("email")
    if uow.users.get_by_username(new_user.username) is not None:
        raise DuplicateUser("username")
    user = User(
        id=new_id(),
        email=new_user.email,
        username=new_user.username,
        password_hash=new_user.password_hash,
        referral_code=unused_referral_code(uow),
        full_name=new_user.full_name,
        referred_by_id=referred_by_id,
        is_superuser=is_superuser,
        created_at=clock.now(),
    )
    uow.users.add(user)
    return user


def add_user(
    uow: UnitOfWork,
    clock: Clock,
    hasher: PasswordHasher,
    *,
    email: str,
    username: str,
    password: str,
    full_name: str | None = None,
    referred_by_id: UUID | None = None,
    is_superuser: bool = False,
) -> User:
    """Validate and store a new user inside the caller's unit of work, hashing inside it too:
    for one-off callers (the operator command, seeding); request paths use `prepare_user`
    before their unit of work and `store_user` in it."""
    new_user = prepare_user(
        hasher, email=email, username=username, password=password, full_name=full_name
    )
    return store_user(
        uow, clock, new_user, referred_by_id=referred_by_id, is_superuser=is_superuser
    )


@dataclass(frozen=True, slots=True)
class SuperuserResult:
    user: User
    created: bool


class CreateSuperuser:
    """Create an operator account, or promote (and reactivate) the user who owns the email.

    Promoting leaves the existing password alone: whoever runs the command should not be able to
    take over an account by naming its email.
    """

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock, hasher: PasswordHasher):
        self._uow_factory = uow_factory
        self._clock = clock
        self._hasher = hasher

    def __call__(self, *, email: str, username: str, password: str) -> SuperuserResult:
        with self._uow_factory() as uow:
            existing = uow.users.get_by_email(normalize_email(email))
            if existing is not None:
                promoted = uow.users.set_superuser(existing.id, True) or existing
                if not existing.is_active:
                    uow.users.set_active(existing.id, True)
                    # As `SetUserActive` does: nothing from before the deactivation comes back.
                    promoted = uow.users.end_sessions(existing.id) or promoted
                uow.commit()
                return SuperuserResult(user=promoted, created=False)
            user = add_user(
                uow,
                self._clock,
                self._hasher,
                email=email,
                username=username,
                password=password,
                is_superuser=True,
            )
            uow.commit()
            return SuperuserResult(user=user, created=True)
