"""Rate limits on login and register: a real 429 with Retry-After, per bucket and per address."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar

from tests.api.conftest import PASSWORD, ApiClient, make_settings, running
from zenzefi_api.app import create_app
from zenzefi_api.context import api_context
from zenzefi_api.ratelimit import SlidingWindowLimiter
from zenzefi_core.settings import RateLimitSettings

LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def limited(tmp_path, engine, core, fake_time) -> Iterator[tuple[Litestar, ApiClient]]:
    limits = RateLimitSettings(login_attempts=3, register_attempts=2, window_seconds=60)
    app = create_app(make_settings(tmp_path, engine, rate_limit=limits), core)
    api_context(app).limiter = SlidingWindowLimiter(clock=fake_time)
    with running(app) as client:
        yield app, client


def register(client: ApiClient, name: str):
    return client.post(
        REGISTER,
        json={"email": f"{name}@example.com", "username": name, "password": PASSWORD},
    )


def test_login_attempts_beyond_the_limit_get_429(limited, fake_time) -> None:
    _, client = limited
    assert register(client, "alice").status_code == 201
    wrong = {"email": "alice@example.com", "password": "guess"}
    assert [client.post(LOGIN, json=wrong).status_code for _ in range(3)] == [401, 401, 401]

    blocked = client.post(LOGIN, json={"email": "alice@example.com", "password": PASSWORD})
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "60"
    assert blocked.json() == {
        "status_code": 429,
        "detail": "Too many attempts. Retry in 60 seconds.",
    }
    # Malformed requests are counted too (the guard runs before the body is read).
    fake_time.now += 45
    assert client.post(LOGIN, content=b"garbage").headers["retry-after"] == "15"

    fake_time.now += 15
    ok = client.post(LOGIN, json={"email": "alice@example.com", "password": PASSWORD})
    assert ok.status_code == 200


def test_register_has_its_own_bucket(limited) -> None:
    _, client = limited
    assert register(client, "alice").status_code == 201
    assert client.post(REGISTER, json={"email": "broken"}).status_code == 422
    blocked = register(client, "carol")
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    # Logging in is a different bucket, still open.
    login = client.post(LOGIN, json={"email": "alice@example.com", "password": PASSWORD})
    assert login.status_code == 200


def test_limits_can_be_switched_off(tmp_path, engine, core) -> None:
    limits = RateLimitSettings(enabled=False, login_attempts=1)
    with running(create_app(make_settings(tmp_path, engine, rate_limit=limits), core)) as client:
        for _ in range(5):
            assert client.post(LOGIN, json={"email": "a@b.cc", "password": "x"}).status_code == 401


def test_the_limiter_counts_per_key_in_a_sliding_window() -> None:
    clock = FakeTime()
    limiter = SlidingWindowLimiter(clock=clock)
    assert limiter.hit("login:1.2.3.4", limit=2, window=10) is None
    clock.now += 4
    assert limiter.hit("login:1.2.3.4", limit=2, window=10) is None
    assert limiter.hit("login:1.2.3.4", limit=2, window=10) == pytest.approx(6)
    assert limiter.hit("login:5.6.7.8", limit=2, window=10) is None
    clock.now += 6
    # The first attempt left the window; the second is still in it.
    assert limiter.hit("login:1.2.3.4", limit=2, window=10) is None
    assert limiter.hit("login:1.2.3.4", limit=2, window=10) == pytest.approx(4)


def test_the_limiter_forgets_idle_addresses() -> None:
    clock = FakeTime()
    limiter = SlidingWindowLimiter(clock=clock, max_keys=3)
    for n in range(3):
        limiter.hit(f"k{n}", limit=5, window=10)
    clock.now += 11
    limiter.hit("fresh", limit=5, window=10)
    assert set(limiter._attempts) == {"fresh"}
