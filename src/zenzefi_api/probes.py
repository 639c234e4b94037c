"""Asking a blocking dependency a question without letting it hold a request hostage."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


async def within(timeout: float, call: Callable[[], T]) -> T | None:
    """`call()` in a worker thread, or None when it has not answered within `timeout` seconds.

    The thread is abandoned, not killed: a hung database or Redis cannot be interrupted, but
    the request that asked moves on (health checks and scrapes must answer on time)."""
    with anyio.move_on_after(timeout):
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    return None
