"""`zenzefi serve --workers N`: N API processes answering on one port, the worker only once.

The supervisor (`zenzefi_api.supervisor`) starts the API processes, each a fresh interpreter
that builds its app with `api_process_app` and listens on a socket of its own on the shared
port. It restarts a process that dies, replaces them one by one on SIGHUP (each new one serving
before the old one stops), and on SIGTERM or SIGINT lets each finish its running requests.

Where the events go depends on the broker:

- With Redis every API process hands its events to the Redis broker right after commit, as a
  single `zenzefi serve` does; `zenzefi worker` and `zenzefi scheduler` consume them.
- On the embedded default the broker lives in memory, so a message enqueued by an API process
  would reach only that process's queues. The worker threads and the scheduler therefore run
  once, in the supervisor, and the API processes hand their events to nobody: they stay in the
  outbox, which the supervisor's relay empties every `EMBEDDED_RELAY_SECONDS` (instead of the
  usual `ZENZEFI_SCHEDULER_OUTBOX_RELAY_SECONDS`). An event committed in any process is
  delivered, a second later at most.

Without Redis each API process also keeps its own proxy token cache, which a ban, a revocation
or a deactivation made through another process cannot clear. Its entries therefore live at most
`EMBEDDED_CACHE_SECONDS` there (instead of `ZENZEFI_PROXY_CACHE_SECONDS`), the bound a local
copy of a Redis entry has too: whichever process took the ban, every proxy refuses the token
within that time.
"""

from __future__ import annotations

import gc

from litestar import Litestar

from zenzefi_api.access_log import configure_logging
from zenzefi_api.app import create_app
from zenzefi_api.context import api_context
from zenzefi_core.settings import Settings

#: How often the supervisor's relay hands the API processes' events over on the embedded default.
EMBEDDED_RELAY_SECONDS = 1.0
#: The longest an API process under the supervisor keeps a proxy token cache entry of its own
#: without Redis (where nothing tells it of a ban made through another process).
EMBEDDED_CACHE_SECONDS = 5.0
#: The import string uvicorn's processes build their app from.
APP_FACTORY = "zenzefi_api.serving:api_process_app"


def settle_heap() -> None:
    """Move everything alive once the app has started (modules, the app, its routes, the
    database's metadata: about 175,000 objects) out of the garbage collector's reach.

    CPython's full collection walks every tracked object. Under concurrent requests, each
    request's short-lived objects outlive the young collections (they are still in flight when
    those run), reach the oldest generation and trigger a full collection every few seconds,
    each walking the whole heap with the event loop stopped (100-300 ms on a busy 2-core
    machine): the proxy's p99 at 64 connections (docs/performance.md). Frozen objects are
    never walked, so those collections take under a millisecond. What is frozen is never
    collected: only what lives as long as the process goes there, garbage collected first.
    An `on_startup` hook of served apps."""
    gc.collect()
    gc.freeze()


def api_process_app() -> Litestar:
    """The app of one API process under the supervisor, wired from the environment.

    With Redis it hands its events to the broker after each commit; on the embedded default it
    leaves them to the supervisor's relay (see the module's docstring)."""
    configure_logging()
    settings = Settings()
    if not settings.redis.url and settings.proxy.cache_seconds > EMBEDDED_CACHE_SECONDS:
        proxy = settings.proxy.model_copy(update={"cache_seconds": EMBEDDED_CACHE_SECONDS})
        settings = settings.model_copy(update={"proxy": proxy})
    app = create_app(settings)
    if settings.redis.url:
        from zenzefi_worker.app import WorkerApp
        from zenzefi_worker.broker import build_broker

        worker = WorkerApp(api_context(app).core, build_broker(settings))
        app.on_shutdown.append(worker.close)
    app.on_startup.append(settle_heap)
    return app
