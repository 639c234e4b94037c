"""The proxy's token cache in Redis, shared by every API process (`REDIS_URL` set).

The core cannot import redis, so the adapter lives here; it implements the core's `AccessCache`.
Keys carry the configured namespace, so deployments and test runs can share one Redis.
"""

from __future__ import annotations

import redis

from zenzefi_core.adapters.cache import InProcessCache
from zenzefi_core.ports import AccessCache
from zenzefi_core.settings import Settings


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisAccessCache:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._client = client
        self._prefix = f"{namespace}:cache:"

    @classmethod
    def from_url(cls, url: str, namespace: str) -> RedisAccessCache:
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0)
        return cls(client, namespace)

    def get(self, key: str) -> str | None:
        value = self._client.get(self._prefix + key)
        return None if value is None else str(value)

    def add(self, key: str, value: str, ttl_seconds: float) -> bool:
        return bool(
            self._client.set(self._prefix + key, value, px=_milliseconds(ttl_seconds), nx=True)
        )

    def set(self, key: str, value: str, ttl_seconds: float) -> None:
        self._client.set(self._prefix + key, value, px=_milliseconds(ttl_seconds))

    def delete(self, key: str) -> None:
        self._client.delete(self._prefix + key)

    def close(self) -> None:
        self._client.close()


def access_cache_for(settings: Settings) -> AccessCache:
    """Redis when configured, else the embedded default's in-process cache."""
    if settings.redis.url:
        return RedisAccessCache.from_url(settings.redis.url, settings.redis.namespace)
    return InProcessCache()
