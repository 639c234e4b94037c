"""The worker's commands as an operator runs them, in separate processes: `zenzefi serve` on the
embedded default writing emails to its mailbox, `zenzefi jobs run`, and the production shape with
`zenzefi worker` and `zenzefi scheduler` processes on PostgreSQL and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage as MimeMessage
from pathlib import Path

import httpx
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine

from tests.conftest import _truncate
from tests.notifications import SmtpServer, eventually, first_use, free_port, start_clock
from tests.worker.conftest import account, debit
from zenzefi_api.cli import JOB_NAMES
from zenzefi_core.adapters.mail import MemoryMailer
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain import OutboxEvent
from zenzefi_core.errors import BrokerUnavailable
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.tokens import PurchaseToken, TokenOrder
from zenzefi_core.settings import DatabaseSettings, Settings
from zenzefi_worker.app import WorkerApp

ZENZEFI = Path(sys.executable).parent / "zenzefi"


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
        [str(ZENZEFI), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - a fixed executable and arguments
        [str(ZENZEFI), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, then the output; the process must end by itself."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def mailbox(data_dir: Path) -> list[MimeMessage]:
    folder = data_dir / "mailbox"
    if not folder.is_dir():
        return []
    return [
        message_from_bytes(path.read_bytes(), policy=email_policy.default)
        for path in sorted(folder.glob("*.eml"))
    ]


def test_the_command_knows_every_job(tmp_path: Path) -> None:
    core = Core.from_settings(Settings(data_dir=tmp_path))
    try:
        app = WorkerApp(core, StubBroker(), mailer=MemoryMailer())
        assert set(JOB_NAMES) == set(app.jobs)
    finally:
        core.close()


def test_worker_and_scheduler_need_redis(tmp_path: Path) -> None:
    env = environment(data_dir=str(tmp_path / "data"))
    for command in ("worker", "scheduler"):
        result = zenzefi(env, command)
        assert result.returncode == 2, result.stderr
        assert "needs ZENZEFI_REDIS_URL" in result.stderr


def test_jobs_run_on_the_embedded_default_writes_to_the_mailbox(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = environment(data_dir=str(data), public_url="https://zenzefi.example")
    assert zenzefi(env, "migrate").returncode == 0
    core = Core.from_settings(Settings(data_dir=data), hasher=fast_password_hasher())
    try:
        alice = account(core, "alice", balance="100.00")
        purchased = PurchaseToken(core.uow, core.clock, core.policy)(
            TokenOrder(user_id=alice.id, duration_hours=12)
        )
        start_clock(core.uow, purchased.token, core.clock.now() - timedelta(hours=1))
    finally:
        core.close()

    first = zenzefi(env, "jobs", "run", "token-expiry-scan")
    assert first.returncode == 0, first.stderr
    assert "token-expiry-scan: 1 token(s)" in first.stdout
    (email,) = mailbox(data)
    assert email["To"] == "alice@example.com"
    assert email["Subject"] == "Your access token expires soon"
    assert "https://zenzefi.example/api/v1/notifications/unsubscribe?token=" in str(
        email["List-Unsubscribe"]
    )

    again = zenzefi(env, "jobs", "run", "token-expiry-scan")
    assert "token-expiry-scan: 0 token(s)" in again.stdout
    relay = zenzefi(env, "jobs", "run", "outbox-relay")
    assert relay.returncode == 0, relay.stderr
    # Nothing is left for the relay: the purchase's `token.purchased` had no webhook endpoint
    # to go to, so it was stored already dispatched, and the expiry event went out with the
    # scan that wrote it.
    assert relay.stdout.startswith("outbox-relay: 0 event(s) handed to the broker")
    assert zenzefi(env, "jobs", "run", "session-cleanup").returncode == 0
    purge = zenzefi(env, "jobs", "run", "idempotency-purge")
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout.startswith("idempotency-purge: 0 expired Idempotency-Key(s) deleted")
    assert len(mailbox(data)) == 1
    assert zenzefi(env, "jobs", "run", "nonsense").returncode == 2


def test_serve_on_the_embedded_default_sends_a_low_balance_alert_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = environment(data_dir=str(data))
    operator_account = ["--email", "op@example.com", "--username", "operator"]
    created = zenzefi(env, "admin", "create", *operator_account, "--password", "operator pw 1")
    assert created.returncode == 0, created.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(env, "serve", "--port", str(port))
    try:
        with httpx.Client(base_url=base, timeout=10) as client:

            def healthy() -> bool:
                assert server.poll() is None, "the server exited during startup"
                try:
                    return client.get("/health").status_code == 200
                except httpx.HTTPError:
                    return False

            eventually(healthy, timeout=30, what="the server to answer /health")
            operator = login(client, "op@example.com", "operator pw 1")
            body = {"email": "alice@example.com", "username": "alice", "password": "alice pw 12"}
            alice = client.post("/api/v1/auth/register", json=body).json()
            credit = f"/api/v1/admin/users/{alice['id']}/credit"
            for amount in ("15.00", "-8.00", "-1.00"):
                response = client.post(
                    credit, json={"amount": amount, "reason": "test"}, headers=operator
                )
                assert response.status_code in (200, 201), response.text

            (email,) = eventually(lambda: mailbox(data), what="an email in the mailbox")
            assert email["To"] == "alice@example.com"
            assert email["Subject"] == "Low balance alert"
    finally:
        output = stop(server)
    assert server.returncode in {0, -signal.SIGTERM}, output
    # One crossing, one alert: the second debit below the line sent nothing.
    assert len(mailbox(data)) == 1


def login(client: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


# --- production shape: PostgreSQL, Redis, SMTP, separate processes ---------------------------


class RefusingPublisher:
    def publish(self, event: OutboxEvent) -> None:
        raise BrokerUnavailable("down")


@pytest.fixture
def postgres(request: pytest.FixtureRequest) -> Iterator[Engine]:
    engine: Engine = request.getfixturevalue("postgres_engine")
    _truncate(engine)
    yield engine
    _truncate(engine)


@pytest.mark.postgres
@pytest.mark.redis
def test_separate_worker_and_scheduler_processes_deliver_each_email_once(
    postgres: Engine, redis_url: str, redis_namespace: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    env = environment(
        data_dir=str(tmp_path / "data"),
        secret_key="production-shape-secret-" + "p" * 40,
        database_url=postgres.url.render_as_string(hide_password=False),
        redis_url=redis_url,
        redis_namespace=redis_namespace,
        smtp_host="127.0.0.1",
        smtp_port=str(smtp.port),
        smtp_starttls="false",
        scheduler_outbox_relay_seconds="0.5",
        scheduler_token_expiry_scan_seconds="0.5",
        scheduler_lock_ttl_seconds="2",
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database=DatabaseSettings(url=env["ZENZEFI_DATABASE_URL"]),
    )
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    try:
        # The API process commits while the broker is down: the events wait in the outbox.
        core.publisher = RefusingPublisher()
        alice = account(core, "alice", balance="15.00")
        referrer = account(core, "ref", balance="100.00")
        buyer = account(core, "buyer", balance="50.00", referrer=referrer)
        debit(core, alice, "8.00")  # low balance
        purchased = PurchaseToken(core.uow, core.clock, core.policy)(
            TokenOrder(user_id=buyer.id, duration_hours=12)
        )
        first_use(core, purchased.token)  # a referral bonus; and it expires within 24 h
    finally:
        core.close()

    schedulers = [start(env, "scheduler"), start(env, "scheduler")]
    workers = start(env, "worker", "--processes", "1", "--threads", "2")
    try:
        received = smtp.wait_for(3, timeout=60)
    finally:
        outputs = [stop(process) for process in [*schedulers, workers]]
    subjects = sorted((r.rcpt_tos[0], r.message["Subject"]) for r in received)
    assert subjects == [
        ("alice@example.com", "Low balance alert"),
        ("buyer@example.com", "Your access token expires soon"),
        ("ref@example.com", "You earned a referral bonus!"),
    ], outputs
    assert len(smtp.messages()) == 3
    assert all(p.returncode in {0, -signal.SIGTERM} for p in [*schedulers, workers]), outputs
