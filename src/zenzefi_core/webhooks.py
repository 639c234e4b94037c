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
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

from zenzefi_core.errors import InvalidInput, InvalidSignature, InvalidWebhookUrl
from zenzefi_core.security import SecretCipher as SecretCipher  # where callers have found it

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
        """Every address the host name resolves to, in the order to try them; an empty list
        when it resolves to none."""
        ...


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


#: IPv4 ranges no webhook may reach (RFC 6890 and its successors): "this network", private,
#: shared address space (carrier-grade NAT), loopback, link-local, IETF protocol assignments,
#: documentation, the 6to4 relay anycast, benchmarking, multicast, reserved and broadcast.
SPECIAL_IPV4 = _networks(
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
#: The only IPv6 unicast space routed on the internet; everything outside it (unspecified,
#: loopback, IPv4-compatible `::a.b.c.d`, discard, NAT64 local-use `64:ff9b:1::/48`, unique
#: local `fc00::/7`, link-local, site-local, multicast, ...) is refused, but for the two forms
#: below that carry an IPv4 address.
GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
#: Inside 2000::/3 but not a receiver: IETF protocol assignments (Teredo `2001::/32`, whose
#: IPv4 client address is hidden, benchmarking, ORCHID) and documentation.
SPECIAL_IPV6 = _networks("2001::/23", "2001:db8::/32", "3fff::/20")
#: IPv6 forms that wrap an IPv4 address: allowed only when the IPv4 address is.
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def _public_ipv4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not any(ip in network for network in SPECIAL_IPV4)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (well-known prefix) or 6to4 address leads to."""
    if ip in IPV4_MAPPED or ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip in SIX_TO_FOUR:
        return ip.sixtofour
    return None


def is_public_address(address: str) -> bool:
    """Whether a webhook may connect to this address: a globally routed unicast address, in
    IPv4 or IPv6 form. An IPv6 address that wraps an IPv4 one (IPv4-mapped, NAT64, 6to4)
    passes only if the IPv4 address would; one with a zone (`%eth0`) never does."""
    if "%" in address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return _public_ipv4(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return _public_ipv4(embedded)
    return ip in GLOBAL_UNICAST_IPV6 and not any(ip in network for network in SPECIAL_IPV6)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where one attempt goes: the URL (its host name stays the HTTP `Host` and the TLS name)
    and the addresses that passed the check, the only ones the sender may connect to."""

    url: str
    addresses: tuple[str, ...]


def _checked_parts(url: str) -> SplitResult:
    if len(url) > 2000:
        raise InvalidWebhookUrl("Webhook URL is too long")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhookUrl("Webhook URL must be an http or https URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as error:
        raise InvalidWebhookUrl("Webhook URL has an invalid port") from error
    return parts


def webhook_target(url: str, resolver: Resolver, *, allow_private: bool) -> WebhookTarget:
    """Resolve the URL's host once and check every address it gives, not only the first: the
    sender then connects to these addresses and nowhere else, so a name that resolves
    differently a moment later (DNS rebinding) cannot lead the request inside. Raises
    `InvalidWebhookUrl` when the host does not resolve or (unless private addresses are
    allowed) any address is not public."""
    host = _checked_parts(url).hostname
    assert host is not None  # checked above
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolver.resolve(host)
    if not addresses:
        raise InvalidWebhookUrl("Webhook URL host does not resolve")
    if not allow_private and not all(is_public_address(a) for a in addresses):
        raise InvalidWebhookUrl("Webhook URL resolves to a private or reserved address")
    return WebhookTarget(url, tuple(_connectable(a) for a in addresses))


def _connectable(address: str) -> str:
    """An IPv4-mapped address is connected to as the IPv4 address it was checked as."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return address


def check_webhook_url(url: str, resolver: Resolver, *, allow_private: bool) -> str:
    """The URL, if it may receive webhooks: http(s), with a host that (unless private addresses
    are allowed) resolves only to public addresses. Raises `InvalidWebhookUrl` otherwise."""
    _checked_parts(url)
    if not allow_private:
        webhook_target(url, resolver, allow_private=False)
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
