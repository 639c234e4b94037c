"""The production shape on a real Redis: the Redis broker between the process that commits and
a worker, a broker that is down at commit time, and several schedulers sharing one lock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import dramatiq
import pytest
import redis

from tests.notifications import SmtpServer, eventually, free_port
from tests.worker.conftest import account, debit
from zenzefi_core.bootstrap import Core
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.settings import Settings
from zenzefi_worker.app import Job, WorkerApp
from zenzefi_worker.broker import build_broker, redis_client
from zenzefi_worker.scheduler import RedisCoordination, Scheduler

pytestmark = pytest.mark.redis


AppMaker = Callable[[Settings], WorkerApp]


@pytest.fixture
def make_app() -> Iterator[AppMaker]:
    """Builds a core and a `WorkerApp` on the broker its settings name; closes them after."""
    made: list[WorkerApp] = []

    def make(settings: Settings) -> WorkerApp:
        core = Core.from_settings(settings, hasher=fast_password_hasher())
        app = WorkerApp(core, build_broker(settings))
        made.append(app)
        return app

    yield make
    for app in made:
        app.broker.close()
        client = getattr(app.broker, "client", None)
        if client is not None:
            client.close()
        app.core.close()


def consume(app: WorkerApp) -> dramatiq.Worker:
    worker = dramatiq.Worker(app.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    return worker


def test_an_email_travels_through_redis_once(
    make_app: AppMaker, redis_settings: Callable[..., Settings], smtp: SmtpServer
) -> None:
    settings = redis_settings()
    api = make_app(settings)  # the process that commits and enqueues
    worker_side = make_app(settings)  # a `zenzefi worker` process
    worker = consume(worker_side)
    try:
        alice = account(api.core, "alice", balance="15.00")
        debit(api.core, alice, "8.00")
        (received,) = smtp.wait_for(1)
        assert received.rcpt_tos == ["alice@example.com"]
        assert received.message["Subject"] == "Low balance alert"
        assert "7.00 ZNC" in received.text
        eventually(lambda: _sent_count(api.core) == 1, what="the log to record the email as sent")
        for queue in ("events", "emails"):
            worker_side.broker.join(queue, timeout=10_000)
    finally:
        worker.stop(timeout=5_000)
    assert len(smtp.messages()) == 1


def _sent_count(core: Core) -> int:
    with core.uow() as uow:
        page = uow.notifications.list_entries(limit=10, offset=0)
    return sum(1 for n in page.items if n.state.value == "sent")


def test_a_broker_down_at_commit_is_caught_up_by_the_relay(
    make_app: AppMaker, redis_settings: Callable[..., Settings], smtp: SmtpServer
) -> None:
    # Nothing listens on this port: the broker is down when the debit commits.
    down = make_app(redis_settings(f"redis://127.0.0.1:{free_port()}/0"))
    alice = account(down.core, "alice", balance="15.00")
    debit(down.core, alice, "8.00")  # succeeds: the event waits in the outbox
    with down.core.uow() as uow:
        (waiting,) = uow.outbox.pending(limit=10)
    assert waiting.event_type == "balance.low"
    assert "left pending (broker unavailable)" in down.run_job("outbox-relay")
    assert smtp.messages() == []

    # The broker is back: the scheduler's relay hands the event over, a worker sends it.
    up = make_app(redis_settings())
    worker = consume(up)
    try:
        assert up.run_job("outbox-relay").startswith("outbox-relay: 1 event(s) handed")
        (received,) = smtp.wait_for(1)
        assert received.rcpt_tos == ["alice@example.com"]
    finally:
        worker.stop(timeout=5_000)
    with up.core.uow() as uow:
        assert uow.outbox.pending(limit=10) == []


# --- schedulers ------------------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, int] = {}

    def job(self, name: str, interval: float) -> Job:
        def run() -> str:
            with self.lock:
                self.runs[name] = self.runs.get(name, 0) + 1
            return f"{name} ran"

        return Job(name, interval, run)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis_client(redis_url)
    yield client
    client.close()


def scheduler(
    client: redis.Redis, namespace: str, jobs: list[Job], *, ttl: float = 1.0
) -> Scheduler:
    coordination = RedisCoordination(client, namespace, lock_ttl_seconds=ttl)
    return Scheduler(jobs, coordination, lock_ttl_seconds=ttl, tick_seconds=0.02)


def test_of_two_schedulers_one_is_active_and_each_job_runs_once_per_interval(
    client: redis.Redis, redis_namespace: str
) -> None:
    counter = Counter()
    # Intervals far longer than the test: each job is due exactly once within it.
    jobs = [counter.job(name, 600) for name in ("outbox-relay", "token-expiry-scan")]
    first = scheduler(client, redis_namespace, jobs)
    second = scheduler(client, redis_namespace, jobs)
    first.start()
    second.start()
    try:
        eventually(lambda: len(counter.runs) == 2, what="both jobs to run")
        eventually(lambda: first.is_active != second.is_active, what="one active scheduler")
        active, standby = (first, second) if first.is_active else (second, first)

        # The active one stops: the other takes over, and runs nothing again before its time.
        active.stop(timeout=5)
        eventually(lambda: standby.is_active, what="the standby to take over")
        assert not active.is_active
    finally:
        first.stop(timeout=5)
        second.stop(timeout=5)
    assert counter.runs == {"outbox-relay": 1, "token-expiry-scan": 1}


def test_a_scheduler_that_dies_is_replaced_when_its_lock_runs_out(
    client: redis.Redis, redis_namespace: str
) -> None:
    # A scheduler that took the lock and died: it never renews, never releases.
    dead = RedisCoordination(client, redis_namespace, lock_ttl_seconds=0.5)
    assert dead.acquire()
    counter = Counter()
    survivor = scheduler(client, redis_namespace, [counter.job("token-expiry-scan", 600)])
    survivor.start()
    try:
        assert not survivor.is_active
        eventually(lambda: survivor.is_active, what="the survivor to take the expired lock")
        eventually(lambda: counter.runs.get("token-expiry-scan") == 1, what="the job to run")
    finally:
        survivor.stop(timeout=5)
    assert not dead.renew(), "the dead scheduler's lock belongs to the survivor now"


def test_the_active_scheduler_keeps_its_lock_through_a_long_job(
    client: redis.Redis, redis_namespace: str
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "slow done"

    first = scheduler(client, redis_namespace, [Job("slow", 600, slow)], ttl=1.0)
    second = scheduler(client, redis_namespace, [Job("slow", 600, slow)], ttl=1.0)
    first.start()
    try:
        assert started.wait(10)
        second.start()
        # More than a lock lifetime passes while the job runs: the lock is renewed meanwhile.
        for _ in range(4):
            threading.Event().wait(0.4)
            assert first.is_active
            assert not second.is_active
    finally:
        release.set()
        first.stop(timeout=5)
        second.stop(timeout=5)


def test_jobs_that_fail_do_not_stop_the_scheduler(
    client: redis.Redis, redis_namespace: str
) -> None:
    counter = Counter()

    def broken() -> str:
        raise RuntimeError("job failed")

    runner = scheduler(
        client, redis_namespace, [Job("broken", 600, broken), counter.job("after", 600)]
    )
    runner.start()
    try:
        eventually(lambda: counter.runs.get("after") == 1, what="the job after the broken one")
    finally:
        runner.stop(timeout=5)
