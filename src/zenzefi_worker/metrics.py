"""Prometheus metrics of the worker: actor runs, webhook deliveries and emails by outcome.

Where they are served:
- `zenzefi worker` runs several Dramatiq processes. They share their counts through
  prometheus_client's multiprocess mode: the command makes a fresh directory for the
  counters' files before any process starts (`zenzefi_worker.multiprocess`), and one extra
  process, forked by Dramatiq from the `forks` of `ActorMetrics`, serves the sum of them all
  on `METRICS_WORKER_HOST:METRICS_WORKER_PORT` (`serve_worker_metrics`). One target per
  command, however many processes it runs.
- On the embedded default the worker threads run inside `zenzefi serve`, and these metrics
  appear on the API's own `GET /metrics`.

Dramatiq ships a Prometheus middleware, but it takes its port and its files' directory from
environment variables read when it is imported, never clears that directory (a shared one under
/tmp), counts only under the `dramatiq` command line (nothing on the embedded worker) and
cannot require a token. This middleware counts the same things in both places.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dramatiq
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from zenzefi_core.domain.notifications import NotificationState
from zenzefi_core.domain.webhooks import DeliveryState
from zenzefi_core.security import bearer_matches
from zenzefi_core.services.webhooks import WebhookOutcome
from zenzefi_core.settings import MetricsSettings
from zenzefi_worker.multiprocess import MULTIPROC_ENV

logger = logging.getLogger("zenzefi.worker")

# A `_created` timestamp beside every counter only doubles the page; nothing here reads it.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

MESSAGES = Counter(
    "zenzefi_worker_messages", "Messages an actor finished, failed or not.", ["queue", "actor"]
)
FAILURES = Counter(
    "zenzefi_worker_message_failures",
    "Messages whose actor raised (a planned retry of an email or webhook, which the delivery "
    "counters show, is not a failure).",
    ["queue", "actor"],
)
DURATION = Histogram(
    "zenzefi_worker_message_duration_seconds",
    "How long an actor ran on a message.",
    ["queue", "actor"],
    buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
)
WEBHOOK_OUTCOMES = ("succeeded", "retrying", "failed", "busy", "skipped")
WEBHOOK_DELIVERIES = Counter(
    "zenzefi_webhook_deliveries",
    "Webhook delivery attempts: succeeded (2xx), retrying (failed, tried again later), failed "
    "(the last attempt failed), busy (every slot of the endpoint taken, waits) or skipped "
    "(nothing to do: done already, not due, or held by another worker).",
    ["outcome"],
)
EMAIL_OUTCOMES = ("sent", "retrying", "failed", "skipped")
EMAILS = Counter(
    "zenzefi_emails",
    "Email attempts: sent, retrying (the mail server failed, tried again later), failed (for "
    "good) or skipped (nothing to do: sent already, not due, or held by another worker).",
    ["outcome"],
)
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_DELIVERIES.labels(_outcome)
for _outcome in EMAIL_OUTCOMES:
    EMAILS.labels(_outcome)


def webhook_outcome(outcome: WebhookOutcome) -> str:
    if outcome.state is None:
        return "busy" if outcome.retry_in is not None else "skipped"
    return {
        DeliveryState.SUCCEEDED: "succeeded",
        DeliveryState.PENDING: "retrying",
        DeliveryState.FAILED: "failed",
    }[outcome.state]


def email_outcome(state: NotificationState | None) -> str:
    if state is None:
        return "skipped"
    return {
        NotificationState.SENT: "sent",
        NotificationState.QUEUED: "retrying",
        NotificationState.FAILED: "failed",
    }[state]


class ActorMetrics(dramatiq.Middleware):
    """Counts and times every message an actor processes, on any broker and worker."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def forks(self) -> list[Callable[[], int]]:
        # Only `zenzefi worker` prepares the shared counters; the exposition process needs them.
        return [serve_worker_metrics] if os.environ.get(MULTIPROC_ENV) else []

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            started = self._started.pop(message.message_id, None)
        labels = (message.queue_name, message.actor_name)
        if started is not None:
            DURATION.labels(*labels).observe(time.perf_counter() - started)
        MESSAGES.labels(*labels).inc()
        if exception is not None and not isinstance(exception, dramatiq.Retry):
            FAILURES.labels(*labels).inc()

    after_skip_message = after_process_message


def _handler(token: str | None) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in ("/", "/metrics"):
                self._answer(404, b"not found\n", "text/plain")
                return
            if token is not None and not bearer_matches(self.headers.get("authorization"), token):
                self._answer(401, b"a valid metrics token is required\n", "text/plain")
                return
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return MetricsHandler


def serve_worker_metrics() -> int:
    """The exposition process Dramatiq forks beside the worker processes: serves the sum of
    their counters until Dramatiq stops it. Port 0 turns it off."""
    settings = MetricsSettings()
    if not settings.worker_port:
        return 0
    token = None if settings.token is None else settings.token.get_secret_value()
    try:
        server = ThreadingHTTPServer((settings.worker_host, settings.worker_port), _handler(token))
    except OSError as error:
        logger.error(
            "worker metrics: cannot listen on %s:%s: %s",
            settings.worker_host,
            settings.worker_port,
            error,
        )
        return 1
    logger.info(
        "worker metrics on http://%s:%s/metrics", settings.worker_host, settings.worker_port
    )
    with server:
        server.serve_forever()
    return 0
