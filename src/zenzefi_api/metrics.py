"""Prometheus metrics of one API process, and `GET /metrics` to scrape them.

Every API process counts for itself and is scraped as a target of its own (Prometheus adds the
`instance` label and `sum()` adds the processes up), so no process shares files or locks with
another; `zenzefi serve` runs one process, and a deployment starts as many as it needs.

Three kinds of numbers:
- HTTP requests by route template (`/api/v1/tokens/{token_id}`, never the raw path, so the
  series stay few), from `HttpMetrics`.
- What this process did, counted where the outcome is known: proxied requests, their bytes and
  latency and the token checks in `zenzefi_api.proxy`; purchases, revenue, referral bonuses and
  ledger entries from the ledger entries each unit of work committed (`count_ledger`, the
  core's ledger observer), so a rolled-back purchase or an idempotent replay counts nothing.
- What the whole system looks like (outbox backlog, open sessions, running tokens), read from
  the database at scrape time with indexed aggregates. When the database does not answer within
  `HEALTH_TIMEOUT_SECONDS`, those are left out and `zenzefi_database_up` is 0: a scrape never
  fails because the database is down.

On the embedded default the worker runs in this process too, and its metrics (actor runs,
webhook deliveries, emails; `zenzefi_worker.metrics`) appear here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zenzefi_api.context import api_context
from zenzefi_api.probes import within
from zenzefi_core.domain import LedgerEntry, TransactionType
from zenzefi_core.domain.tokens import BUNDLE_PURCHASE_REFERENCE, TOKEN_REFERENCE
from zenzefi_core.security import bearer_matches
from zenzefi_core.services.operations import ReadSystemGauges, SystemGauges

logger = logging.getLogger("zenzefi.metrics")

# A `_created` timestamp beside every counter only doubles the page; nothing here reads it.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

#: Route handlers with this key in their `opt` are left out of the HTTP metrics.
EXCLUDE_OPT_KEY = "exclude_from_metrics"

#: From a few milliseconds to the upstream's default read timeout, for both latency histograms.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_LABELS = ["method", "path", "status_code"]
HTTP_REQUESTS = Counter(
    "zenzefi_http_requests",
    "Requests answered, by method, route template (`path`) and status code.",
    HTTP_LABELS,
)
HTTP_DURATION = Histogram(
    "zenzefi_http_request_duration_seconds",
    "From a request's arrival at its route to the last byte of its answer.",
    HTTP_LABELS,
    buckets=SECONDS_BUCKETS,
)


class HttpMetrics:
    """Route middleware: counts and times every request by method, route template and status.

    Litestar's own Prometheus middleware records the same, but added some 33 microseconds to a
    trivial route that Litestar itself serves in 25 (it builds a `Request`, label dictionaries
    and an in-progress gauge each time); the proxy's hot path should not pay that. This keeps
    one pair of labelled children per (method, template, status) and adds about 6.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        if scope["type"] != ScopeType.HTTP or (
            handler is not None and handler.opt.get(EXCLUDE_OPT_KEY)
        ):
            await self._app(scope, receive, send)
            return
        method, template = scope["method"], scope.get("path_template", scope["path"])
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_status)
        finally:
            key = (method, template, status)
            series = self._series.get(key)
            if series is None:
                labels = (key[0], key[1], str(status))
                series = (HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels))
                self._series[key] = series
            series[0].inc()
            series[1].observe(time.perf_counter() - started)


#: What became of a forwarded request: the upstream's status class, or why there was none.
PROXY_RESULTS = ("2xx", "3xx", "4xx", "5xx", "unreachable", "timeout")
PROXY_REQUESTS = Counter(
    "zenzefi_proxy_requests",
    "Requests forwarded to the upstream, by the upstream's status class or the failure.",
    ["result"],
)
PROXY_LATENCY = Histogram(
    "zenzefi_proxy_upstream_latency_seconds",
    "From a checked proxy request to the upstream's response headers (or its failure); the "
    "body's streaming time is not included, so large downloads do not skew it.",
    buckets=SECONDS_BUCKETS,
)
PROXY_BYTES = Counter(
    "zenzefi_proxy_bytes",
    "Body bytes through the proxy: `in` from the clients to the upstream, `out` back.",
    ["direction"],
)
#: How a proxied request's access token was checked.
TOKEN_OUTCOMES = ("cache_hit", "cache_miss", "invalid")
TOKEN_CHECKS = Counter(
    "zenzefi_proxy_token_checks",
    "Access token checks on proxied requests: answered by the cache, read from the database "
    "(a token's first request, a new device, an expired device hold), or refused (401).",
    ["outcome"],
)
RATE_LIMIT_FALLBACKS = Counter(
    "zenzefi_rate_limit_fallbacks",
    "Rate-limit decisions (`bucket`: proxy, login, register) made in this process alone "
    "because Redis did not answer: while it grows, each API process counts on its own.",
    ["bucket"],
)

#: The purchase kinds, by the `reference_type` of the ledger entry that paid.
PURCHASE_KINDS = {TOKEN_REFERENCE: "token", BUNDLE_PURCHASE_REFERENCE: "bundle"}
PURCHASES = Counter(
    "zenzefi_purchases", "Committed purchases of single tokens and of bundles.", ["kind"]
)
REVENUE = Counter(
    "zenzefi_purchase_revenue_znc",
    "ZNC paid for committed purchases (before refunds, which count as ledger entries).",
    ["kind"],
)
REFERRAL_BONUSES = Counter("zenzefi_referral_bonuses", "Referral bonuses paid.")
REFERRAL_BONUS_AMOUNT = Counter("zenzefi_referral_bonus_znc", "ZNC paid as referral bonuses.")
LEDGER_ENTRIES = Counter("zenzefi_ledger_entries", "Committed ledger entries.", ["type"])
LEDGER_AMOUNT = Counter(
    "zenzefi_ledger_znc",
    "ZNC moved by committed ledger entries, as an absolute amount (credits and debits alike).",
    ["type"],
)


def _initialise() -> None:
    """Create every labelled series at zero, so that `rate()` and the alert rules see a series
    from the first scrape rather than only after the first event of its kind."""
    for result in PROXY_RESULTS:
        PROXY_REQUESTS.labels(result)
    for direction in ("in", "out"):
        PROXY_BYTES.labels(direction)
    for outcome in TOKEN_OUTCOMES:
        TOKEN_CHECKS.labels(outcome)
    for kind in PURCHASE_KINDS.values():
        PURCHASES.labels(kind)
        REVENUE.labels(kind)
    for transaction_type in TransactionType:
        LEDGER_ENTRIES.labels(transaction_type.value)
        LEDGER_AMOUNT.labels(transaction_type.value)


_initialise()


def proxy_result(status: int) -> str:
    return f"{min(max(status // 100, 2), 5)}xx"


def count_ledger(entries: Sequence[LedgerEntry]) -> None:
    """The core's ledger observer: called after a unit of work, with what it committed."""
    for entry in entries:
        kind = entry.transaction_type.value
        amount = float(abs(entry.amount))
        LEDGER_ENTRIES.labels(kind).inc()
        LEDGER_AMOUNT.labels(kind).inc(amount)
        if entry.transaction_type is TransactionType.PURCHASE:
            purchase = PURCHASE_KINDS.get(entry.reference_type)
            if purchase is not None:
                PURCHASES.labels(purchase).inc()
                REVENUE.labels(purchase).inc(amount)
        elif entry.transaction_type is TransactionType.REFERRAL_BONUS:
            REFERRAL_BONUSES.inc()
            REFERRAL_BONUS_AMOUNT.inc(amount)


class SystemCollector(Collector):
    """The scrape-time gauges: what the database said, or only that it did not answer."""

    def __init__(self, gauges: SystemGauges | None) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "zenzefi_database_up",
            "1 when the database answered this scrape's queries in time, else 0 (and the "
            "gauges read from it are absent).",
            value=0 if self._gauges is None else 1,
        )
        gauges = self._gauges
        if gauges is None:
            return
        yield GaugeMetricFamily(
            "zenzefi_outbox_pending_events",
            "Outbox events not yet accepted by the broker.",
            value=gauges.outbox_pending,
        )
        yield GaugeMetricFamily(
            "zenzefi_outbox_oldest_pending_age_seconds",
            "How long the oldest pending outbox event has waited (0 when none waits).",
            value=gauges.outbox_oldest_age_seconds,
        )
        yield GaugeMetricFamily(
            "zenzefi_proxy_open_sessions",
            "Proxy sessions not ended: devices holding an access token.",
            value=gauges.open_sessions,
        )
        yield GaugeMetricFamily(
            "zenzefi_active_tokens",
            "Access tokens activated and not yet expired.",
            value=gauges.running_tokens,
        )


class _Scrape(Collector):
    """This process's registry followed by the scrape-time gauges, rendered as one page."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def _check_bearer(request: Request[Any, Any, Any], expected: str) -> None:
    if not bearer_matches(request.headers.get("authorization"), expected):
        raise NotAuthorizedException(
            detail="A valid metrics token is required", headers={"WWW-Authenticate": "Bearer"}
        )


@get(
    "/metrics",
    operation_id="metrics",
    include_in_schema=False,
    opt={EXCLUDE_OPT_KEY: True},
)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus text format. With `METRICS_TOKEN` set, only for `Authorization: Bearer`
    with that token (401 otherwise)."""
    context = api_context(request.app)
    token = context.settings.metrics.token
    if token is not None:
        _check_bearer(request, token.get_secret_value())
    read = ReadSystemGauges(context.core.uow, context.core.clock)
    gauges: SystemGauges | None = None
    try:
        gauges = await within(context.settings.health_timeout_seconds, read)
    except Exception as error:
        # Down, or failing: say so in `zenzefi_database_up` rather than fail the scrape.
        logger.warning("metrics: the database did not answer: %s", error)
    body = generate_latest(_Scrape(REGISTRY, SystemCollector(gauges)))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
