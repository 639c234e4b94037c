"""The HTTP side of webhook delivery: one POST per attempt, with httpx.

Redirects are not followed (a receiver could otherwise bounce us to an internal address),
the whole exchange must finish within the timeout, and at most `max_bytes` of the answer
are read, however much the receiver sends.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx
import redis

from zenzefi_core.errors import WebhookSendFailed
from zenzefi_core.settings import WebhookSettings


class HttpxWebhookSender:
    """The core's `WebhookSender`; one connection pool for the process, used by every thread."""

    def __init__(self, settings: WebhookSettings) -> None:
        self._timeout = settings.timeout_seconds
        self._max_bytes = settings.max_response_bytes
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(self._timeout),
            headers={"user-agent": "Zenzefi-Webhooks/1"},
            # Kept-alive connections go to an address that was checked when they opened.
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
        )

    def post(self, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        # httpx's timeouts bound each wait; this bounds a receiver trickling its answer.
        deadline = time.monotonic() + self._timeout
        try:
            with self._client.stream("POST", url, headers=dict(headers), content=body) as response:
                read = bytearray()
                for chunk in response.iter_bytes():
                    read += chunk
                    if len(read) >= self._max_bytes:
                        break
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer took too long")
                return response.status_code, bytes(read[: self._max_bytes])
        except httpx.TimeoutException as error:
            raise WebhookSendFailed(f"no answer within {self._timeout:g} s") from error
        except httpx.HTTPError as error:
            raise WebhookSendFailed(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        self._client.close()


class RedisSlotCache:
    """The core's `AccessCache` on the broker's Redis client, for the per-endpoint delivery
    slots: with Redis, every worker process counts against the same slots. (The API's own
    Redis cache lives in `zenzefi_api`, which the worker does not import.)"""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._client = client
        self._prefix = f"{namespace}:webhooks:"

    def get(self, key: str) -> str | None:
        value = self._client.get(self._prefix + key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def add(self, key: str, value: str, ttl_seconds: float) -> bool:
        ttl = max(1, int(ttl_seconds * 1000))
        return bool(self._client.set(self._prefix + key, value, px=ttl, nx=True))

    def set(self, key: str, value: str, ttl_seconds: float) -> None:
        self._client.set(self._prefix + key, value, px=max(1, int(ttl_seconds * 1000)))

    def delete(self, key: str) -> None:
        self._client.delete(self._prefix + key)
