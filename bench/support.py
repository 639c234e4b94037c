"""What several bench scripts share: loopback ports, the PostgreSQL URL and processes of a run,
CPU accounting from /proc, Redis clean-up and logging in through the API.

The scripts run as `python bench/<name>.py`, which puts this folder on `sys.path`, so they
import it as `support`. Only helpers that behave the same for every script live here; a
script whose copy behaves differently on purpose keeps its own.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import redis
from psycopg import conninfo

#: PostgreSQL's own writers, which work for every database; counted with the bench's backends.
POSTGRES_HELPERS = ("walwriter", "checkpointer", "background writer")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def database_url(dsn: str) -> str:
    """The libpq connection string as the URL `ZENZEFI_DATABASE_URL` takes."""
    params = conninfo.conninfo_to_dict(dsn)
    user = params.get("user", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    return f"postgresql://{user}{password}@{host}:{port}/{params['dbname']}"


@contextlib.contextmanager
def redis_namespace(url: str | None, namespace: str) -> Iterator[None]:
    """On the way out, delete every Redis key under the run's namespace (and nothing else);
    without a Redis URL there is nothing to delete."""
    try:
        yield
    finally:
        if url:
            client = redis.Redis.from_url(url)
            try:
                keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
            finally:
                client.close()


def login(http: httpx.Client, email: str, password: str) -> str:
    """The access token of a bench account."""
    response = http.post("/api/v1/auth/login", json={"email": email, "password": password})
    response.raise_for_status()
    return str(response.json()["access_token"])


# --- CPU time from /proc (Linux) --------------------------------------------------------------


def _ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def postgres_pids(database: str) -> list[int]:
    """The backends serving `database`, plus the server's WAL and checkpoint writers (other
    databases' backends are left out: the machine may be busy with other work)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if f" {database} " in title or any(helper in title for helper in POSTGRES_HELPERS):
                pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds used by groups of processes between `start` and `stop` (Linux /proc)."""

    def __init__(self, groups: dict[str, Callable[[], Sequence[int]]]) -> None:
        self._groups = groups
        self._before: dict[str, dict[int, int]] = {}

    def _read(self) -> dict[str, dict[int, int]]:
        return {name: {pid: _ticks(pid) for pid in pids()} for name, pids in self._groups.items()}

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        hertz = os.sysconf("SC_CLK_TCK")
        used = {}
        for name, ticks in after.items():
            before = self._before.get(name, {})
            used[name] = sum(t - before.get(pid, 0) for pid, t in ticks.items()) / hertz
        return used
