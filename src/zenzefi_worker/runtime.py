"""The worker's processes, as the `zenzefi` command runs them.

- `alongside_api`: what `zenzefi serve` runs beside the API. Always the broker, so that the API
  hands its events over right after each commit; on the embedded default also the worker
  threads and the scheduler.
- `run_workers`: `zenzefi worker`, Dramatiq's own worker processes (Redis only).
- `run_scheduler`: `zenzefi scheduler`, the periodic jobs under the cluster-wide lock (Redis only).
- `run_job_once`: `zenzefi jobs run NAME`.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from dramatiq import cli as dramatiq_cli
from dramatiq.brokers.stub import StubBroker

from zenzefi_core.bootstrap import Core
from zenzefi_worker.app import WorkerApp
from zenzefi_worker.broker import build_broker, redis_client
from zenzefi_worker.embedded import EmbeddedWorker
from zenzefi_worker.scheduler import RedisCoordination, Scheduler

#: What `zenzefi worker` hands to the `dramatiq` command: the module and function that wire one
#: worker process from the environment.
DRAMATIQ_ENTRY = "zenzefi_worker.broker:setup"
#: How long `zenzefi jobs run` on the embedded default waits for the job's messages.
JOB_DRAIN_SECONDS = 60.0


class NeedsRedis(RuntimeError):
    """A command that coordinates several processes, run without `ZENZEFI_REDIS_URL`."""


def _require_redis(core: Core, command: str) -> str:
    url = core.settings.redis.url
    if not url:
        raise NeedsRedis(
            f"`zenzefi {command}` needs ZENZEFI_REDIS_URL; without Redis, `zenzefi serve` "
            "runs the worker and the scheduler in its own process"
        )
    return url


@contextmanager
def alongside_api(core: Core, *, relay_seconds: float | None = None) -> Iterator[WorkerApp]:
    """Wire the broker into `core` for as long as the API serves, with the worker threads and
    the scheduler too on the embedded default. The database must be migrated first: the
    scheduler's first jobs run at once. `relay_seconds` replaces the outbox relay's interval
    (`zenzefi serve --workers N` on the embedded default, whose API processes leave every
    event to the relay)."""
    app = WorkerApp(core, build_broker(core.settings))
    if relay_seconds is not None:
        relay = app.jobs["outbox-relay"]
        app.jobs[relay.name] = dataclasses.replace(
            relay, interval_seconds=relay_seconds, log_level=logging.DEBUG
        )
    embedded = EmbeddedWorker(app) if isinstance(app.broker, StubBroker) else None
    if embedded is not None:
        embedded.start()
    try:
        yield app
    finally:
        if embedded is not None:
            embedded.stop()
        app.close()


def run_workers(core: Core, options: Sequence[str]) -> int:
    """Dramatiq's worker processes; `options` are the `dramatiq` command's own."""
    _require_redis(core, "worker")
    # Dramatiq's command line is unannotated.
    parser = dramatiq_cli.make_argument_parser()  # type: ignore[no-untyped-call]
    arguments = parser.parse_args([DRAMATIQ_ENTRY, *options])
    return int(dramatiq_cli.main(arguments))  # type: ignore[no-untyped-call]


def run_scheduler(core: Core, *, tick_seconds: float = 1.0) -> int:
    """Run the periodic jobs, active only while holding the lock, until SIGINT or SIGTERM."""
    url = _require_redis(core, "scheduler")
    settings = core.settings
    app = WorkerApp(core, build_broker(settings))
    client = redis_client(url)
    scheduler = Scheduler(
        list(app.jobs.values()),
        RedisCoordination(
            client, settings.redis.namespace, lock_ttl_seconds=settings.scheduler.lock_ttl_seconds
        ),
        lock_ttl_seconds=settings.scheduler.lock_ttl_seconds,
        tick_seconds=tick_seconds,
    )

    def stop(_signal: int, _frame: FrameType | None) -> None:
        scheduler.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        scheduler.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        client.close()
        app.close()
    return 0


def run_job_once(core: Core, name: str) -> str:
    """Run one job now and return its summary. On the embedded default a worker runs in this
    process until the job's messages are handled, since nobody else would handle them."""
    app = WorkerApp(core, build_broker(core.settings))
    if name not in app.jobs:
        app.close()
        raise KeyError(name)
    embedded = (
        EmbeddedWorker(app, with_scheduler=False) if isinstance(app.broker, StubBroker) else None
    )
    if embedded is not None:
        embedded.start()
    try:
        return app.run_job(name)
    finally:
        if embedded is not None:
            embedded.stop(drain_seconds=JOB_DRAIN_SECONDS)
        app.close()
