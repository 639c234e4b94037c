"""The in-process `AccessCache` of the embedded default: a dict with expiry, behind a lock.

Exact for one process. Several API processes each keep their own copy, so a deactivation
reaches only the process that made it: run Redis (`zenzefi_api.cache.RedisAccessCache`) as
soon as there is more than one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class InProcessCache:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= self._clock():
            with self._lock:
                if self._entries.get(key) == entry:
                    del self._entries[key]
            return None
        return value

    def add(self, key: str, value: str, ttl_seconds: float) -> bool:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] > now:
                return False
            self._store(key, value, now + ttl_seconds, now)
            return True

    def set(self, key: str, value: str, ttl_seconds: float) -> None:
        now = self._clock()
        with self._lock:
            self._store(key, value, now + ttl_seconds, now)

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def _store(self, key: str, value: str, expires: float, now: float) -> None:
        if len(self._entries) >= self._max_entries and key not in self._entries:
            # Bounded memory: drop what has expired, and if that is not enough, everything
            # (a cache may always forget; the database still answers).
            self._entries = {k: e for k, e in self._entries.items() if e[1] > now}
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
        self._entries[key] = (value, expires)
