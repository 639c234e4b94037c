"""The proxy end to end: the desktop client's flow, forwarding rules and every status code."""

from __future__ import annotations

import hashlib
import json
import resource
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from sqlalchemy import Engine

from tests.notifications import eventually
from tests.proxy.conftest import ProxyEnv, Seen, free_port, start_proxy
from zenzefi_core.security import hash_access_token
from zenzefi_core.services.admin import AccountChange, SetUserActive
from zenzefi_core.services.proxy import CloseIdleSessions, ReportExpiredTokens, ready_key
from zenzefi_core.services.tokens import RevokeToken, TokenRevocation
from zenzefi_core.settings import ProxySettings, UpstreamSettings


def events(proxy: ProxyEnv, event_type: str) -> list[dict]:
    return proxy.events(event_type)


def sessions(proxy: ProxyEnv, token_id: str):
    with proxy.core.uow() as uow:
        return uow.proxy_sessions.list_for_token(UUID(token_id))


def test_the_desktop_client_flow(proxy: ProxyEnv) -> None:
    token = proxy.token(scope="certificates_only")

    # The client polls the status with the token alone: ready, clock not started.
    ready = proxy.status(token)
    assert ready.status_code == 200
    body = ready.json()
    assert body["connected"] is True
    assert body["status"] == "ready"
    assert body["is_activated"] is False
    assert body["expires_at"] is None
    assert body["duration_hours"] == 24
    assert body["time_remaining_seconds"] == 24 * 3600
    assert proxy.status(token).json()["status"] == "ready", "status never activates"
    assert events(proxy, "token.activated") == []

    # The first proxied request (both headers) activates the token.
    first = proxy.forward("GET", "certificates/filter?q=1", token, device="desktop-0001")
    assert first.status_code == 200, first.text
    assert first.json()["raw_path"] == "/certificates/filter"
    assert first.json()["query"] == "q=1"

    active = proxy.status(token).json()
    assert active["status"] == "active"
    assert active["is_activated"] is True
    assert active["expires_at"] is not None
    assert active["user_id"] == body["user_id"]
    assert active["token_id"] == body["token_id"]
    [activated] = events(proxy, "token.activated")
    assert activated["token_id"] == body["token_id"]

    # Another device is refused while the first one holds the token.
    other = proxy.forward("GET", "certificates/filter", token, device="laptop-0002")
    assert other.status_code == 409
    assert other.json()["detail"] == "Access token is in use on another device"
    # The scope holds, however the path is spelled.
    escape = proxy.forward(
        "GET", "certificates/filter/..%2f..%2fadmin", token, device="desktop-0001"
    )
    assert escape.status_code == 403
    assert all(p.startswith("/certificates/filter") for p in proxy.seen.paths())


def test_headers_are_stripped_and_replaced(proxy: ProxyEnv) -> None:
    user = proxy.user()
    token = proxy.token(user)
    response = proxy.forward(
        "POST",
        "echo/here",
        token,
        content=b"hello",
        headers={
            "X-User-Id": "spoofed",
            "X-Token-Id": "spoofed",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Custom": "kept",
        },
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    names = [name for name, _ in seen["headers"]]
    headers = dict(seen["headers"])
    assert "x-access-token" not in names
    assert "x-drop-me" not in names
    assert "proxy-authorization" not in names
    assert "forwarded" not in names
    assert names.count("x-user-id") == 1
    assert names.count("x-forwarded-for") == 1
    assert headers["x-user-id"] == str(user.id)
    assert headers["x-token-id"] == proxy.status(token).json()["token_id"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] != "evil.example"
    assert headers["x-custom"] == "kept"
    assert seen["body_size"] == 5
    # Hop-by-hop headers of the response stay behind too.
    assert "x-secret-hop" not in response.headers


def test_cookies_and_redirects_come_back_as_sent(proxy: ProxyEnv) -> None:
    token = proxy.token()
    cookies = proxy.forward("GET", "cookies", token)
    assert cookies.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    # The proxy's shared client keeps none of them: another user's request carries no cookie.
    proxy.client.cookies.clear()
    other = proxy.forward("GET", "echo", proxy.token(), device="device-bbbb-2")
    assert "cookie" not in [name for name, _ in other.json()["headers"]]
    mine = proxy.forward("GET", "echo", token, headers={"Cookie": "a=1"})
    assert ["cookie", "a=1"] in mine.json()["headers"]

    redirect = proxy.forward("GET", "redirect", token)
    assert redirect.status_code == 302, "redirects are passed back, not followed"
    # Pointing at the upstream itself: shown as the same place behind the proxy.
    assert redirect.headers["location"] == "/api/v1/proxy/certificates/filter?x=1"
    relative = proxy.forward("GET", "redirect-relative", token)
    assert relative.headers["location"] == "/api/v1/proxy/certificates/details/7"
    away = proxy.forward("GET", "redirect-away", token)
    assert away.headers["location"] == "https://example.com/elsewhere"
    assert [p for p in proxy.seen.paths() if p.startswith("/certificates")] == []


def test_the_upstream_status_is_passed_on(proxy: ProxyEnv) -> None:
    token = proxy.token()
    for status in (201, 204, 400, 404, 418, 500, 503):
        assert proxy.forward("GET", f"status/{status}", token).status_code == status


def test_refusals_carry_the_contract_statuses(proxy: ProxyEnv) -> None:
    token = proxy.token(scope="certificates_only")
    assert proxy.client.get("/api/v1/proxy/status").status_code == 401
    assert proxy.status("not-a-token").status_code == 401
    no_device = proxy.client.get(
        "/api/v1/proxy/certificates/filter", headers={"X-Access-Token": token}
    )
    assert no_device.status_code == 403
    assert proxy.forward("GET", "certificates/filter", token, device="short").status_code == 400
    assert proxy.forward("GET", "certificates/filter", token, device="x" * 256).status_code == 400
    assert proxy.forward("GET", "certificates/filter", "wrong-token").status_code == 401
    no_token = proxy.client.get(
        "/api/v1/proxy/certificates/filter", headers={"X-Device-ID": "device-aaaa-1"}
    )
    assert no_token.status_code == 401
    assert proxy.forward("GET", "admin/users", token).status_code == 403
    # A refused path neither activated the token nor reached the upstream.
    assert proxy.status(token).json()["status"] == "ready"
    assert proxy.seen.paths() == []


def test_upstream_down_is_502_and_says_nothing_internal(
    tmp_path: Path, engine: Engine, upstream: tuple[str, Seen]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    for env in start_proxy(tmp_path, engine, upstream, upstream_url=closed):
        response = env.forward("GET", "anything", env.token())
        assert response.status_code == 502
        assert response.json()["detail"] == "Upstream server unavailable"
        assert "127.0.0.1" not in response.text
        assert str(closed.rsplit(":", 1)[1]) not in response.text


def test_upstream_timeout_is_504(
    tmp_path: Path, engine: Engine, upstream: tuple[str, Seen]
) -> None:
    settings = UpstreamSettings(url=upstream[0], read_timeout_seconds=0.3)
    for env in start_proxy(tmp_path, engine, upstream, upstream=settings):
        response = env.forward("GET", "stall", env.token())
        assert response.status_code == 504
        assert response.json()["detail"] == "Upstream server timed out"
        assert upstream[0] not in response.text


def test_rate_limit_per_token_is_a_real_429(
    tmp_path: Path, engine: Engine, upstream: tuple[str, Seen]
) -> None:
    for env in start_proxy(
        tmp_path, engine, upstream, proxy=ProxySettings(rate_limit_per_minute=3)
    ):
        token, other = env.token(), env.token()
        assert [env.forward("GET", "a", token).status_code for _ in range(3)] == [200] * 3
        limited = env.forward("GET", "a", token)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert env.forward("GET", "a", other).status_code == 200, "limits are per token"


def test_bodies_stream_both_ways_and_usage_is_recorded(proxy: ProxyEnv) -> None:
    token = proxy.token()
    size = 100 * 1024 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    digest = hashlib.sha256()
    received = 0
    with proxy.client.stream(
        "GET",
        f"/api/v1/proxy/download?size={size}",
        headers={"X-Access-Token": token, "X-Device-ID": "device-aaaa-1"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        for chunk in response.iter_raw():
            received += len(chunk)
            digest.update(chunk)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert received == size
    block = bytes(range(256)) * 256
    expected = hashlib.sha256()
    for offset in range(0, size, len(block)):
        expected.update(block[: min(len(block), size - offset)])
    assert digest.hexdigest() == expected.hexdigest()
    # Client, proxy and upstream share this process: none of them held the 100 MB.
    assert grown_kib < 50 * 1024

    upload = 20 * 1024 * 1024
    piece = b"z" * (256 * 1024)

    def chunks():
        for _ in range(upload // len(piece)):
            yield piece

    up = proxy.forward("PUT", "upload", token, content=chunks())
    assert up.status_code == 200, up.text
    assert up.json()["body_size"] == upload
    assert up.json()["body_sha256"] == hashlib.sha256(piece * (upload // len(piece))).hexdigest()

    small = proxy.forward("POST", "echo", token, content=b"x" * 1000)
    proxy.flush()
    token_id = proxy.status(token).json()["token_id"]
    [session] = sessions(proxy, token_id)
    assert session.request_count == 3
    assert session.bytes_in == upload + 1000
    assert session.bytes_out == size + len(up.content) + len(small.content)
    assert session.device_id == "device-aaaa-1"
    assert session.ip == "127.0.0.1"
    assert session.user_agent is not None
    assert session.user_agent.startswith("python-httpx")


def test_a_session_idle_for_the_timeout_releases_the_token(proxy: ProxyEnv) -> None:
    token = proxy.token()
    assert proxy.forward("GET", "a", token, device="first-device").status_code == 200
    assert proxy.forward("GET", "a", token, device="second-device").status_code == 409
    proxy.clock.advance(timedelta(minutes=4))
    assert proxy.forward("GET", "a", token, device="second-device").status_code == 409
    proxy.clock.advance(timedelta(minutes=1, seconds=1))
    assert proxy.forward("GET", "a", token, device="second-device").status_code == 200
    assert proxy.forward("GET", "a", token, device="first-device").status_code == 409
    token_id = proxy.status(token).json()["token_id"]
    first, second = sessions(proxy, token_id)
    assert first.ended_at == first.last_activity, "the first device's session ends at its last use"
    assert second.ended_at is None

    proxy.clock.advance(timedelta(minutes=6))
    assert CloseIdleSessions(proxy.core.uow, proxy.core.clock)() == 1
    assert all(s.ended_at is not None for s in sessions(proxy, token_id))


def test_expiry_takes_effect_and_is_reported_once(proxy: ProxyEnv) -> None:
    token = proxy.token(hours=1)
    assert proxy.forward("GET", "a", token).status_code == 200
    proxy.clock.advance(timedelta(hours=1))
    assert proxy.forward("GET", "a", token).status_code == 401
    assert proxy.status(token).status_code == 401
    report = ReportExpiredTokens(proxy.core.uow, proxy.core.clock)
    assert report() == 1
    assert report() == 0
    [expired] = events(proxy, "token.expired")
    assert json.dumps(expired)


def test_revoke_and_ban_take_effect_on_the_next_request(proxy: ProxyEnv) -> None:
    owner = proxy.user()
    unused = proxy.token(owner)
    assert proxy.status(unused).json()["status"] == "ready"
    token_id = UUID(proxy.status(unused).json()["token_id"])
    # The status was cached as "ready"; the revocation tombstones it, as the API's does.
    RevokeToken(proxy.core.uow, proxy.clock, proxy.core.policy, proxy.core.access_cache)(
        TokenRevocation(owner.id, token_id)
    )
    assert proxy.status(unused).status_code == 401
    assert proxy.forward("GET", "a", unused).status_code == 401

    used = proxy.token(owner)
    assert proxy.forward("GET", "a", used).status_code == 200
    operator = proxy.user()
    with proxy.core.uow() as uow:
        stored = uow.users.get(operator.id)
        assert stored is not None
        uow.users.set_superuser(stored.id, True)
        uow.commit()
    ban = SetUserActive(proxy.core.uow, proxy.clock, proxy.core.access_cache)
    ban(AccountChange(operator.id, owner.id, enable=False))
    assert proxy.forward("GET", "a", used).status_code == 401
    assert proxy.status(used).status_code == 401
    ban(AccountChange(operator.id, owner.id, enable=True))
    assert proxy.forward("GET", "a", used).status_code == 200


def test_the_upstream_root_is_reachable_with_and_without_a_trailing_slash(
    proxy: ProxyEnv,
) -> None:
    token = proxy.token()
    for path in ("/api/v1/proxy/", "/api/v1/proxy"):
        response = proxy.client.get(
            path, headers={"X-Access-Token": token, "X-Device-ID": "device-aaaa-1"}
        )
        assert response.status_code == 200, (path, response.text)
    assert proxy.seen.paths()[-2:] == ["/", "/"]


def test_head_is_forwarded(proxy: ProxyEnv) -> None:
    token = proxy.token(scope="certificates_only")
    response = proxy.forward("HEAD", "certificates/filter?q=1", token)
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert response.headers["content-type"] == "application/json"
    [seen] = proxy.seen.requests
    assert seen["method"] == "HEAD"
    assert seen["raw_path"] == "/certificates/filter"
    assert seen["query"] == "q=1"
    # The scope holds for HEAD like for any method.
    assert proxy.forward("HEAD", "admin/users", token).status_code == 403
    assert len(proxy.seen.requests) == 1


def test_client_address_and_rewrite_headers_never_reach_the_upstream(proxy: ProxyEnv) -> None:
    spoofed = {
        "X-Real-IP": "6.6.6.6",
        "True-Client-IP": "6.6.6.6",
        "CF-Connecting-IP": "6.6.6.6",
        "X-Client-IP": "6.6.6.6",
        "X-Original-URL": "/admin/users",
        "X-Rewrite-URL": "/admin/users",
        "X-Forwarded-Prefix": "/admin",
    }
    response = proxy.forward("GET", "echo", proxy.token(), headers=spoofed)
    assert response.status_code == 200, response.text
    names = {name for name, _ in response.json()["headers"]}
    assert names.isdisjoint(name.lower() for name in spoofed), names
    assert "6.6.6.6" not in response.text
    assert "/admin" not in response.text


def test_post_to_the_status_route_is_a_405_naming_get(proxy: ProxyEnv) -> None:
    token = proxy.token()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = proxy.client.request(
            method,
            "/api/v1/proxy/status",
            headers={"X-Access-Token": token, "X-Device-ID": "device-aaaa-1"},
            content=b"{}",
        )
        assert response.status_code == 405, (method, response.text)
        assert "GET" in [m.strip() for m in response.headers["allow"].split(",")]
        assert response.json()["detail"]
    assert proxy.seen.requests == [], "never forwarded"


def test_status_is_served_from_the_cache_and_revocation_clears_it(proxy: ProxyEnv) -> None:
    owner = proxy.user()
    token = proxy.token(owner)
    token_hash = hash_access_token(token)
    assert proxy.status(token).json()["status"] == "ready"
    # The status call filled the cache: the next one needs no database.
    assert proxy.core.access_cache.get(ready_key(token_hash)) is not None
    assert proxy.status(token).json()["status"] == "ready"

    login = proxy.client.post(
        "/api/v1/auth/login", json={"email": owner.email, "password": "correct horse"}
    )
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    token_id = proxy.status(token).json()["token_id"]
    revoked = proxy.client.delete(f"/api/v1/tokens/{token_id}", headers=bearer)
    assert revoked.status_code == 200, revoked.text
    assert proxy.status(token).status_code == 401
    assert proxy.forward("GET", "a", token).status_code == 401


def test_activation_turns_a_cached_ready_status_active(proxy: ProxyEnv) -> None:
    token = proxy.token()
    assert proxy.status(token).json()["status"] == "ready"
    assert proxy.forward("GET", "a", token).status_code == 200
    active = proxy.status(token).json()
    assert active["status"] == "active"
    assert active["is_activated"] is True
    assert active["expires_at"] is not None
    proxy.clock.advance(timedelta(hours=25))
    assert proxy.status(token).status_code == 401


def test_a_download_the_client_abandons_stops_being_read_from_the_upstream(
    proxy: ProxyEnv,
) -> None:
    token = proxy.token()
    size = 200 * 1024 * 1024
    with proxy.client.stream(
        "GET",
        f"/api/v1/proxy/download?size={size}",
        headers={"X-Access-Token": token, "X-Device-ID": "device-aaaa-1"},
    ) as response:
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received >= 1024 * 1024:
                break
    # Leaving the block before the end closes the connection: the client has hung up.
    token_id = proxy.status(token).json()["token_id"]

    def counted():
        proxy.flush()
        found = sessions(proxy, token_id)
        return found if found and found[0].request_count == 1 else None

    [session] = eventually(counted, timeout=30, what="the abandoned download counted")
    assert received <= session.bytes_out < size // 4
