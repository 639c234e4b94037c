"""Two `zenzefi serve` processes on one Redis and one database, as a scaled-out deployment
runs them: the login and register limits hold across both, instead of doubling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.test_serve import _free_port, _wait_until_healthy

pytestmark = pytest.mark.redis


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    return redis_namespace


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[list[str]]:
    """Two processes in one folder (so one SQLite database and one secret key), started one
    after the other so that only the first applies the migrations."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZENZEFI_")}
    environment.update(
        {
            "ZENZEFI_REDIS_URL": redis_url,
            "ZENZEFI_REDIS_NAMESPACE": namespace,
            "ZENZEFI_RATE_LIMIT_LOGIN_ATTEMPTS": "4",
            "ZENZEFI_RATE_LIMIT_REGISTER_ATTEMPTS": "2",
            "ZENZEFI_RATE_LIMIT_WINDOW_SECONDS": "600",
        }
    )
    processes: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for _ in range(2):
            port = _free_port()
            process = subprocess.Popen(  # noqa: S603 - a fixed command line
                [sys.executable, "-m", "zenzefi_api.cli", "serve", "--port", str(port)],
                cwd=tmp_path,
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(process)
            base = f"http://127.0.0.1:{port}"
            _wait_until_healthy(base, process)
            bases.append(base)
        yield bases
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)


def test_two_serve_processes_on_one_redis_share_the_login_and_register_limits(
    servers: list[str], redis_url: str, namespace: str
) -> None:
    one, other = (httpx.Client(base_url=base, timeout=10) for base in servers)
    with one, other:

        def register(client: httpx.Client, name: str) -> int:
            account = {"email": f"{name}@example.com", "username": name, "password": "s3cret pw!"}
            return client.post("/api/v1/auth/register", json=account).status_code

        assert [register(one, "alice"), register(other, "bob")] == [201, 201]
        assert register(one, "carol") == 429, "each process alone would allow two more"
        assert register(other, "dave") == 429

        wrong = {"email": "alice@example.com", "password": "not her password"}
        answers = [c.post("/api/v1/auth/login", json=wrong) for c in (one, other, one, other)]
        assert [answer.status_code for answer in answers] == [401] * 4
        refused = one.post("/api/v1/auth/login", json=wrong)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 600
        assert other.post("/api/v1/auth/login", json=wrong).status_code == 429

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        kept = set(client.scan_iter(match=f"{namespace}:ratelimit:*"))
    finally:
        client.close()
    assert kept == {
        f"{namespace}:ratelimit:login:127.0.0.1",
        f"{namespace}:ratelimit:register:127.0.0.1",
    }
