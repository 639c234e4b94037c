"""The one place the Dramatiq broker is built, for every process that enqueues or consumes.

With `ZENZEFI_REDIS_URL` set it is a `RedisBroker` shared by the API processes (which enqueue),
`zenzefi worker` (which consumes) and `zenzefi scheduler`. Without it, the embedded default, it
is Dramatiq's in-process `StubBroker`, consumed by a worker thread inside `zenzefi serve`.

`setup` is what the `dramatiq` command line loads in each worker process
(`dramatiq zenzefi_worker.broker:setup`, which `zenzefi worker` runs for you): it builds the
process's core and actors from the environment and makes their broker the global one.
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from zenzefi_core.bootstrap import Core
from zenzefi_core.settings import Settings

#: How long connecting to Redis may take before the broker counts as down: a commit should not
#: wait long for a broker the relay will reach later anyway.
REDIS_CONNECT_TIMEOUT_SECONDS = 2.0
REDIS_SOCKET_TIMEOUT_SECONDS = 10.0


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


def build_broker(settings: Settings) -> dramatiq.Broker:
    if settings.redis.url:
        return RedisBroker(  # type: ignore[no-untyped-call]  # Dramatiq leaves it unannotated
            client=redis_client(settings.redis.url),
            namespace=f"{settings.redis.namespace}:dramatiq",
        )
    return StubBroker()


def setup() -> None:
    """Entry point for the `dramatiq` command line: one worker process, wired from the
    environment. Its core lives as long as the process."""
    # Imported here: `app` imports this module for `build_broker`.
    from zenzefi_worker.app import WorkerApp

    settings = Settings()
    if not settings.redis.url:
        raise SystemExit(
            "zenzefi worker needs ZENZEFI_REDIS_URL; without Redis, `zenzefi serve` runs the "
            "worker in its own process"
        )
    app = WorkerApp(Core.from_settings(settings), build_broker(settings))
    dramatiq.set_broker(app.broker)
