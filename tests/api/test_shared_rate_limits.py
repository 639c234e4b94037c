"""Rate limits kept in Redis: one window for every API process, the same rules as the in-process
limiter, and a defined outage (counted in this process alone, logged, measured).

The Redis-backed tests run against the real server, each in a namespace of its own; the outage
tests use a stand-in client that fails on demand, so they need no Redis at all.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from tests.api.conftest import make_settings, running
from zenzefi_api.app import create_app
from zenzefi_api.context import api_context
from zenzefi_api.ratelimit import (
    RedisWindowLimiter,
    SlidingWindowLimiter,
    limiter_for,
)
from zenzefi_core.bootstrap import Core
from zenzefi_core.settings import RateLimitSettings, RedisSettings

T = TypeVar("T")
FALLBACKS = "zenzefi_rate_limit_fallbacks_total"


def fallbacks(bucket: str) -> float:
    return REGISTRY.get_sample_value(FALLBACKS, {"bucket": bucket}) or 0.0


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    return redis_namespace


@pytest.mark.redis
def test_the_window_in_redis_follows_the_in_process_rules(redis_url: str, namespace: str) -> None:
    async def scenario() -> list[float | None]:
        limiter = RedisWindowLimiter.from_url(redis_url, namespace)
        try:
            return [
                await limiter.acquire("login:1.2.3.4", limit=2, window=60),
                await limiter.acquire("login:1.2.3.4", limit=2, window=60),
                await limiter.acquire("login:1.2.3.4", limit=2, window=60),
                await limiter.acquire("login:5.6.7.8", limit=2, window=60),
                await limiter.acquire("register:1.2.3.4", limit=2, window=60),
            ]
        finally:
            await limiter.aclose()

    first, second, refused, other_address, other_bucket = run(scenario)
    assert (first, second) == (None, None)
    assert refused is not None
    assert 59 < refused <= 60, "the wait is until the oldest attempt leaves the window"
    assert other_address is None, "limits are per key"
    assert other_bucket is None


@pytest.mark.redis
@examples(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    attempts=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 1)), max_size=40),
    limit=st.integers(1, 5),
)
def test_redis_and_the_in_process_window_decide_alike(
    redis_url: str, namespace: str, attempts: list[tuple[str, int]], limit: int
) -> None:
    """Within one window (nothing expires), any sequence of attempts over a few keys, sent by
    either of two processes, is allowed or refused exactly as one in-process window would."""
    run_namespace = f"{namespace}:{secrets.token_hex(4)}"
    model = SlidingWindowLimiter(clock=lambda: 0.0)

    async def scenario() -> list[bool]:
        limiters = [RedisWindowLimiter.from_url(redis_url, run_namespace) for _ in range(2)]
        try:
            return [
                await limiters[process].acquire(key, limit=limit, window=600) is None
                for key, process in attempts
            ]
        finally:
            for limiter in limiters:
                await limiter.aclose()

    expected = [model.hit(key, limit=limit, window=600) is None for key, _ in attempts]
    assert run(scenario) == expected


@pytest.mark.redis
def test_processes_share_one_window(redis_url: str, namespace: str) -> None:
    """Two limiters stand for two API processes: together they allow the limit once."""

    async def scenario() -> list[float | None]:
        one = RedisWindowLimiter.from_url(redis_url, namespace)
        other = RedisWindowLimiter.from_url(redis_url, namespace)
        try:
            answers = []
            for limiter in (one, other, one, other, one, other):
                answers.append(await limiter.acquire("proxy:token-1", limit=4, window=60))
            return answers
        finally:
            await one.aclose()
            await other.aclose()

    answers = run(scenario)
    assert answers[:4] == [None] * 4
    assert all(wait is not None and wait > 0 for wait in answers[4:])


@pytest.mark.redis
def test_decisions_asked_together_share_round_trips_and_still_count_one_by_one(
    redis_url: str, namespace: str
) -> None:
    async def scenario() -> list[float | None]:
        limiter = RedisWindowLimiter.from_url(redis_url, namespace)
        try:
            return list(
                await asyncio.gather(
                    *(limiter.acquire("proxy:busy", limit=4, window=60) for _ in range(10))
                )
            )
        finally:
            await limiter.aclose()

    answers = run(scenario)
    assert answers.count(None) == 4
    assert all(0 < wait <= 60 for wait in answers if wait is not None)


@pytest.mark.redis
def test_refused_attempts_are_not_counted_and_the_window_slides(
    redis_url: str, namespace: str
) -> None:
    async def scenario() -> tuple[list[float | None], float | None]:
        limiter = RedisWindowLimiter.from_url(redis_url, namespace)
        try:
            answers = [await limiter.acquire("login:x", limit=1, window=0.3) for _ in range(5)]
            await asyncio.sleep(0.4)
            after = await limiter.acquire("login:x", limit=1, window=0.3)
            return answers, after
        finally:
            await limiter.aclose()

    answers, after = run(scenario)
    assert answers[0] is None
    assert all(wait is not None and 0 < wait <= 0.3 for wait in answers[1:])
    assert after is None, "refusals recorded nothing, so the window emptied on time"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stored = client.lrange(f"{namespace}:ratelimit:login:x", 0, -1)
        assert len(stored) == 1, "at most `limit` attempts are kept per key"
        assert 0 < client.pttl(f"{namespace}:ratelimit:login:x") <= 300, "keys expire"
    finally:
        client.close()


@pytest.mark.redis
def test_with_redis_configured_the_app_counts_in_redis(
    tmp_path: Path, engine: Engine, core: Core, redis_url: str, namespace: str
) -> None:
    settings = make_settings(
        tmp_path,
        engine,
        redis=RedisSettings(url=redis_url, namespace=namespace),
        rate_limit=RateLimitSettings(login_attempts=2, register_attempts=50, window_seconds=60),
    )
    first = create_app(settings, core)
    second = create_app(settings, core)
    assert isinstance(api_context(first).limiter, RedisWindowLimiter)
    wrong = {"email": "nobody@example.com", "password": "wrong password"}
    with running(first) as one, running(second) as other:
        assert one.post("/api/v1/auth/login", json=wrong).status_code == 401
        assert other.post("/api/v1/auth/login", json=wrong).status_code == 401
        refused = one.post("/api/v1/auth/login", json=wrong)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert other.post("/api/v1/auth/login", json=wrong).status_code == 429


def test_without_redis_the_app_counts_in_process(tmp_path: Path, engine: Engine) -> None:
    assert isinstance(limiter_for(make_settings(tmp_path, engine)), SlidingWindowLimiter)


class FlakyRedis:
    """Enough of `redis.asyncio.Redis` for the limiter: its script allows everything while
    up, and raises while `down`; `calls` counts every attempt to reach it."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        #: Replaces the script's answer when set: an exception to raise, or a value to return.
        self.answer: object = None

    def register_script(self, _source: str) -> Callable[..., Awaitable[list[int]]]:
        async def script(keys: list[str], args: list[Any]) -> list[int]:
            self.calls += 1
            if self.down:
                raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
            if isinstance(self.answer, Exception):
                raise self.answer
            if self.answer is not None:
                return self.answer  # type: ignore[return-value]
            return [-1] * len(keys)

        return script

    async def aclose(self) -> None:
        return None


@pytest.fixture
def flaky() -> FlakyRedis:
    return FlakyRedis()


@pytest.fixture
def now() -> list[float]:
    return [100.0]


@pytest.fixture
def limiter(flaky: FlakyRedis, now: list[float]) -> RedisWindowLimiter:
    fake: Any = flaky
    return RedisWindowLimiter(
        fake,
        "ns",
        fallback=SlidingWindowLimiter(clock=lambda: now[0]),
        retry_after_seconds=1.0,
        monotonic=lambda: now[0],
    )


def test_while_redis_is_down_requests_pass_and_are_counted_in_process(
    limiter: RedisWindowLimiter, flaky: FlakyRedis
) -> None:
    flaky.down = True
    before = fallbacks("proxy")

    async def scenario() -> list[float | None]:
        return [await limiter.acquire("proxy:t", limit=3, window=60) for _ in range(4)]

    answers = run(scenario)
    assert answers[:3] == [None, None, None], "an outage refuses nobody within the limit"
    assert answers[3] is not None, "and lifts no limit: this process still counts"
    after = fallbacks("proxy")
    assert after - before == 4


def test_a_burst_of_decisions_takes_one_round_trip_not_one_each(
    limiter: RedisWindowLimiter, flaky: FlakyRedis
) -> None:
    async def burst() -> list[float | None]:
        return list(
            await asyncio.gather(
                *(limiter.acquire(f"proxy:{n}", limit=10, window=60) for n in range(50))
            )
        )

    assert run(burst) == [None] * 50
    assert flaky.calls == 1, "asked for in one turn of the event loop, sent together"


def test_a_large_burst_is_split_into_bounded_round_trips(
    limiter: RedisWindowLimiter, flaky: FlakyRedis
) -> None:
    async def burst() -> list[float | None]:
        return list(
            await asyncio.gather(
                *(limiter.acquire(f"proxy:{n}", limit=10, window=60) for n in range(600))
            )
        )

    assert run(burst) == [None] * 600
    assert flaky.calls == 3, "256 + 256 + 88"


def test_an_answer_that_does_not_fit_is_an_outage_not_a_crash(
    limiter: RedisWindowLimiter, flaky: FlakyRedis
) -> None:
    flaky.answer = [-1]  # one answer for three decisions

    async def three() -> list[float | None]:
        return list(
            await asyncio.gather(
                *(limiter.acquire("register:a", limit=2, window=60) for _ in range(3))
            )
        )

    answers = run(three)
    assert answers[:2] == [None, None]
    assert answers[2] is not None, "decided in process, and still limited"


def test_a_fault_that_is_not_an_outage_reaches_the_caller_and_the_next_goes_on(
    limiter: RedisWindowLimiter, flaky: FlakyRedis
) -> None:
    flaky.answer = RuntimeError("a bug")

    async def one() -> float | None:
        return await limiter.acquire("login:a", limit=2, window=60)

    with pytest.raises(RuntimeError, match="a bug"):
        run(one)
    flaky.answer = None
    assert run(one) is None


def test_after_a_failure_redis_is_left_alone_for_a_while(
    limiter: RedisWindowLimiter, flaky: FlakyRedis, now: list[float]
) -> None:
    flaky.down = True

    async def hit() -> float | None:
        return await limiter.acquire("login:a", limit=1000, window=60)

    run(hit)
    calls = flaky.calls
    for _ in range(20):
        run(hit)
    assert flaky.calls == calls, "no round trip to a Redis known to be down"
    now[0] += 1.0
    flaky.down = False
    run(hit)
    assert flaky.calls == calls + 1, "tried again once the pause is over"
    before = fallbacks("login")
    run(hit)
    assert flaky.calls == calls + 2
    assert fallbacks("login") == before


def test_an_outage_is_logged_when_it_starts_and_ends(
    limiter: RedisWindowLimiter,
    flaky: FlakyRedis,
    now: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="zenzefi.ratelimit")
    flaky.down = True

    async def hit() -> float | None:
        return await limiter.acquire("register:a", limit=1000, window=60)

    for _ in range(3):
        run(hit)
        now[0] += 1.0
    flaky.down = False
    run(hit)
    run(hit)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("rate limits are counted in this process alone")
    assert messages[1] == "rate limits are shared through Redis again"


def test_with_redis_unreachable_login_answers_and_is_limited_in_process(
    tmp_path: Path, engine: Engine, core: Core
) -> None:
    """Against a port nobody listens on (refused at once): no 500, and still a limit."""
    settings = make_settings(
        tmp_path,
        engine,
        redis=RedisSettings(url="redis://127.0.0.1:9/0"),
        rate_limit=RateLimitSettings(login_attempts=2, register_attempts=50, window_seconds=60),
    )
    wrong = {"email": "nobody@example.com", "password": "wrong password"}
    with running(create_app(settings, core)) as client:
        statuses = [client.post("/api/v1/auth/login", json=wrong).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
