"""Webhook secrets, signatures and URL safety: pure functions, shared by sender and receivers.

Signatures follow the Standard Webhooks specification: `webhook-signature` carries
`v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is the base64 part of
the `whsec_` secret; during a rotation each valid secret adds one space-separated signature.
`X-Webhook-Signature` is the product documents' older form, the hex HMAC-SHA256 of the body with
the newest secret. `verify_webhook` is what a service consuming our webhooks calls.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from zenzefi_core.errors import InvalidInput, InvalidSignature, InvalidWebhookUrl

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
#: Random bytes in a new secret (the specification allows 24 to 64).
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
#: How old (seconds) a message may be before a receiver refuses it as a possible replay.
DEFAULT_TOLERANCE_SECONDS = 300

#: Every event an endpoint may subscribe to (API.md, "Webhooks").
WEBHOOK_EVENTS: tuple[str, ...] = (
    "token.purchased",
    "token.activated",
    "token.expiring",
    "token.expired",
    "token.revoked",
    "bundle.purchased",
    "balance.deposited",
    "balance.low",
    "referral.bonus",
    "webhook.test",
)
TEST_EVENT = "webhook.test"
#: The outbox event of a manual redelivery (not a webhook event: never sent to a receiver).
REDELIVERY_EVENT = "webhook.redelivery"


def generate_secret(size: int = SECRET_BYTES) -> str:
    if not MIN_SECRET_BYTES <= size <= MAX_SECRET_BYTES:
        raise ValueError(f"a secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret: its base64 part, decoded."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as error:
        raise ValueError("a webhook secret's key is not base64") from error


def _v1(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def body_signature(secret: str, body: bytes) -> str:
    """The product documents' `X-Webhook-Signature`: hex HMAC-SHA256 of the body."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def sign_webhook(
    secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The signature headers of one attempt; `secrets_` is newest first (one, or two while a
    rotated secret is still honoured)."""
    if not secrets_:
        raise ValueError("at least one secret signs a webhook")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(_v1(s, msg_id, timestamp, body) for s in secrets_),
        "X-Webhook-Signature": body_signature(secrets_[0], body),
    }


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> None:
    """Check a received webhook; raises `InvalidSignature` unless one of its `v1` signatures
    matches `secret` and its timestamp is within `tolerance` seconds of now."""
    lower = {key.lower(): value for key, value in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise InvalidSignature("Missing webhook headers")
    try:
        timestamp = int(stamp)
    except ValueError as error:
        raise InvalidSignature("Invalid webhook timestamp") from error
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature("Webhook timestamp outside the tolerance")
    try:
        expected = _v1(secret, msg_id, timestamp, body)
    except ValueError as error:
        raise InvalidSignature("Invalid webhook secret") from error
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return
    raise InvalidSignature("No matching webhook signature")


class Resolver(Protocol):
    def resolve(self, host: str) -> list[str]:
        """Every address the host name resolves to; an empty list when it resolves to none."""
        ...


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
    )


def check_webhook_url(url: str, resolver: Resolver, *, allow_private: bool) -> str:
    """The URL, if it may receive webhooks: http(s), with a host that (unless private addresses
    are allowed) resolves only to public addresses. Raises `InvalidWebhookUrl` otherwise."""
    if len(url) > 2000:
        raise InvalidWebhookUrl("Webhook URL is too long")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhookUrl("Webhook URL must be an http or https URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as error:
        raise InvalidWebhookUrl("Webhook URL has an invalid port") from error
    if allow_private:
        return url
    host = parts.hostname
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolver.resolve(host)
    if not addresses:
        raise InvalidWebhookUrl("Webhook URL host does not resolve")
    if not all(_public(address) for address in addresses):
        raise InvalidWebhookUrl("Webhook URL resolves to a private or reserved address")
    return url


def check_events(events: Iterable[str]) -> tuple[str, ...]:
    """The events, deduplicated in the documented order; raises `InvalidInput` on an unknown
    name or an empty list."""
    wanted = set(events)
    unknown = sorted(wanted - set(WEBHOOK_EVENTS))
    if unknown:
        raise InvalidInput(f"Unknown webhook event(s): {', '.join(unknown)}")
    if not wanted:
        raise InvalidInput("A webhook subscribes to at least one event")
    return tuple(event for event in WEBHOOK_EVENTS if event in wanted)


class SecretCipher:
    """Encrypts webhook secrets at rest (Fernet: AES-128-CBC with HMAC-SHA256), with a key
    derived from the server's secret key by HKDF, so the database alone does not reveal them."""

    def __init__(self, server_key: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"zenzefi-webhook-secrets-v1"
        ).derive(server_key.encode("utf-8"))
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
