"""The schema as SQLAlchemy Core tables. Alembic migrations create it; this describes it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)

from zenzefi_core.adapters.sqlalchemy.types import Money, Percent, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("username", String(50), nullable=False),
    # Usernames are unique regardless of case; this column holds the folded form the index uses.
    Column("username_lower", String(50), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("full_name", String(200), nullable=True),
    Column("referral_code", String(12), nullable=False, unique=True),
    Column("referred_by_id", Uuid, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("is_active", Boolean, nullable=False),
    Column("is_superuser", Boolean, nullable=False),
    Column("balance", Money, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Raised by a password change or a deactivation: login tokens issued at an older version
    # are refused.
    Column("session_version", Integer, nullable=False, server_default=text("0")),
    CheckConstraint("balance >= 0", name="balance_non_negative"),
    Index(None, "referred_by_id"),
    # Analytics count new users per bucket of a window of time.
    Index(None, "created_at"),
)

transactions = Table(
    "transactions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    Column("amount", Money, nullable=False),
    Column("balance_after", Money, nullable=False),
    Column("transaction_type", String(32), nullable=False),
    Column("description", Text, nullable=False),
    Column("reference_type", String(32), nullable=False),
    Column("reference_id", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("amount <> 0", name="amount_non_zero"),
    CheckConstraint("balance_after >= 0", name="balance_after_non_negative"),
    CheckConstraint("reference_type <> '' AND reference_id <> ''", name="has_cause"),
    CheckConstraint(
        "transaction_type IN ('deposit', 'purchase', 'refund', 'referral_bonus', "
        "'referral_clawback', 'adjustment')",
        name="known_type",
    ),
    Index(None, "user_id", "created_at"),
    Index(None, "reference_type", "reference_id"),
    # Analytics sum purchases, refunds and bonuses over a window, never reading the deposits.
    Index(
        None,
        "transaction_type",
        "created_at",
        postgresql_include=["reference_type", "amount"],
    ),
)

outbox_events = Table(
    "outbox_events",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("dispatched_at", UtcDateTime, nullable=True),
    Column("attempts", Integer, nullable=False),
    Index(None, "dispatched_at", "created_at"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("operation", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("response", JSON, nullable=False),
    # The access tokens' secrets of the first response, encrypted (see `SecretCipher`).
    Column("secrets_encrypted", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    # The purge of expired keys walks this.
    Index(None, "created_at"),
)

payment_intents = Table(
    "payment_intents",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    Column("amount_znc", Money, nullable=False),
    Column("amount_rub", Money, nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("payment_url", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("completed_at", UtcDateTime, nullable=True),
    CheckConstraint("amount_znc > 0", name="amount_positive"),
    CheckConstraint(
        "status IN ('pending', 'succeeded', 'failed', 'cancelled')", name="known_status"
    ),
    Index(None, "user_id", "created_at"),
)

payment_events = Table(
    "payment_events",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column(
        "payment_id", Uuid, ForeignKey("payment_intents.id", ondelete="CASCADE"), nullable=False
    ),
    Column("status", String(16), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Index(None, "payment_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Uuid, primary_key=True),
    # Null for actions taken by the system itself rather than an operator.
    Column("actor_id", Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target_type", String(32), nullable=False),
    Column("target_id", String(64), nullable=False),
    Column("details", JSON, nullable=False),
    Column("client_address", String(64), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "created_at"),
    Index(None, "target_type", "target_id"),
    Index(None, "actor_id"),
)

token_bundles = Table(
    "token_bundles",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("description", Text, nullable=True),
    Column("token_count", Integer, nullable=False),
    Column("duration_hours", Integer, nullable=False),
    Column("scope", String(32), nullable=False),
    Column("discount_percent", Percent, nullable=False),
    Column("base_price", Money, nullable=False),
    Column("total_price", Money, nullable=False),
    Column("is_active", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("token_count > 0", name="token_count_positive"),
    CheckConstraint("discount_percent >= 0 AND discount_percent < 100", name="discount_in_range"),
    CheckConstraint("total_price > 0 AND total_price <= base_price", name="price_derived"),
    CheckConstraint("scope IN ('full', 'certificates_only')", name="known_scope"),
    # The public catalogue: bundles on sale, cheapest first.
    Index(None, "is_active", "total_price"),
)

bundle_purchases = Table(
    "bundle_purchases",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    Column("bundle_id", Uuid, ForeignKey("token_bundles.id", ondelete="RESTRICT"), nullable=False),
    Column("bundle_name", String(100), nullable=False),
    Column("token_count", Integer, nullable=False),
    Column("duration_hours", Integer, nullable=False),
    Column("scope", String(32), nullable=False),
    Column("total_price", Money, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("total_price > 0", name="price_positive"),
    Index(None, "user_id", "created_at"),
    Index(None, "bundle_id"),
)

access_tokens = Table(
    "access_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    # SHA-256 hex of the secret; the secret itself is never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("token_prefix", String(16), nullable=False),
    Column("duration_hours", Integer, nullable=False),
    Column("scope", String(32), nullable=False),
    Column("price_paid", Money, nullable=False),
    Column(
        "bundle_purchase_id",
        Uuid,
        ForeignKey("bundle_purchases.id", ondelete="RESTRICT"),
        nullable=True,
    ),
    Column("created_at", UtcDateTime, nullable=False),
    Column("activated_at", UtcDateTime, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    CheckConstraint("duration_hours > 0", name="duration_positive"),
    CheckConstraint("price_paid > 0", name="price_positive"),
    CheckConstraint("scope IN ('full', 'certificates_only')", name="known_scope"),
    CheckConstraint(
        "(activated_at IS NULL AND expires_at IS NULL) "
        "OR (activated_at IS NOT NULL AND expires_at IS NOT NULL)",
        name="activation_complete",
    ),
    Index(None, "user_id", "created_at"),
    # Usage analytics count a user's usable tokens.
    Index(
        "ix_access_tokens_user_id_expires_at_usable",
        "user_id",
        "expires_at",
        sqlite_where=text("revoked_at IS NULL"),
        postgresql_where=text("revoked_at IS NULL"),
    ),
    Index(None, "bundle_purchase_id"),
    # The scheduled expiry scans look tokens up by when they end.
    Index(None, "expires_at"),
)

referral_bonuses = Table(
    "referral_bonuses",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("referrer_id", Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    Column("referee_id", Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    Column("purchase_type", String(32), nullable=False),
    # A token's or a bundle purchase's id: one bonus per purchase at most.
    Column("purchase_id", Uuid, nullable=False, unique=True),
    Column("purchase_amount", Money, nullable=False),
    Column("amount", Money, nullable=False),
    Column("clawed_back", Money, nullable=False),
    Column("shortfall", Money, nullable=False),
    Column(
        "transaction_id", Uuid, ForeignKey("transactions.id", ondelete="RESTRICT"), nullable=False
    ),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(
        # ROUND keeps SQLite's binary floating point from failing an exact sum by a hair.
        "clawed_back >= 0 AND shortfall >= 0 AND ROUND(clawed_back + shortfall, 2) <= amount",
        name="reversal_within_bonus",
    ),
    # The monthly cap sums one referrer's bonuses over a window of time.
    Index(None, "referrer_id", "created_at"),
    Index(None, "referee_id"),
)

referral_shares = Table(
    "referral_shares",
    metadata,
    # One token's share of its purchase's bonus, paid when the token is first used.
    Column("token_id", Uuid, ForeignKey("access_tokens.id", ondelete="RESTRICT"), primary_key=True),
    Column("referrer_id", Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    Column("referee_id", Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False),
    Column("purchase_type", String(32), nullable=False),
    Column("purchase_id", Uuid, nullable=False),
    Column("amount", Money, nullable=False),
    Column("state", String(16), nullable=False),
    Column("credited", Money, nullable=False),
    Column(
        "transaction_id", Uuid, ForeignKey("transactions.id", ondelete="RESTRICT"), nullable=True
    ),
    Column("created_at", UtcDateTime, nullable=False),
    Column("settled_at", UtcDateTime, nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("credited >= 0 AND credited <= amount", name="credited_within_share"),
    CheckConstraint(
        "state IN ('pending', 'credited', 'cancelled', 'forfeited')", name="known_state"
    ),
    # Paid means a ledger entry; anything else means none.
    CheckConstraint(
        "(state = 'credited') = (transaction_id IS NOT NULL)", name="credited_has_entry"
    ),
    # A referrer's pending total, and the monthly cap summing what was paid over a window.
    Index(None, "referrer_id", "state"),
    Index(None, "referrer_id", "settled_at"),
    Index(None, "referee_id"),
)

KNOWN_NOTIFICATION_KIND = "kind IN ('token_expiring', 'balance_low', 'referral_bonus')"

notification_preferences = Table(
    "notification_preferences",
    metadata,
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint(KNOWN_NOTIFICATION_KIND, name="known_kind"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),
    # One email per trigger: a repeated event or scan finds its key taken and adds nothing.
    Column("dedup_key", String(200), nullable=False, unique=True),
    Column("recipient", String(254), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("body_text", Text, nullable=False),
    Column("body_html", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    # The lease of the worker sending it now; null when nobody is.
    Column("locked_until", UtcDateTime, nullable=True),
    Column("sent_at", UtcDateTime, nullable=True),
    CheckConstraint(KNOWN_NOTIFICATION_KIND, name="known_kind"),
    CheckConstraint("state IN ('queued', 'sent', 'failed')", name="known_state"),
    CheckConstraint("attempts >= 0", name="attempts_non_negative"),
    # The daily limit counts one user's emails of one kind over a window of time.
    Index(None, "user_id", "kind", "created_at"),
    # The relay's sweep looks for queued emails whose next attempt is due.
    Index(None, "state", "next_attempt_at"),
)

token_notices = Table(
    "token_notices",
    metadata,
    # What the scheduled scans have told about a token, so no scan tells it twice.
    Column("token_id", Uuid, ForeignKey("access_tokens.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("kind IN ('expiring')", name="known_kind"),
)

proxy_sessions = Table(
    "proxy_sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("token_id", Uuid, ForeignKey("access_tokens.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", String(255), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    # Moved by the usage flushes, so it lags the last request by up to one flush interval.
    Column("last_activity", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("request_count", BigInteger, nullable=False),
    Column("bytes_in", BigInteger, nullable=False),
    Column("bytes_out", BigInteger, nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    CheckConstraint(
        "request_count >= 0 AND bytes_in >= 0 AND bytes_out >= 0", name="counters_non_negative"
    ),
    # One device per token: at most one open session each, enforced here, not by a read first.
    Index(
        "ix_proxy_sessions_token_id_open",
        "token_id",
        unique=True,
        sqlite_where=text("ended_at IS NULL"),
        postgresql_where=text("ended_at IS NULL"),
    ),
    Index(None, "token_id", "started_at"),
    # Usage analytics read one user's sessions over a window of time; on PostgreSQL from the
    # index alone, which carries what they sum.
    Index(
        None,
        "user_id",
        "started_at",
        postgresql_include=["request_count", "bytes_in", "bytes_out", "ended_at"],
    ),
    # Usage analytics count a user's open sessions.
    Index(
        "ix_proxy_sessions_user_id_open",
        "user_id",
        sqlite_where=text("ended_at IS NULL"),
        postgresql_where=text("ended_at IS NULL"),
    ),
    # Global analytics read every user's sessions over a window of time.
    Index(
        None,
        "started_at",
        postgresql_include=["user_id", "request_count", "bytes_in", "bytes_out"],
    ),
    # The idle cleanup looks for open sessions by last activity.
    Index(None, "ended_at", "last_activity"),
)

token_expiry_reports = Table(
    "token_expiry_reports",
    metadata,
    # A token whose `token.expired` event was written, so no scan writes it twice.
    Column("token_id", Uuid, ForeignKey("access_tokens.id", ondelete="CASCADE"), primary_key=True),
    Column("reported_at", UtcDateTime, nullable=False),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("events", JSON, nullable=False),
    Column("is_active", Boolean, nullable=False),
    # Encrypted with a key derived from the server's secret key, never stored in plain text.
    Column("secret_encrypted", Text, nullable=False),
    Column("previous_secret_encrypted", Text, nullable=True),
    Column("previous_secret_until", UtcDateTime, nullable=True),
    Column("failing_since", UtcDateTime, nullable=True),
    Column("disabled_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "user_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    # Also the `webhook-id` header of every attempt.
    Column("id", Uuid, primary_key=True),
    Column(
        "endpoint_id", Uuid, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    ),
    Column("event_id", Uuid, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status_code", Integer, nullable=True),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("locked_until", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # One delivery per event and endpoint: an event fanned out twice adds nothing.
    UniqueConstraint("event_id", "endpoint_id"),
    CheckConstraint("state IN ('pending', 'succeeded', 'failed')", name="known_state"),
    CheckConstraint("attempts >= 0", name="attempts_non_negative"),
    Index(None, "endpoint_id", "created_at"),
    # The relay's sweep looks for pending deliveries whose next attempt is due.
    Index(None, "state", "next_attempt_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "delivery_id",
        Uuid,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempted_at", UtcDateTime, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("response_body", Text, nullable=True),
    Column("error", Text, nullable=True),
    Index(None, "delivery_id", "attempted_at"),
)
