"""The scope table over the wire: each attempt sent byte for byte to the running proxy, with a
recording upstream to show what was actually forwarded and how a servlet container would read it
(tests/servlet.py)."""

from __future__ import annotations

import itertools
import socket
from urllib.parse import urlsplit

import pytest

from tests import servlet
from tests.proxy.conftest import ProxyEnv
from tests.unit.test_scope import ESCAPES, OTHER_ATTEMPTS
from zenzefi_core.domain.tokens import TokenScope
from zenzefi_core.proxy_scope import encode_path, in_scope, normalise_path

CERTS = TokenScope.CERTIFICATES_ONLY


def raw_get(url: str, target: str, headers: dict[str, str]) -> int:
    """Send a request line exactly as given (no client library tidying the path); the status."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    return int(status_line.split(" ")[1])


def test_no_attempt_reaches_the_upstream_outside_the_scope(proxy: ProxyEnv) -> None:
    token = proxy.token(scope="certificates_only")
    headers = {"X-Access-Token": token, "X-Device-ID": "desktop-0001"}
    forwarded_any = False
    for attempt in ESCAPES + OTHER_ATTEMPTS:
        before = len(proxy.seen.requests)
        status = raw_get(proxy.url, "/api/v1/proxy/" + attempt, headers)
        arrived = proxy.seen.paths()[before:]
        if status in (400, 403):
            assert arrived == [], (attempt, arrived)
            continue
        assert status == 200, (attempt, status)
        forwarded_any = True
        # What reached the upstream is exactly the path that passed the check...
        checked = normalise_path(attempt)
        assert in_scope(CERTS, checked)
        assert arrived == [encode_path(checked, trailing_slash=attempt.endswith("/"))]
        # ...and a servlet container reads it inside the scope, however it is configured.
        for order, rounds in itertools.product(servlet.ORDERS, servlet.ROUNDS):
            reading = servlet.resolve(arrived[0], order=order, rounds=rounds)
            assert reading is not None, (attempt, order)
            assert in_scope(CERTS, reading), (attempt, order, reading)
    assert forwarded_any, "the table has attempts that are legitimately inside"


@pytest.mark.parametrize(
    "attempt",
    [
        "certificates/filter/..;/..;/users/currentUser",
        "certificates/filter/%2e%2e%3b/%2e%2e%3b/users/currentUser",
        "certificates/filter/..%3B/..%3B/users/currentUser",
    ],
)
def test_the_reported_escapes_are_a_400(proxy: ProxyEnv, attempt: str) -> None:
    token = proxy.token(scope="certificates_only")
    headers = {"X-Access-Token": token, "X-Device-ID": "desktop-0001"}
    assert raw_get(proxy.url, "/api/v1/proxy/" + attempt, headers) == 400
    assert proxy.seen.paths() == []
