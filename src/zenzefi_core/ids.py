"""Identifiers: UUIDv7, so that ids sort in creation order and ledger pages are stable."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last = 0


def new_id() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), strictly increasing within this process."""
    global _last
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        # 48 bits of milliseconds, then 12 bits of a counter in rand_a keep ids monotonic when
        # several are made in the same millisecond.
        candidate = now_ms << 12
        if candidate <= _last:
            candidate = _last + 1
        _last = candidate
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (candidate >> 12) << 80 | 0x7 << 76 | (candidate & 0xFFF) << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)
