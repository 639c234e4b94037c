"""Password hashing (Argon2id) and referral codes: secrets the core creates and checks."""

from __future__ import annotations

import secrets
import string

from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError

REFERRAL_CODE_ALPHABET = string.ascii_uppercase + string.digits
REFERRAL_CODE_LENGTH = 12


class Argon2PasswordHasher:
    """Argon2id with the library's recommended parameters (RFC 9106 low-memory profile)."""

    def __init__(self, hasher: _Argon2 | None = None) -> None:
        self._hasher = hasher or _Argon2()

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def fast_password_hasher() -> Argon2PasswordHasher:
    """Argon2id with minimal cost, for test suites that create many users. Never in production."""
    return Argon2PasswordHasher(_Argon2(time_cost=1, memory_cost=8, parallelism=1))


def new_referral_code() -> str:
    """Twelve characters from A-Z and 0-9: 36**12 codes, so guessing one is hopeless."""
    return "".join(secrets.choice(REFERRAL_CODE_ALPHABET) for _ in range(REFERRAL_CODE_LENGTH))
