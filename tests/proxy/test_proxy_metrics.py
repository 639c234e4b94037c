"""The proxy's metrics, scraped from the running API over HTTP after real proxied requests."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from tests.metrics import Samples, moved, parse, value
from tests.notifications import eventually
from tests.proxy.conftest import ProxyEnv, Seen, free_port, start_proxy
from zenzefi_core.settings import UpstreamSettings

CHECKS = "zenzefi_proxy_token_checks_total"
REQUESTS = "zenzefi_proxy_requests_total"
BYTES = "zenzefi_proxy_bytes_total"
LATENCY = "zenzefi_proxy_upstream_latency_seconds_count"


def scrape(env: ProxyEnv) -> Samples:
    response = env.client.get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


def test_requests_bytes_latency_and_token_checks_move_by_what_passed(proxy: ProxyEnv) -> None:
    before = scrape(proxy)
    token = proxy.token()

    first = proxy.forward("POST", "echo", token, content=b"x" * 1000)
    second = proxy.forward("GET", "status/404", token)
    third = proxy.forward("GET", "a", token)
    unknown = proxy.forward("GET", "a", "not-a-token")
    other_device = proxy.forward("GET", "a", token, device="somebody-else")
    assert (first.status_code, second.status_code, third.status_code) == (200, 404, 200)
    assert (unknown.status_code, other_device.status_code) == (401, 409)
    out = len(first.content) + len(second.content) + len(third.content)

    # A stream is counted once its last byte went out, just after the client has it.
    eventually(
        lambda: moved(before, scrape(proxy), REQUESTS, {"result": "2xx"}) == 2,
        what="both proxied requests counted",
    )
    after = scrape(proxy)
    assert moved(before, after, REQUESTS, {"result": "4xx"}) == 1
    assert moved(before, after, BYTES, {"direction": "in"}) == 1000
    assert moved(before, after, BYTES, {"direction": "out"}) == out
    assert moved(before, after, LATENCY) == 3
    # The first request read the database and filled the cache; the next two were hits; the
    # unknown token was refused. The other device read the database (the hold is per device)
    # and was turned away with 409, which is no verdict on the token.
    assert moved(before, after, CHECKS, {"outcome": "cache_miss"}) == 1
    assert moved(before, after, CHECKS, {"outcome": "cache_hit"}) == 2
    assert moved(before, after, CHECKS, {"outcome": "invalid"}) == 1
    # The refusals are HTTP requests on the proxy's route template, not on their raw paths.
    refused = {
        "method": "GET",
        "path": "/api/v1/proxy/{path}",
        "status_code": "401",
    }
    assert moved(before, after, "zenzefi_http_requests_total", refused) == 1

    # The token is now held by one device and running.
    assert value(after, "zenzefi_proxy_open_sessions") == 1
    assert value(after, "zenzefi_active_tokens") == 1


def test_an_unreachable_upstream_counts_as_such(
    tmp_path: Path, engine: Engine, upstream: tuple[str, Seen]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    for env in start_proxy(tmp_path, engine, upstream, upstream_url=closed):
        before = scrape(env)
        assert env.forward("PUT", "anything", env.token(), content=b"abc").status_code == 502
        after = scrape(env)
        assert moved(before, after, REQUESTS, {"result": "unreachable"}) == 1
        assert moved(before, after, LATENCY) == 1
        assert moved(before, after, BYTES, {"direction": "out"}) == 0


def test_an_upstream_timeout_counts_as_such(
    tmp_path: Path, engine: Engine, upstream: tuple[str, Seen]
) -> None:
    settings = UpstreamSettings(url=upstream[0], read_timeout_seconds=0.3)
    for env in start_proxy(tmp_path, engine, upstream, upstream=settings):
        before = scrape(env)
        assert env.forward("GET", "stall", env.token()).status_code == 504
        after = scrape(env)
        assert moved(before, after, REQUESTS, {"result": "timeout"}) == 1
        assert moved(before, after, REQUESTS, {"result": "5xx"}) == 0
