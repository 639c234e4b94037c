"""Private servers for the fault tests, which stop and start them on purpose.

The shared PostgreSQL and Redis serve every other test at the same time, so they are never
touched here: each test process gets a PostgreSQL cluster (initdb into a temporary folder, its
own port, fsync off) and a redis-server of its own, for the whole session. A test that stops one
starts it again before it ends. Without the binaries the tests skip with the reason, or fail
when ZENZEFI_REQUIRE_SERVICES=1, like the other service tests (tests/conftest.py).

Helpers here run the `zenzefi` command the way an operator does (`serve`, `worker`,
`scheduler`, `check-ledger`) with the private servers in its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email import policy as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.conftest import service_unavailable
from tests.notifications import eventually, free_port
from tests.shop import open_account
from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork, make_engine, upgrade
from zenzefi_core.clock import FixedClock
from zenzefi_core.ports import UnitOfWorkFactory

ZENZEFI = Path(sys.executable).parent / "zenzefi"
SECRET_KEY = "fault-tests-secret-" + "f" * 48
#: The migrated database each test's database is copied from.
TEMPLATE = "fault_template"
#: The accounts in the template (`<name>@example.com`, password `PASSWORD`).
OPERATOR = "operator"
CUSTOMER = "alice"
CUSTOMER_FUNDS = "100000.00"
PASSWORD = "correct horse"


def _run(command: list[str], *, user: str | None = None) -> None:
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    result = subprocess.run(  # noqa: S603 - fixed binaries and arguments
        command, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}")


class PrivatePostgres:
    """A PostgreSQL cluster of this test process, on 127.0.0.1 and a port of its own."""

    def __init__(self, bindir: Path, root: Path, user: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.user = user
        self.port = free_port()

    def _pg(self, *args: str) -> None:
        _run([str(self.bindir / args[0]), *args[1:]], user=self.user)

    def init(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        options = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            # Safe while the machine itself stays up: the operating system keeps what was
            # written. (Not synchronous_commit=off: a crash of the server, which the tests
            # cause, would lose the last commits it had already confirmed.)
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in options.items())

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


class PrivateRedis:
    """A redis-server of this test process, without persistence: a restart empties it."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(  # noqa: S603 - a fixed binary and arguments
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:

            def answers() -> bool:
                assert self.process is not None
                assert self.process.poll() is None, "redis-server exited"
                try:
                    return bool(client.ping())
                except redis.RedisError:
                    return False

            eventually(answers, timeout=10, what="the private Redis")
        finally:
            client.close()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel and nothing answers (a hung Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = Path(found[-1]) if found else None
    if initdb is None:
        on_path = shutil.which("initdb")
        initdb = Path(on_path) if on_path else None
    if initdb is None:
        service_unavailable("PostgreSQL's initdb", FileNotFoundError("no initdb binary"))
    assert initdb is not None
    user = None
    root = Path(tempfile.mkdtemp(prefix="zenzefi-fault-pg-"))
    if os.geteuid() == 0:
        # initdb refuses to run as root: the cluster belongs to the postgres user.
        try:
            account = pwd.getpwnam("postgres")
        except KeyError as error:
            shutil.rmtree(root)
            service_unavailable("a postgres user to run initdb as", error)
        user = "postgres"
        os.chown(root, account.pw_uid, account.pw_gid)
    server = PrivatePostgres(initdb.parent, root, user)
    try:
        server.init()
        server.start()
    except Exception as error:
        shutil.rmtree(root, ignore_errors=True)
        service_unavailable("a private PostgreSQL cluster", error)
    # Migrated once; each test's database is a copy, so no process it starts has to migrate.
    admin = make_engine(server.url(), isolation_level="AUTOCOMMIT", pool_size=1)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{TEMPLATE}"'))
    admin.dispose()
    template = make_engine(server.url(TEMPLATE), pool_size=1)
    upgrade(template)
    _open_accounts(lambda: SqlAlchemyUnitOfWork(template))
    template.dispose()
    yield server
    with contextlib.suppress(Exception):
        server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


def _open_accounts(uow_factory: UnitOfWorkFactory) -> None:
    """The operator and a customer with plenty of ZNC, in the template: cheap password hashes,
    so logging in costs the tests next to nothing."""
    clock = FixedClock(datetime.now(UTC))
    open_account(uow_factory, clock, OPERATOR, superuser=True)
    open_account(uow_factory, clock, CUSTOMER, balance=CUSTOMER_FUNDS)


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        service_unavailable("redis-server", FileNotFoundError("no redis-server binary"))
    assert binary is not None
    server = PrivateRedis(binary, tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except Exception as error:
        service_unavailable("a private redis-server", error)
    yield server
    server.stop()


@dataclass
class FaultDatabase:
    """A migrated database of one test on the private cluster."""

    server: PrivatePostgres
    name: str
    engines: list[Engine] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def engine(self) -> Engine:
        """An engine for the test's own look at the tables (small pool, pre-ping)."""
        engine = make_engine(self.url, pool_size=2, max_overflow=0)
        self.engines.append(engine)
        return engine

    def scalar(self, sql: str) -> object:
        engine = self.engines[0] if self.engines else self.engine()
        with engine.connect() as connection:
            return connection.execute(text(sql)).scalar_one()

    def execute(self, sql: str) -> int:
        """Run a change and commit it; the number of rows it touched."""
        engine = self.engines[0] if self.engines else self.engine()
        with engine.begin() as connection:
            return connection.execute(text(sql)).rowcount


@pytest.fixture
def fault_database(private_postgres: PrivatePostgres) -> Iterator[FaultDatabase]:
    if not private_postgres.running():
        private_postgres.start()
    admin = make_engine(private_postgres.url(), isolation_level="AUTOCOMMIT", pool_size=1)
    name = f"fault_{secrets.token_hex(6)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    database = FaultDatabase(private_postgres, name)
    yield database
    for engine in database.engines:
        engine.dispose()
    if not private_postgres.running():
        private_postgres.start()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_up(private_redis: PrivateRedis) -> Iterator[PrivateRedis]:
    """The private Redis, running and empty at the start of the test and again after it."""
    if private_redis.process is None:
        private_redis.start()
    yield private_redis
    if private_redis.process is None:
        private_redis.start()
    import redis

    client = redis.Redis.from_url(private_redis.url)
    try:
        client.flushall()
    finally:
        client.close()


# --- the zenzefi command ----------------------------------------------------------------------


def environment(**values: str) -> dict[str, str]:
    """This interpreter's environment without any ZENZEFI_ setting, plus `values`.

    A `zenzefi worker` serves its metrics on port 9191 by default: tests running in parallel
    would fight over it, so it is off unless a test names a port of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENZEFI_")}
    env["ZENZEFI_METRICS_WORKER_PORT"] = "0"
    env.update({f"ZENZEFI_{name.upper()}": value for name, value in values.items()})
    return env


def zenzefi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - a fixed executable and arguments
        [str(ZENZEFI), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


class Process:
    """A `zenzefi` command running in a process group of its own, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self._output = log.open("w")
        self.popen = subprocess.Popen(  # noqa: S603 - a fixed executable and arguments
            [str(ZENZEFI), *args],
            env=env,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        if not self._output.closed:
            self._output.flush()
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the whole group (Dramatiq's worker processes too), as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.close()

    def close(self) -> None:
        self._output.close()

    def stop(self) -> int:
        """SIGTERM and wait; SIGKILL if it does not end within 20 s."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.close()
        return self.popen.returncode


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    """Starts `zenzefi` processes and stops whatever is still running when the test ends."""
    started: list[Process] = []

    def start(env: dict[str, str], log: Path, *args: str) -> Process:
        process = Process(env, log, *args)
        started.append(process)
        return process

    yield start
    # What a test did not stop itself is killed: its outcome is already judged.
    for process in started:
        if process.alive():
            process.kill()
        else:
            process.close()


def wait_healthy(base: str, server: Process, timeout: float = 30.0) -> None:
    def healthy() -> bool:
        assert server.alive(), f"the server exited during startup:\n{server.output()}"
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    eventually(healthy, timeout=timeout, what="the server to answer /health")


def start_api(
    start: Callable[..., Process], env: dict[str, str], folder: Path
) -> tuple[str, Process]:
    """`zenzefi serve` on a free port: its base URL and its process, once it is healthy."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(env, folder / "serve.log", "serve", "--port", str(port))
    wait_healthy(base, server)
    return base, server


def login(client: httpx.Client, username: str) -> dict[str, str]:
    response = client.post(
        "/api/v1/auth/login",
        json={"email": f"{username}@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@dataclass
class Shop:
    """The operator and the funded customer of the template, logged in."""

    client: httpx.Client
    operator: dict[str, str]
    customer: dict[str, str]


def open_shop(client: httpx.Client) -> Shop:
    return Shop(client, login(client, OPERATOR), login(client, CUSTOMER))


# --- loopback servers the fault tests talk to -------------------------------------------------


class Upstream:
    """The diagnostic server behind the proxy, on loopback, with ways to die mid-answer.

    `GET /hello` answers a small JSON body. `GET /partial?size=N&send=M` announces N bytes
    (Content-Length), sends M and closes the connection; `GET /chunked?send=M` sends M bytes in
    chunks and closes without the final chunk; `GET /hang-up` reads the request and closes the
    connection without any answer.
    """

    CHUNK = 16 * 1024

    def __init__(self) -> None:
        upstream = self
        self.paths: list[str] = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with upstream.lock:
                    upstream.paths.append(self.path)
                target = urlsplit(self.path)
                query = {k: int(v[0]) for k, v in parse_qs(target.query).items()}
                if target.path == "/hang-up":
                    self.close_connection = True
                    return
                if target.path == "/partial":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(query["size"]))
                    self.end_headers()
                    self._blocks(query["send"])
                    self.close_connection = True
                    return
                if target.path == "/chunked":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    left = query["send"]
                    while left > 0:
                        size = min(upstream.CHUNK, left)
                        left -= size
                        self.wfile.write(f"{size:x}\r\n".encode() + b"z" * size + b"\r\n")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                body = json.dumps({"path": target.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _blocks(self, total: int) -> None:
                left = total
                while left > 0:
                    size = min(upstream.CHUNK, left)
                    left -= size
                    self.wfile.write(b"y" * size)
                self.wfile.flush()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


class Receiver:
    """A webhook receiver on loopback that records every message with its `webhook-id`.

    With `hold_first` set, the first message is held (no answer) until `release` is set or 20 s
    pass, so a test can act while a delivery is in flight.
    """

    def __init__(self, *, hold_first: bool = False) -> None:
        receiver = self
        self.received: list[tuple[str, dict[str, object]]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.hold_first = hold_first

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append((self.headers["webhook-id"], json.loads(body)))
                    first = len(receiver.received) == 1
                if first and receiver.hold_first:
                    receiver.release.wait(20)
                # The sender may be gone by now (killed mid-delivery): nobody to answer.
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def messages(self) -> list[tuple[str, dict[str, object]]]:
        with self.lock:
            return list(self.received)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class HoldingSmtp:
    """An SMTP server on loopback (aiosmtpd) that records each message's `Message-ID` as its
    data arrives. With `hold_first`, the first message is not acknowledged until `release` is
    set or 20 s pass, so a test can act while the sender waits for the answer."""

    def __init__(self, *, hold_first: bool = False) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.message_ids: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.hold_first = hold_first
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self._controller.start()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        content: bytes = envelope.content  # type: ignore[attr-defined]
        message = message_from_bytes(content, policy=email_policy.default)
        with self.lock:
            self.message_ids.append(str(message["Message-ID"]))
            first = len(self.message_ids) == 1
        if first and self.hold_first:
            deadline = time.monotonic() + 20
            while not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        return "250 Message accepted for delivery"

    def received(self) -> list[str]:
        with self.lock:
            return list(self.message_ids)

    def stop(self) -> None:
        self.release.set()
        self._controller.stop()
