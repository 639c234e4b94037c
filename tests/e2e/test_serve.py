"""`zenzefi serve` as an operator runs it: a real process, a real socket, nothing configured."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import TestClient

from zenzefi_api import access_log, serving
from zenzefi_api.cli import build_parser, main, usable_cores
from zenzefi_api.context import api_context
from zenzefi_api.serving import settle_heap
from zenzefi_worker import runtime


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    # Generous: on a machine busy with other work, starting the interpreter alone takes seconds.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during startup"
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become healthy within 120 seconds")


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


class _Output:
    """A process's combined output, read line by line as it comes, in a thread of its own."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._stream = process.stdout
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def records(self) -> list[dict[str, object]]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    def join(self) -> None:
        self._thread.join(timeout=30)
        self._stream.close()


def _request_pids(output: _Output) -> set[int]:
    return {
        int(str(record["pid"])) for record in output.records() if record.get("event") == "request"
    }


def _until_started(output: _Output, process: subprocess.Popen[str], count: int) -> None:
    """Wait until `count` API processes have finished their startup (a loaded machine may
    take many seconds to start each interpreter)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "".join(output.lines)
        started = [
            r for r in output.records() if r.get("message") == "Application startup complete."
        ]
        if len(started) >= count:
            return
        time.sleep(0.1)
    raise AssertionError("the API processes did not start within 120 seconds")


def _until_two_processes_answer(base: str, output: _Output, old: set[int]) -> None:
    """Send requests until two processes other than `old` have answered (connections opened
    at once are spread over the processes by the kernel); every one must succeed."""
    deadline = time.monotonic() + 120
    while len(_request_pids(output) - old) < 2 and time.monotonic() < deadline:
        with ThreadPoolExecutor(16) as pool:
            statuses = list(
                pool.map(lambda _: httpx.get(f"{base}/health", timeout=60).status_code, [0] * 32)
            )
        assert statuses == [200] * 32
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _login(client: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_serve_with_two_workers_on_the_embedded_default(tmp_path: Path) -> None:
    """Two API processes answer on one port, the worker and the scheduler run once (in the
    supervisor), an event committed by either process is delivered, and SIGTERM stops all."""
    zenzefi = Path(sys.executable).parent / "zenzefi"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZENZEFI_")}
    environment["ZENZEFI_DATA_DIR"] = str(tmp_path / "data")
    created = subprocess.run(  # noqa: S603 - a fixed command line
        [str(zenzefi), "admin", "create", "--email", "op@example.com", "--username", "operator",
         "--password", "operator pw 1"],
        env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(  # noqa: S603 - a fixed command line
        [str(zenzefi), "serve", "--port", str(port), "--workers", "2"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = _Output(process)
    try:
        _until_started(output, process, 2)
        # Connections opened at once are taken by whichever process is free: keep opening
        # them until both processes have answered.
        _until_two_processes_answer(base, output, set())
        first = _request_pids(output)
        assert len(first) == 2, first
        assert process.pid not in first

        # SIGHUP replaces both, one by one, and every request meanwhile is answered.
        process.send_signal(signal.SIGHUP)
        _until_two_processes_answer(base, output, first)
        pids = _request_pids(output) - first
        assert len(pids) == 2, pids
        # The last old process is told to stop once its replacement serves.
        deadline = time.monotonic() + 60
        while [pid for pid in first if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in first if _alive(pid)]

        # Each change goes through whichever process takes the connection; the low-balance
        # event lands in the outbox of the shared database and the one worker sends it.
        with httpx.Client(base_url=base, timeout=10) as client:
            operator = _login(client, "op@example.com", "operator pw 1")
            body = {"email": "alice@example.com", "username": "alice", "password": "alice pw 12"}
            alice = client.post("/api/v1/auth/register", json=body).json()
        for amount in ("15.00", "-8.00", "-1.00"):
            response = httpx.post(
                f"{base}/api/v1/admin/users/{alice['id']}/credit",
                json={"amount": amount, "reason": "test"},
                headers=operator,
                timeout=10,
            )
            assert response.status_code in (200, 201), response.text
        mailbox = tmp_path / "data" / "mailbox"
        deadline = time.monotonic() + 30
        while not list(mailbox.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (email,) = list(mailbox.glob("*.eml"))
        assert "Low balance alert" in email.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        output.join()
    assert process.returncode == 0, "".join(output.lines)
    assert not [pid for pid in pids if _alive(pid)]
    messages = [str(record.get("message")) for record in output.records()]
    assert messages.count("this scheduler is now the active one") == 1
    # Each process, the two replaced on SIGHUP and the two stopped by SIGTERM, shut down
    # cleanly: running requests done, the app's shutdown run.
    stopped = {
        record["pid"]
        for record in output.records()
        if record.get("message") == "Application shutdown complete."
    }
    assert stopped == first | pids
    # One crossing, one alert, however many processes saw the debits.
    assert len(list(mailbox.glob("*.eml"))) == 1


def test_serve_workers_takes_a_count_or_auto(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["serve"]).workers == 1
    assert build_parser().parse_args(["serve", "--workers", "3"]).workers == 3
    assert build_parser().parse_args(["serve", "--workers", "auto"]).workers == usable_cores()
    assert usable_cores() >= 1
    for wrong in ("0", "-2", "many"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["serve", "--workers", wrong])
        assert exited.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_settle_heap_collects_the_garbage_then_freezes_what_is_left() -> None:
    class Node:
        other: Node | None = None

    kept = Node()
    cycle = Node()
    cycle.other = cycle
    gone = weakref.ref(cycle)
    del cycle
    assert gc.get_freeze_count() == 0
    try:
        settle_heap()
        # The cycle was garbage: collected, not frozen for the life of the process.
        assert gone() is None
        # What was alive is frozen: a full collection no longer walks it.
        assert gc.get_freeze_count() > 0
        assert not any(obj is kept for obj in gc.get_objects())
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
    assert any(obj is kept for obj in gc.get_objects())


@pytest.mark.parametrize("workers", [1, 2])
def test_served_apps_settle_their_heap_once_started(
    workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of serving (one process: `_serve` builds the app; several: each process builds
    it with `api_process_app`) freeze the heap after the app's startup, not before."""
    for name in [k for k in os.environ if k.startswith("ZENZEFI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ZENZEFI_DATA_DIR", str(tmp_path / "data"))
    # Neither the process-wide logging set-up nor the embedded worker belongs in this process.
    monkeypatch.setattr(serving, "configure_logging", lambda: None)
    monkeypatch.setattr(access_log, "configure_logging", lambda: None)
    monkeypatch.setattr(runtime, "alongside_api", lambda core, **_: contextlib.nullcontext())
    apps: list[Litestar] = []
    if workers == 1:
        monkeypatch.setattr(uvicorn, "run", lambda app, **_: apps.append(app))
        assert main(["serve", "--port", str(_free_port())]) == 0
    else:
        apps.append(serving.api_process_app())
    (app,) = apps
    assert app.on_startup[-1] is settle_heap
    assert gc.get_freeze_count() == 0
    try:
        with TestClient(app) as client:
            assert gc.get_freeze_count() > 0
            assert client.get("/health").status_code == 200
    finally:
        gc.unfreeze()


def test_processes_without_redis_keep_a_token_for_seconds_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the supervisor without Redis, a ban made through one process cannot clear the
    others' token caches, so their entries are kept briefly whatever the setting says; a
    shorter setting stays."""
    for name in [k for k in os.environ if k.startswith("ZENZEFI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ZENZEFI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(serving, "configure_logging", lambda: None)
    for configured, kept in (("300", serving.EMBEDDED_CACHE_SECONDS), ("2", 2.0)):
        monkeypatch.setenv("ZENZEFI_PROXY_CACHE_SECONDS", configured)
        app = serving.api_process_app()
        assert api_context(app).settings.proxy.cache_seconds == kept
