"""A payment provider that signs its callbacks with HMAC-SHA256 over timestamp and raw body.

The provider sends `X-Payment-Timestamp` (Unix seconds) and `X-Payment-Signature: v1=<hex>`,
where the hex is HMAC-SHA256(secret, f"{timestamp}." + body). A callback is accepted only when
the signature matches (compared in constant time) and the timestamp is within the tolerance, so a
captured callback cannot be replayed later; replays inside the window are stopped by the event id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from uuid import UUID

from zenzefi_core.domain import PaymentStatus
from zenzefi_core.errors import InvalidAmount, InvalidSignature, PaymentMismatch
from zenzefi_core.money import Sign, format_amount, parse_amount
from zenzefi_core.ports import Checkout, Clock, ProviderCallback

TIMESTAMP_HEADER = "x-payment-timestamp"
SIGNATURE_HEADER = "x-payment-signature"
FINAL_STATUSES = {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELLED}


class HmacPaymentProvider:
    def __init__(
        self,
        *,
        secret: str,
        checkout_url: str,
        clock: Clock,
        tolerance_seconds: int = 300,
        name: str = "hmac",
    ) -> None:
        if not secret:
            raise ValueError("the payment provider needs a signing secret")
        self._secret = secret.encode("utf-8")
        self._checkout_url = checkout_url.rstrip("/")
        self._clock = clock
        self._tolerance = tolerance_seconds
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def start_checkout(self, payment_id: UUID, amount_rub: Decimal, description: str) -> Checkout:
        return Checkout(payment_url=f"{self._checkout_url}/{payment_id}")

    def signature(self, timestamp: int, body: bytes) -> str:
        message = f"{timestamp}.".encode() + body
        return "v1=" + hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers the provider sends with `body`: for simulators, tests and dev mode."""
        moment = int(self._clock.now().timestamp()) if timestamp is None else timestamp
        return {
            "X-Payment-Timestamp": str(moment),
            "X-Payment-Signature": self.signature(moment, body),
        }

    def verify_callback(self, headers: Mapping[str, str], body: bytes) -> ProviderCallback:
        lowered = {key.lower(): value for key, value in headers.items()}
        raw_timestamp = lowered.get(TIMESTAMP_HEADER, "")
        given = lowered.get(SIGNATURE_HEADER, "")
        if not raw_timestamp.isdigit() or not given:
            raise InvalidSignature("Missing or malformed payment signature headers")
        timestamp = int(raw_timestamp)
        if not hmac.compare_digest(self.signature(timestamp, body), given):
            raise InvalidSignature("Invalid payment signature")
        if abs(self._clock.now().timestamp() - timestamp) > self._tolerance:
            raise InvalidSignature("Payment callback timestamp is outside the allowed window")
        return _parse(body)


def _parse(body: bytes) -> ProviderCallback:
    try:
        data: Any = json.loads(body)
        if not isinstance(data, dict):
            raise TypeError("body is not an object")
        event_id = data["event_id"]
        if not isinstance(event_id, str) or not 1 <= len(event_id) <= 128:
            raise ValueError("event_id must be a string of 1 to 128 characters")
        status = PaymentStatus(data["status"])
        payment_id = UUID(str(data["payment_id"]))
        amount = data.get("amount_rub")
        amount_rub = None if amount is None else parse_amount(amount, sign=Sign.POSITIVE)
    except (KeyError, TypeError, ValueError, InvalidAmount) as error:
        raise PaymentMismatch(f"Unreadable payment callback: {error}") from None
    if status not in FINAL_STATUSES:
        raise PaymentMismatch(f"Payment callback status must be final, not {status}")
    return ProviderCallback(
        event_id=event_id, payment_id=payment_id, status=status, amount_rub=amount_rub
    )


def callback_body(
    *, event_id: str, payment_id: UUID, status: PaymentStatus, amount_rub: Decimal | None = None
) -> bytes:
    """The JSON body of a provider callback, as the provider would send it."""
    data: dict[str, str] = {
        "event_id": event_id,
        "payment_id": str(payment_id),
        "status": status.value,
    }
    if amount_rub is not None:
        data["amount_rub"] = format_amount(amount_rub)
    return json.dumps(data).encode("utf-8")
