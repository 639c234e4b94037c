"""Password hashing (Argon2id), referral codes, access tokens and the encryption of secrets the
server must keep: secrets the core creates and checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from zenzefi_core.ports import PasswordHasher

REFERRAL_CODE_ALPHABET = string.ascii_uppercase + string.digits
REFERRAL_CODE_LENGTH = 12
ACCESS_TOKEN_BYTES = 48
ACCESS_TOKEN_PREFIX_LENGTH = 8


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


class BoundedPasswordHasher:
    """Lets at most `max_concurrent` hashes and verifications of `inner` run at once; the rest wait.

    Argon2id holds 64 MiB and CPU for each hash while it runs, and the API runs them in a
    thread pool of 40: a burst of logins would otherwise take gigabytes of memory and every core
    from the other requests. A caller beyond the bound waits its turn instead of failing.
    """

    def __init__(self, inner: PasswordHasher, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        self._inner = inner
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def hash(self, password: str) -> str:
        with self._slots:
            return self._inner.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        with self._slots:
            return self._inner.verify(password_hash, password)


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """Whether an `Authorization` header is `Bearer <expected>`, compared in constant time.

    For a fixed shared secret such as the metrics token, which both the API and the worker's
    metrics server check; login tokens are JWTs and go through the API's own verifier.
    """
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.encode()
    )


def fast_password_hasher() -> Argon2PasswordHasher:
    """Argon2id with minimal cost, for test suites that create many users. Never in production."""
    return Argon2PasswordHasher(_Argon2(time_cost=1, memory_cost=8, parallelism=1))


def new_referral_code() -> str:
    """Twelve characters from A-Z and 0-9: 36**12 codes, so guessing one is hopeless."""
    return "".join(secrets.choice(REFERRAL_CODE_ALPHABET) for _ in range(REFERRAL_CODE_LENGTH))


@dataclass(frozen=True, slots=True)
class AccessTokenSecret:
    """A new access token: the plaintext for the buyer, the hash and prefix for the database."""

    plaintext: str
    hash: str
    prefix: str


def hash_access_token(plaintext: str) -> str:
    """SHA-256 hex of the token. Enough on its own: the token is 384 random bits, not a password."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def new_access_token() -> AccessTokenSecret:
    """48 random bytes, URL-safe; only the hash is ever stored, the plaintext is shown once."""
    plaintext = secrets.token_urlsafe(ACCESS_TOKEN_BYTES)
    return AccessTokenSecret(
        plaintext=plaintext,
        hash=hash_access_token(plaintext),
        prefix=plaintext[:ACCESS_TOKEN_PREFIX_LENGTH],
    )


#: The HKDF purposes of the keys `SecretCipher` derives: one key per kind of secret, so a
#: ciphertext of one kind can never be taken for another.
WEBHOOK_SECRETS = b"zenzefi-webhook-secrets-v1"
REPLAY_SECRETS = b"zenzefi-idempotent-replay-secrets-v1"


class SecretCipher:
    """Encrypts secrets the server must be able to read again (webhook signing secrets, the
    access tokens of a response kept for Idempotency-Key replays) at rest: Fernet (AES-128-CBC
    with HMAC-SHA256), with a key derived from the server's secret key by HKDF for `purpose`,
    so the database alone does not reveal them."""

    def __init__(self, server_key: str, purpose: bytes = WEBHOOK_SECRETS) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
            server_key.encode("utf-8")
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")

    def try_decrypt(self, token: str) -> str | None:
        """None when the ciphertext was not made with this key (the server's secret key was
        changed since) or was altered."""
        try:
            return self.decrypt(token)
        except (InvalidToken, UnicodeError):
            return None
