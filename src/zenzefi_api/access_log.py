"""Structured logs: one JSON object per line, and one access-log line per HTTP request."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "zenzefi.access"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "pid", ...}`, plus whatever a record carries in
    `fields`. The process id tells apart the lines of `zenzefi serve --workers N`'s processes."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger (ours, uvicorn's, Litestar's) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLog:
    """Wraps the whole application, routing and error handling included, so unknown paths and
    failed requests are logged like any other. Echoes a sane `X-Request-ID` or makes one up.

    Successful requests to `quiet_paths` (the metrics page, scraped every few seconds) are not
    logged; their failures are."""

    def __init__(
        self,
        app: ASGIApp,
        logger: logging.Logger | None = None,
        quiet_paths: frozenset[str] = frozenset(),
    ) -> None:
        self._app = app
        self._logger = logger or logging.getLogger(ACCESS_LOGGER)
        self._quiet_paths = quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            if status >= 400 or scope["path"] not in self._quiet_paths:
                client = scope.get("client")
                self._log(scope["method"], scope["path"], client, status, started, request_id)

    def _log(
        self,
        method: str,
        path: str,
        client: tuple[str, int] | None,
        status: int,
        started: float,
        request_id: str,
    ) -> None:
        self._logger.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "fields": {
                    "event": "request",
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client": client[0] if client else None,
                    "request_id": request_id,
                }
            },
        )
