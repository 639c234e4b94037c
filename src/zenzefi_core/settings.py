"""Settings, read once from the environment (prefix `ZENZEFI_`) and passed in; no globals.

Each concern has its own group so a component takes only what it needs. With nothing set, every
value falls back to the embedded default: a SQLite database under `./zenzefi-data`, an in-process
broker and cache, and emails written to a mailbox folder.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_DATABASE_", extra="ignore")

    #: `postgresql://…` (psycopg 3 is used) or `sqlite:///…`; unset: SQLite in the data folder.
    url: str | None = None


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_REDIS_", extra="ignore")

    #: Unset: the in-process broker and cache of the embedded default.
    url: str | None = None


class SmtpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_SMTP_", extra="ignore")

    #: Unset: emails are written as files under `DATA_DIR/mailbox`.
    host: str | None = None
    port: int = 587
    username: str | None = None
    password: SecretStr | None = None
    from_: str = Field(default="Zenzefi <no-reply@localhost>", alias="ZENZEFI_SMTP_FROM")
    starttls: bool = True


class UpstreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_UPSTREAM_", extra="ignore")

    #: The Zenzefi diagnostic server the proxy forwards to.
    url: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENZEFI_", extra="ignore")

    data_dir: Path = Path("zenzefi-data")
    secret_key: SecretStr | None = None
    public_url: str = "http://127.0.0.1:8000"
    webhook_allow_private: bool = False
    usage_flush_seconds: float = Field(default=5.0, gt=0)
    low_balance_threshold: Decimal = Decimal("10.00")
    #: The largest amount one request may move (credit, top-up); larger is refused with 422.
    max_amount: Decimal = Decimal("1000000.00")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'zenzefi.db').resolve()}"

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated on first use and kept in the data folder.

        Keeping it on disk means tokens and signed links survive a restart of the embedded
        default without the operator having to set anything.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(key)
        except FileExistsError:
            # Another process wrote it first; use theirs so both agree.
            return path.read_text(encoding="utf-8").strip()
        path.chmod(0o600)
        return key
