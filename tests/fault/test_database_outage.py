"""PostgreSQL stops and starts again under `zenzefi serve` while customers keep asking.

While it is down, `/health` says unhealthy with 503 and every request that needs it gets a 503
with the usual error body and `Retry-After`: never a 500, never a hang. Once it is back, the
same process answers again (its pool replaces the dead connections), and `zenzefi
check-ledger` finds every balance explained by its entries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.fault.conftest import (
    PASSWORD,
    SECRET_KEY,
    FaultDatabase,
    PrivateRedis,
    Process,
    Upstream,
    open_shop,
    start_api,
    zenzefi,
)
from tests.fault.conftest import environment as zenzefi_environment
from tests.notifications import eventually

pytestmark = pytest.mark.fault

#: The longest any request may take; a request still waiting for a dead database is a hang.
REQUEST_TIMEOUT = 8.0


@dataclass
class Outcome:
    what: str
    status: int | None
    body: dict[str, object] | None
    error: str | None = None
    at: float = field(default_factory=time.monotonic)


class Traffic:
    """Balance reads and token purchases in a loop from a thread, every outcome recorded."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=base, headers=headers, timeout=REQUEST_TIMEOUT)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, what: str, call: Callable[[], httpx.Response]) -> None:
        try:
            response = call()
        except httpx.HTTPError as error:
            self.outcomes.append(Outcome(what, None, None, f"{type(error).__name__}: {error}"))
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        self.outcomes.append(Outcome(what, response.status_code, body))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._one("balance", lambda: self._client.get("/api/v1/currency/balance"))
            self._one(
                "purchase",
                lambda: self._client.post("/api/v1/tokens/purchase", json={"duration_hours": 1}),
            )
            time.sleep(0.02)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def since(self, moment: float) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.at >= moment]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=REQUEST_TIMEOUT * 3)
        self._client.close()


def test_postgres_down_and_back_while_requests_flow(
    tmp_path: Path,
    fault_database: FaultDatabase,
    redis_up: PrivateRedis,
    upstream: Upstream,
    processes: Callable[..., Process],
) -> None:
    env = zenzefi_environment(
        data_dir=str(tmp_path / "data"),
        secret_key=SECRET_KEY,
        database_url=fault_database.url,
        redis_url=redis_up.url,
        redis_namespace="fault-db",
        upstream_url=upstream.url,
        health_timeout_seconds="1",
        usage_flush_seconds="0.2",
    )
    base, server = start_api(processes, env, tmp_path)
    postgres = fault_database.server
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT) as client:
        shop = open_shop(client)
        bought = client.post(
            "/api/v1/tokens/purchase", json={"duration_hours": 24}, headers=shop.customer
        )
        assert bought.status_code == 201, bought.text
        token = bought.json()["token"]

        def forward(device: str) -> httpx.Response:
            return client.get(
                "/api/v1/proxy/hello", headers={"X-Access-Token": token, "X-Device-ID": device}
            )

        assert forward("device-held-1").status_code == 200  # activated; token and hold cached
        traffic = Traffic(base, shop.customer).start()
        try:
            eventually(
                lambda: sum(o.status == 201 for o in traffic.outcomes) >= 3,
                what="purchases before the outage",
            )

            postgres.stop("immediate")
            down_at = time.monotonic()

            def unhealthy() -> httpx.Response | None:
                answer = client.get("/health")
                return answer if answer.status_code == 503 else None

            health = eventually(unhealthy, timeout=10, what="/health to report the outage")
            assert health.json()["status"] == "unhealthy"
            eventually(
                lambda: sum(o.status == 503 for o in traffic.since(down_at)) >= 4,
                what="requests refused during the outage",
            )
            # A request with no database behind it is refused the same way.
            refused = client.post(
                "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
            )
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "5"
            # The proxy's hot path reads no database: the device holding the token goes on
            # (its usage waits in memory), another device needs the database and gets a 503.
            for _ in range(3):
                assert forward("device-held-1").status_code == 200
            other = forward("device-other-2")
            assert other.status_code == 503, other.text
            assert other.json()["status_code"] == 503

            postgres.start()
            up_at = time.monotonic()
            eventually(
                lambda: client.get("/health").status_code == 200,
                timeout=15,
                what="/health to report the database back",
            )
            eventually(
                lambda: sum(o.status == 201 for o in traffic.since(up_at)) >= 3,
                timeout=15,
                what="purchases after the database came back",
            )
        finally:
            traffic.stop()
            if not postgres.running():
                postgres.start()

        outage = [o for o in traffic.outcomes if down_at <= o.at < up_at]
        assert outage, "no request was made while the database was down"
        for outcome in traffic.outcomes:
            assert outcome.error is None, f"{outcome.what}: {outcome.error}"
            assert outcome.status in {200, 201, 503}, outcome
            if outcome.status == 503:
                assert outcome.body is not None, outcome
                assert outcome.body["status_code"] == 503, outcome
                assert "temporarily unavailable" in str(outcome.body["detail"]), outcome
        assert any(o.status == 503 for o in outage)

        assert forward("device-held-1").status_code == 200

    # Every purchase that committed has its token and its debit, and none is missing: those
    # answered 201 at least, plus any whose answer was lost with the connection (a 503).
    purchases = [o for o in traffic.outcomes if o.what == "purchase"]
    answered = 1 + sum(o.status == 201 for o in purchases)
    cut_off = sum(o.status == 503 for o in purchases)
    tokens = fault_database.scalar("SELECT count(*) FROM access_tokens")
    debits = fault_database.scalar(
        "SELECT count(*) FROM transactions WHERE transaction_type = 'purchase'"
    )
    assert tokens == debits
    assert answered <= int(str(tokens)) <= answered + cut_off
    # The usage counted while the database was down was written once it was back.
    eventually(
        lambda: fault_database.scalar("SELECT sum(request_count) FROM proxy_sessions") == 5,
        timeout=10,
        what="the usage kept through the outage to be written",
    )
    assert server.alive(), server.output()
    checked = zenzefi(env, "check-ledger")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert server.stop() in {0, -15}, server.output()
    log = server.output()
    assert "unhandled error" not in log, log
    assert '"status": 500' not in log, log
