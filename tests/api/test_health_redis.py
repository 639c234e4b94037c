"""`/health` with Redis configured: degraded (200, not 503) while Redis does not answer, since
the API still works without it, and healthy again once it does."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.api.conftest import make_settings, running
from zenzefi_api.app import create_app
from zenzefi_api.cache import RedisAccessCache
from zenzefi_core.bootstrap import Core
from zenzefi_core.settings import RedisSettings


def test_health_is_degraded_while_redis_does_not_answer(
    tmp_path: Path, engine: Engine, core: Core
) -> None:
    # Port 9 (discard) has nobody listening: connection refused at once.
    settings = make_settings(tmp_path, engine, redis=RedisSettings(url="redis://127.0.0.1:9/0"))
    with running(create_app(settings, core)) as client:
        response = client.get("/health")
        assert response.status_code == 200
        assert response.json()["status"] == "degraded"


@pytest.mark.redis
def test_health_is_healthy_with_redis_answering(
    tmp_path: Path, engine: Engine, core: Core, redis_url: str
) -> None:
    settings = make_settings(
        tmp_path, engine, redis=RedisSettings(url=redis_url, namespace="health-test")
    )
    with running(create_app(settings, core)) as client:
        assert isinstance(core.access_cache, RedisAccessCache)
        assert client.get("/health").json()["status"] == "healthy"
