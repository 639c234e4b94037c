"""The worker inside another process: `zenzefi serve` on the embedded default, and
`zenzefi jobs run` without Redis.

Dramatiq's in-process broker keeps its queues in memory, so messages still waiting when the
process ends are gone. What that can cost is bounded: emails already in the notification log
are sent again by the relay's sweep, and stopping cleanly first waits (briefly) for the queues
to empty. An event whose message was still waiting when the process was killed sends no email;
use Redis, whose queues outlive the processes, where that matters.
"""

from __future__ import annotations

import logging
import time

import dramatiq
from dramatiq.brokers.stub import StubBroker

from zenzefi_worker.app import QUEUES, WorkerApp
from zenzefi_worker.scheduler import LocalCoordination, Scheduler

logger = logging.getLogger("zenzefi.worker")

#: How often idle worker threads look for work, in milliseconds; short, so stopping is quick.
WORKER_TIMEOUT_MS = 100


def drain(broker: dramatiq.Broker, timeout_seconds: float) -> bool:
    """Wait until the in-process queues are empty and nothing is being processed, including
    the messages that processing enqueued. Delayed retries are not waited for. True when empty
    within the timeout."""
    if not isinstance(broker, StubBroker):
        return True
    deadline = time.monotonic() + timeout_seconds
    quiet = 0
    while time.monotonic() < deadline:
        busy = any(broker.queues[name].unfinished_tasks for name in QUEUES if name in broker.queues)
        # Twice idle in a row: a message that just finished may have enqueued another.
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            return True
        time.sleep(0.02)
    return False


class EmbeddedWorker:
    """Worker threads, and optionally the scheduler, running beside the API in one process."""

    def __init__(self, app: WorkerApp, *, with_scheduler: bool = True) -> None:
        self.app = app
        settings = app.core.settings
        self._worker = dramatiq.Worker(
            app.broker, worker_threads=settings.worker.threads, worker_timeout=WORKER_TIMEOUT_MS
        )
        self.scheduler = (
            Scheduler(
                list(app.jobs.values()),
                LocalCoordination(),
                lock_ttl_seconds=settings.scheduler.lock_ttl_seconds,
            )
            if with_scheduler
            else None
        )

    def start(self) -> None:
        self._worker.start()
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop the scheduler, let the queues empty for up to `drain_seconds`, stop the worker."""
        if self.scheduler is not None:
            self.scheduler.stop()
        if not drain(self.app.broker, drain_seconds):
            logger.warning("stopping with messages still queued; overdue emails are re-sent later")
        self._worker.stop(timeout=int(drain_seconds * 1000))
