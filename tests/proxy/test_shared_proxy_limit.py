"""The per-token proxy limit with Redis: one limit across API processes, and an outage that
refuses nobody (the proxy fails open to counting in each process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from tests.proxy.conftest import ProxyEnv, Seen, start_proxy
from zenzefi_core.settings import ProxySettings, RedisSettings


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    return redis_namespace


def _two_processes(
    tmp_path: Path, engine: Engine, upstream: tuple[str, Seen], redis_settings: RedisSettings
) -> Iterator[tuple[ProxyEnv, ProxyEnv]]:
    """Two APIs, each with its own core, limiter and event loop, on one database and Redis."""
    limits = ProxySettings(rate_limit_per_minute=3)
    one = start_proxy(tmp_path / "one", engine, upstream, redis=redis_settings, proxy=limits)
    other = start_proxy(tmp_path / "other", engine, upstream, redis=redis_settings, proxy=limits)
    first = next(one)
    second = next(other)
    try:
        yield first, second
    finally:
        for started in (other, one):
            with pytest.raises(StopIteration):
                next(started)


@pytest.mark.redis
def test_two_api_processes_share_a_tokens_limit(
    tmp_path: Path,
    engine: Engine,
    upstream: tuple[str, Seen],
    redis_url: str,
    namespace: str,
) -> None:
    settings = RedisSettings(url=redis_url, namespace=namespace)
    for one, other in _two_processes(tmp_path, engine, upstream, settings):
        token = one.token()
        answers = [env.forward("GET", "a", token).status_code for env in (one, other, one)]
        assert answers == [200, 200, 200]
        refused = other.forward("GET", "a", token)
        assert refused.status_code == 429, "each process alone would still allow 3"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert one.forward("GET", "a", token).status_code == 429
        assert one.forward("GET", "a", one.token()).status_code == 200, "limits are per token"


def test_with_redis_unreachable_the_proxy_fails_open_to_counting_per_process(
    tmp_path: Path, engine: Engine, upstream: tuple[str, Seen]
) -> None:
    def fallbacks() -> float:
        return (
            REGISTRY.get_sample_value("zenzefi_rate_limit_fallbacks_total", {"bucket": "proxy"})
            or 0.0
        )

    # Port 9 (discard) has nobody listening: connection refused at once.
    down = RedisSettings(url="redis://127.0.0.1:9/0")
    for one, other in _two_processes(tmp_path, engine, upstream, down):
        token = one.token()
        before = fallbacks()
        assert [one.forward("GET", "a", token).status_code for _ in range(3)] == [200] * 3
        assert one.forward("GET", "a", token).status_code == 429, "still limited, in process"
        assert other.forward("GET", "a", token).status_code == 200, "each process counts alone"
        assert fallbacks() - before == 5
