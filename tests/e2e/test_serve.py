"""`zenzefi serve` as an operator runs it: a real process, a real socket, nothing configured."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from zenzefi_api.cli import build_parser


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during startup"
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become healthy within 30 seconds")


def test_serve_on_the_embedded_default_and_stop_gracefully(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZENZEFI_")}
    process = subprocess.Popen(  # noqa: S603 - a fixed command line
        [sys.executable, "-m", "zenzefi_api.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until_healthy(base, process)
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/health").json()["status"] == "healthy"
            assert client.get("/openapi.json").status_code == 200
            assert client.get("/docs").status_code == 200
            account = {"email": "alice@example.com", "username": "alice", "password": "s3cret pw!"}
            assert client.post("/api/v1/auth/register", json=account).status_code == 201
            login = client.post(
                "/api/v1/auth/login", json={"email": account["email"], "password": "s3cret pw!"}
            )
            token = login.json()["access_token"]
            me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json()["username"] == "alice"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    # Uvicorn finishes its shutdown, then lets SIGTERM end the process as the signal intends.
    assert process.returncode in {0, -signal.SIGTERM}, stderr.decode()

    data = tmp_path / "zenzefi-data"
    assert (data / "zenzefi.db").is_file()
    assert len((data / "secret_key").read_text().strip()) >= 32

    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.strip()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert {"method", "path", "status", "duration_ms", "request_id"} <= set(requests[-1])
    assert any(r["path"] == "/api/v1/users/me" and r["status"] == 200 for r in requests)
    assert not any("password" in json.dumps(line) for line in lines)
    messages = [line["message"] for line in lines]
    assert "Application shutdown complete." in messages


def _read_response(connection: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length, or b"" if the server closed instead."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            return received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_serve_keeps_an_idle_connection_open_longer_than_clients_do(tmp_path: Path) -> None:
    """A connection idle for longer than httpx's keep-alive expiry (5 s, also uvicorn's own
    default) still gets its next request answered. If the server gave up as early as its
    clients, a request sent just as it closed the connection would be dropped unanswered:
    the load test (bench/load.py) lost requests that way."""
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZENZEFI_")}
    process = subprocess.Popen(  # noqa: S603 - a fixed command line
        [sys.executable, "-m", "zenzefi_api.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    try:
        _wait_until_healthy(f"http://127.0.0.1:{port}", process)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(request)
            assert _read_response(connection).startswith(b"HTTP/1.1 200")
            time.sleep(5.5)
            connection.sendall(request)
            assert _read_response(connection).startswith(b"HTTP/1.1 200")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_serve_refuses_a_keep_alive_below_one_second(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--keep-alive", "0"])
    assert exited.value.code == 2
    assert "--keep-alive" in capsys.readouterr().err
    assert build_parser().parse_args(["serve", "--keep-alive", "90"]).keep_alive == 90
