"""Settings, read once from the environment (prefix `ZENZEFI_`) and passed in; no globals.

Each concern has its own group so a component takes only what it needs. With nothing set, every
value falls back to the embedded default: a SQLite database under `./zenzefi-data`, an in-process
broker and cache, and emails written to a mailbox folder.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from decimal import Decimal
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from zenzefi_core.money import Sign, parse_amount
from zenzefi_core.pricing import DEFAULT_PRICES
from zenzefi_core.referrals import DEFAULT_PERCENT

#: The shortest secret key accepted: HMAC-SHA256 keys shorter than its 32-byte output weaken
#: every signature made with them.
MIN_SECRET_KEY_BYTES = 32


class SecretKeyError(ValueError):
    """The secret key cannot be used: too short, or its file in the data folder is damaged."""


def _read_key(path: Path) -> str:
    key = path.read_text(encoding="utf-8").strip()
    if len(key.encode("utf-8")) < MIN_SECRET_KEY_BYTES:
        raise SecretKeyError(
            f"{path} holds no usable secret key (shorter than {MIN_SECRET_KEY_BYTES} bytes); "
            "restore it from your backup, or delete it to have a new one generated (which logs "
            "everyone out and makes stored webhook secrets unreadable)"
        )
    return key


def generated_secret_key(path: Path) -> str:
    """The key kept in `path`, generated there on first use.

    The new key is written in full to a private (0600) temporary file beside it, flushed to
    disk, then hard-linked to `path`: the link either appears with the whole key or fails
    because another process linked its key first, in which case that key is read and used. No
    process can read an empty or partial key, and processes starting at once agree on one.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # mkstemp creates the file with mode 0600 and O_EXCL, whatever the umask.
    handle, temporary = tempfile.mkstemp(prefix=".secret_key.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(key)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_key(path)
        except OSError as error:
            raise SecretKeyError(
                f"cannot create {path} ({error.strerror}; the key file is put in place with a "
                "hard link, which this file system may not support): set ZENZEFI_SECRET_KEY"
            ) from error
        _sync_directory(path.parent)
    finally:
        os.unlink(temporary)
    return key


def _sync_directory(directory: Path) -> None:
    """Make the new name durable, so a crash cannot lose a key that already signed tokens."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_DATABASE_", extra="ignore")

    #: `postgresql://…` (psycopg 3 is used) or `sqlite:///…`; unset: SQLite in the data folder.
    url: str | None = None


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_REDIS_", extra="ignore")

    #: Unset: the in-process broker and cache of the embedded default.
    url: str | None = None
    #: Prefix of every key the broker, the scheduler lock and the cache write, so that several
    #: deployments (or test runs) can share one Redis.
    namespace: str = Field(default="zenzefi", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")


class SmtpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_SMTP_", extra="ignore")

    #: Unset: emails are written as files under `DATA_DIR/mailbox`.
    host: str | None = None
    #: 587 for STARTTLS (submission); the port of a local relay otherwise.
    port: int = 587
    #: Login name at the mail server; unset: no login.
    username: str | None = None
    #: The password of `username` at the mail server.
    password: SecretStr | None = None
    #: The sender of every email, as `Name <address>`.
    from_: str = Field(default="Zenzefi <no-reply@localhost>", alias="ZENZEFI_SMTP_FROM")
    #: Upgrade the connection with STARTTLS (the server's certificate is verified against the
    #: system's CAs) before logging in.
    starttls: bool = True
    #: How long to wait for the mail server to connect or answer, in seconds.
    timeout_seconds: float = Field(default=10.0, gt=0)


class UpstreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_UPSTREAM_", extra="ignore")

    #: The Zenzefi diagnostic server the proxy forwards to.
    url: str | None = None
    #: Verify the upstream's TLS certificate. Turn off only for a self-signed test server;
    #: better, point `ca_file` at its certificate.
    verify_tls: bool = True
    #: A PEM file of CA certificates to verify the upstream with, instead of the system's.
    ca_file: Path | None = None
    #: Longest wait for a connection to the upstream; then 502.
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    #: Longest wait for the upstream's next bytes (not for the whole response); then 504.
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    #: Connections the proxy keeps to the upstream; more requests at once wait for one.
    max_connections: int = Field(default=100, gt=0)


class ProxySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_PROXY_", extra="ignore")

    #: A session unused this long releases its token to another device (409 until then).
    session_idle_seconds: float = Field(default=300.0, gt=0)
    #: Proxied requests per token per minute; beyond it 429.
    rate_limit_per_minute: int = Field(default=1000, gt=0)
    #: How long a token is served from the cache (by the proxy, and by `/proxy/status`).
    cache_seconds: float = Field(default=300.0, gt=0)
    #: How long a device's hold on a token is trusted before the database is asked again;
    #: must stay below `session_idle_seconds`.
    device_recheck_seconds: float = Field(default=30.0, gt=0)


class PaymentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_PAYMENTS_", extra="ignore")

    #: Shared secret of the provider's callback signatures; unset: derived from SECRET_KEY.
    secret: SecretStr | None = None
    #: Where a payment intent sends the user to pay; unset: PUBLIC_URL + /pay.
    checkout_url: str | None = None
    #: Lets a superuser settle a pending payment by hand (local use only). Off by default.
    dev_mode: bool = False
    #: Exchange rate of top-ups: the provider charges this many roubles per ZNC.
    rub_per_znc: Decimal = Field(default=Decimal("10"), gt=0)
    #: How old (seconds) a signed callback may be before it is refused as a possible replay.
    callback_tolerance_seconds: int = Field(default=300, gt=0)


class TokenSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_TOKENS_", extra="ignore")

    #: Hours -> ZNC, as JSON with string amounts: `{"1": "1.00", "24": "18.00"}`.
    prices: dict[int, Decimal] = Field(default_factory=lambda: dict(DEFAULT_PRICES), min_length=1)

    @field_validator("prices", mode="before")
    @classmethod
    def _exact_prices(cls, value: object) -> object:
        # Floats never carry money: `parse_amount` refuses them and anything beyond cents.
        if isinstance(value, dict):
            return {
                hours: parse_amount(price, sign=Sign.POSITIVE) for hours, price in value.items()
            }
        return value


class ReferralSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_REFERRAL_", extra="ignore")

    #: The referrer's share of each purchase, in percent.
    percent: Decimal = Field(default=DEFAULT_PERCENT, ge=0, le=100)
    #: Purchases below this amount earn no bonus.
    minimum_purchase: Decimal = Field(default=Decimal("0.00"), ge=0)
    #: Only a referee's first purchase earns a bonus.
    first_purchase_only: bool = False
    #: The most a referrer is paid in bonuses in one calendar month (UTC), counted when each
    #: bonus is paid (at its token's first use); unset: no cap.
    monthly_cap: Decimal | None = Field(default=None, ge=0)

    @field_validator("minimum_purchase", "monthly_cap", mode="before")
    @classmethod
    def _exact_amount(cls, value: object) -> object:
        return None if value is None else parse_amount(value, sign=Sign.NON_NEGATIVE)


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_AUTH_", extra="ignore")

    #: How long a login token (JWT) stays valid; the login response reports it as `expires_in`.
    token_minutes: int = Field(default=60, gt=0, le=43_200)


class SecuritySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_SECURITY_", extra="ignore")

    #: Password hashes and checks (logins, registrations, password changes) running at once in
    #: one process; more wait their turn. Each holds 64 MiB and CPU while it runs. Unset: the
    #: number of CPUs.
    max_concurrent_password_hashes: int | None = Field(default=None, ge=1)

    def password_hash_limit(self) -> int:
        """The configured bound, or the number of CPUs (2 when it cannot be told)."""
        if self.max_concurrent_password_hashes is not None:
            return self.max_concurrent_password_hashes
        return max(1, os.cpu_count() or 2)


class RateLimitSettings(BaseSettings):
    """Attempts per client address within a sliding window, for the login and register routes."""

    model_config = SettingsConfigDict(env_prefix="ZENZEFI_RATE_LIMIT_", extra="ignore")

    #: Off only for load tests; an exposed server without it invites password guessing.
    enabled: bool = True
    #: Login attempts per client address within the window; beyond them 429.
    login_attempts: int = Field(default=10, gt=0)
    #: Registrations per client address within the window; beyond them 429.
    register_attempts: int = Field(default=5, gt=0)
    #: The length of the sliding window, in seconds.
    window_seconds: float = Field(default=60.0, gt=0)


class NotificationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_NOTIFICATIONS_", extra="ignore")

    #: At most this many emails of one kind to one user within 24 hours (0: none at all).
    daily_limit: int = Field(default=2, ge=0)
    #: Attempts to hand an email to the mail server before it is recorded as failed.
    max_attempts: int = Field(default=6, ge=1)
    #: The wait after the first failed attempt, in seconds; it doubles after each further one...
    retry_base_seconds: float = Field(default=30.0, gt=0)
    #: ... up to this.
    retry_max_seconds: float = Field(default=3600.0, gt=0)
    #: A token's owner is told when it has this many hours or fewer left.
    expiry_notice_hours: float = Field(default=24.0, gt=0)


class SchedulerSettings(BaseSettings):
    """How often the periodic jobs run, and the lock that keeps one scheduler active."""

    model_config = SettingsConfigDict(env_prefix="ZENZEFI_SCHEDULER_", extra="ignore")

    #: How often pending outbox events, overdue emails and overdue webhook deliveries are
    #: handed to the broker again.
    outbox_relay_seconds: float = Field(default=30.0, gt=0)
    #: How often tokens about to expire are looked for, to tell their owners.
    token_expiry_scan_seconds: float = Field(default=300.0, gt=0)
    #: How often idle proxy sessions are closed and expired tokens reported.
    session_cleanup_seconds: float = Field(default=600.0, gt=0)
    #: How often Idempotency-Keys older than their 24-hour lifetime are deleted, with the
    #: encrypted token secrets kept for their replays.
    idempotency_purge_seconds: float = Field(default=3600.0, gt=0)
    #: How long the active scheduler's lock lives without renewal: a scheduler that dies is
    #: replaced after at most this long.
    lock_ttl_seconds: float = Field(default=30.0, gt=0)


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_WORKER_", extra="ignore")

    #: Threads per worker process (and of the in-process worker of `zenzefi serve`).
    threads: int = Field(default=4, ge=1)


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_WEBHOOKS_", extra="ignore")

    #: Waits before each retry after the first, immediate attempt, in seconds (Standard
    #: Webhooks: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); JSON, e.g. `[0.1, 0.1]` in tests.
    retry_delays_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    #: A receiver answering 2xx within this many seconds has the message.
    timeout_seconds: float = Field(default=10.0, gt=0)
    #: How much of a receiver's answer is read and kept in the delivery log (1 KiB at most).
    max_response_bytes: int = Field(default=1024, gt=0, le=1024)
    #: How long a rotated-out secret keeps signing beside the new one.
    rotation_overlap_hours: float = Field(default=24.0, ge=0)
    #: An endpoint whose deliveries have failed without a success for this long is disabled.
    disable_after_hours: float = Field(default=120.0, gt=0)
    #: Deliveries in flight to one endpoint at once, across all workers.
    concurrency_per_endpoint: int = Field(default=4, ge=1)


class MetricsSettings(BaseSettings):
    """The Prometheus endpoints: `GET /metrics` on each API process, and one HTTP server per
    `zenzefi worker` command."""

    model_config = SettingsConfigDict(env_prefix="ZENZEFI_METRICS_", extra="ignore")

    #: When set, both endpoints answer only `Authorization: Bearer <token>` (401 otherwise).
    token: SecretStr | None = None
    #: The address `zenzefi worker` serves its processes' metrics on.
    worker_host: str = "127.0.0.1"
    #: The port of that server; 0 turns it off.
    worker_port: int = Field(default=9191, ge=0, le=65535)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_", extra="ignore")

    #: Where the embedded default keeps its SQLite database, generated secret key and mailbox.
    data_dir: Path = Path("zenzefi-data")
    #: Signs login tokens, unsubscribe links and (unless set apart) payment callbacks; at least 32
    #: bytes. Unset: one is generated once and kept in `DATA_DIR/secret_key` (mode 0600). Every
    #: process must share it.
    secret_key: SecretStr | None = None
    #: The address users reach the service at: the base of links in emails and payment pages.
    public_url: str = "http://127.0.0.1:8000"
    #: Allow webhook URLs that resolve to private, loopback or link-local addresses.
    webhook_allow_private: bool = False
    #: How often each API process writes the proxy usage it counted to the database.
    usage_flush_seconds: float = Field(default=5.0, gt=0)
    #: A debit that takes a balance from at or above this to below it emails a warning.
    low_balance_threshold: Decimal = Decimal("10.00")
    #: The largest amount one request may move (credit, top-up); larger is refused with 422.
    max_amount: Decimal = Decimal("1000000.00")
    #: Requests with a larger body are refused with 413 before it is read.
    max_request_bytes: int = Field(default=1_048_576, gt=0)
    #: How long `/health` waits for the database and for the upstream server.
    health_timeout_seconds: float = Field(default=2.0, gt=0)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    payments: PaymentSettings = Field(default_factory=PaymentSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    referral: ReferralSettings = Field(default_factory=ReferralSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'zenzefi.db').resolve()}"

    @field_validator("secret_key")
    @classmethod
    def _long_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if (
            value is not None
            and len(value.get_secret_value().encode("utf-8")) < MIN_SECRET_KEY_BYTES
        ):
            raise PydanticCustomError(
                "secret_key_too_short",
                f"ZENZEFI_SECRET_KEY must be at least {MIN_SECRET_KEY_BYTES} bytes long; "
                "generate one with: "
                'python3 -c "import secrets; print(secrets.token_urlsafe(48))"',
            )
        return value

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated on first use and kept in the data folder.

        Keeping it on disk means tokens and signed links survive a restart of the embedded
        default without the operator having to set anything.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return generated_secret_key(self.data_dir / "secret_key")

    def payment_secret(self) -> str:
        """The provider's callback secret, or one derived from the secret key when unset."""
        if self.payments.secret is not None:
            return self.payments.secret.get_secret_value()
        key = self.resolved_secret_key().encode("utf-8")
        return hmac.new(key, b"zenzefi-payments", hashlib.sha256).hexdigest()

    def checkout_url(self) -> str:
        return self.payments.checkout_url or f"{self.public_url.rstrip('/')}/pay"
