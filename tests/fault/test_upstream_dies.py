"""The diagnostic server dies in the middle of an answer, behind `zenzefi serve`.

Before any header: the client gets a 502 with the usual error body. After the headers, with a
Content-Length or chunked: the proxy cannot take the status back, so it cuts the client's
connection short, and the client sees a truncated response (never a body passed off as whole,
never a hang). Either way the request and the bytes that did pass count in the session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fault.conftest import (
    SECRET_KEY,
    FaultDatabase,
    Process,
    Upstream,
    open_shop,
    start_api,
)
from tests.fault.conftest import environment as zenzefi_environment
from tests.notifications import eventually

pytestmark = pytest.mark.fault

ANNOUNCED = 4_000_000
SENT = 300_000


def read_cut_short(client: httpx.Client, path: str, headers: dict[str, str]) -> int:
    """Stream `path` through the proxy; the bytes that arrived before the connection broke."""
    received = 0
    with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        # The error comes part way through the reading, after some bytes have arrived.
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # noqa: PT012
            for chunk in chunks:
                received += len(chunk)
    return received


def test_an_upstream_dying_mid_answer_gives_a_clean_error_and_counts(
    tmp_path: Path,
    fault_database: FaultDatabase,
    upstream: Upstream,
    processes: Callable[..., Process],
) -> None:
    env = zenzefi_environment(
        data_dir=str(tmp_path / "data"),
        secret_key=SECRET_KEY,
        database_url=fault_database.url,
        upstream_url=upstream.url,
        upstream_read_timeout_seconds="5",
        usage_flush_seconds="0.2",
    )
    base, server = start_api(processes, env, tmp_path)
    with httpx.Client(base_url=base, timeout=10) as client:
        shop = open_shop(client)
        bought = client.post(
            "/api/v1/tokens/purchase", json={"duration_hours": 24}, headers=shop.customer
        )
        assert bought.status_code == 201, bought.text
        proxy = {"X-Access-Token": bought.json()["token"], "X-Device-ID": "device-cut-1"}

        assert client.get("/api/v1/proxy/hello", headers=proxy).status_code == 200

        hung_up = client.get("/api/v1/proxy/hang-up", headers=proxy)
        assert hung_up.status_code == 502
        assert hung_up.json() == {"status_code": 502, "detail": "Upstream server unavailable"}

        partial = read_cut_short(
            client, f"/api/v1/proxy/partial?size={ANNOUNCED}&send={SENT}", proxy
        )
        assert 0 < partial <= SENT
        chunked = read_cut_short(client, f"/api/v1/proxy/chunked?send={SENT}", proxy)
        assert 0 < chunked <= SENT + 64 * 1024  # the chunk framing is passed on as it came

        # The proxy is unharmed: the next request goes through.
        again = client.get("/api/v1/proxy/hello", headers=proxy)
        assert again.status_code == 200
        assert again.json() == {"path": "/hello"}

    def usage() -> tuple[int, int] | None:
        row = fault_database.scalar("SELECT request_count || ',' || bytes_out FROM proxy_sessions")
        requests, bytes_out = (int(part) for part in str(row).split(","))
        return (requests, bytes_out) if requests == 5 else None

    _, bytes_out = eventually(usage, timeout=10, what="the usage flush")
    # Every byte the client got was counted; what the upstream sent past that, at most, too.
    assert partial + chunked <= bytes_out <= 2 * SENT + 64 * 1024 + 200
    assert server.alive(), server.output()
    log = server.output()
    assert "unhandled error" not in log, log
    assert "upstream failed while streaming a response" in log
