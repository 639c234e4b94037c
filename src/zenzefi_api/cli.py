"""The `zenzefi` command: serve, run jobs, migrate, manage operators and audit the ledger.

Commands that only need the database (migrate, admin, check-ledger) import nothing from the web
or queue frameworks, so they work where only the core is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from zenzefi_core.bootstrap import Core
from zenzefi_core.errors import DomainError
from zenzefi_core.services.accounts import CreateSuperuser
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.settings import SecretKeyError, Settings

#: How long a stopping server lets running requests finish before it closes their connections.
GRACEFUL_SHUTDOWN_SECONDS = 10
#: How long an idle keep-alive connection stays open. Longer than the idle timeouts of HTTP
#: clients (httpx: 5 s) and of the usual load balancers (60 s in nginx and AWS's; a balancer
#: that keeps them longer, such as Google Cloud's (about ten minutes), needs `--keep-alive` above
#: its own), so the other side always closes first: when both sides give up at the same moment,
#: a request sent just as the server closes is dropped unanswered. Uvicorn's own default is 5 s,
#: the same as httpx's, and the load test (bench/load.py) lost requests to exactly that.
KEEP_ALIVE_SECONDS = 75
#: The jobs `zenzefi jobs run` knows (`zenzefi_worker.app.WorkerApp.jobs`).
JOB_NAMES = ("outbox-relay", "token-expiry-scan", "session-cleanup", "idempotency-purge")


def _serve(core: Core, args: argparse.Namespace) -> int:
    """Serve the API until SIGINT or SIGTERM; the app's lifespan applies migrations first."""
    # The web stack is imported here only, so the database commands run without it.
    import uvicorn

    from zenzefi_api.access_log import configure_logging
    from zenzefi_api.app import create_app
    from zenzefi_api.serving import settle_heap
    from zenzefi_worker.runtime import alongside_api

    configure_logging()
    # Before the worker starts: on the embedded default the scheduler's first jobs run at once.
    core.migrate()
    options = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_keep_alive": args.keep_alive,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }
    if args.workers > 1:
        return _serve_processes(core, args.workers, options)
    # Events go to the broker right after each commit; without Redis the worker and the
    # scheduler run in this process too.
    with alongside_api(core):
        app = create_app(core.settings, core)
        app.on_startup.append(settle_heap)
        uvicorn.run(app, **options)
    return 0


def _serve_processes(core: Core, workers: int, options: dict[str, Any]) -> int:
    """`workers` API processes on one port (see `zenzefi_api.serving` and
    `zenzefi_api.supervisor`). Without Redis the worker and the scheduler run here, once."""
    import logging

    import uvicorn

    from zenzefi_api.serving import APP_FACTORY, EMBEDDED_CACHE_SECONDS, EMBEDDED_RELAY_SECONDS
    from zenzefi_api.supervisor import Supervisor
    from zenzefi_worker.runtime import alongside_api

    logger = logging.getLogger("zenzefi.serve")
    # Made (or read) here, before the processes start, so they never race to make their own.
    core.settings.resolved_secret_key()
    supervisor = Supervisor(uvicorn.Config(APP_FACTORY, factory=True, **options), workers)
    try:
        if core.settings.redis.url:
            # Each API process hands its events to Redis itself; nothing runs beside them here.
            return supervisor.run()
        logger.warning(
            "%d API processes without ZENZEFI_REDIS_URL: each keeps its own proxy token cache "
            "(entries live %.0f s at most, so a ban made through one process reaches the "
            "others' proxies within that) and its own rate-limit windows; set "
            "ZENZEFI_REDIS_URL to share them",
            workers,
            EMBEDDED_CACHE_SECONDS,
        )
        with alongside_api(core, relay_seconds=EMBEDDED_RELAY_SECONDS):
            return supervisor.run()
    except OSError as error:
        address = f"{options['host']}:{options['port']}"
        print(f"error: cannot listen on {address}: {error}", file=sys.stderr)
        return 2


def _worker(core: Core, args: argparse.Namespace) -> int:
    """Dramatiq's worker processes, each wired from the environment, and the process that
    serves their metrics."""
    from zenzefi_worker.multiprocess import shared_counters

    # Before the worker modules import prometheus_client: the processes then count into
    # files there, which the metrics process adds up.
    with shared_counters():
        from zenzefi_worker.runtime import NeedsRedis, run_workers

        threads = args.threads or core.settings.worker.threads
        options = ["--processes", str(args.processes), "--threads", str(threads)]
        if args.queues:
            options += ["--queues", *args.queues]
        try:
            return run_workers(core, options)
        except NeedsRedis as error:
            print(f"error: {error}", file=sys.stderr)
            return 2


def _scheduler(core: Core, _args: argparse.Namespace) -> int:
    """The periodic jobs, active only while this scheduler holds the cluster's lock."""
    from zenzefi_api.access_log import configure_logging
    from zenzefi_worker.runtime import NeedsRedis, run_scheduler

    configure_logging()
    try:
        return run_scheduler(core)
    except NeedsRedis as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _jobs_run(core: Core, args: argparse.Namespace) -> int:
    from zenzefi_worker.runtime import run_job_once

    core.migrate()
    print(run_job_once(core, args.name))
    return 0


def _migrate(core: Core, _args: argparse.Namespace) -> int:
    core.migrate()
    print(f"Database migrated: {core.database.display_url}")
    return 0


def _admin_create(core: Core, args: argparse.Namespace) -> int:
    core.migrate()
    result = CreateSuperuser(core.uow, core.clock, core.hasher)(
        email=args.email, username=args.username, password=args.password
    )
    verb = "Created superuser" if result.created else "Promoted existing user to superuser"
    print(f"{verb}: {result.user.username} <{result.user.email}> (id {result.user.id})")
    return 0


def _check_ledger(core: Core, _args: argparse.Namespace) -> int:
    report = CheckLedger(core.uow, core.policy.referrals)()
    print(report.render())
    return 0 if report.ok else 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds >= 1, not {text!r}")
    return value


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(text: str) -> int:
    """`serve --workers`: a whole number >= 1, or `auto` for one process per usable core."""
    if text.strip().lower() == "auto":
        return usable_cores()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'auto', not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zenzefi",
        description="Zenzefi: ZNC wallet, access tokens and the authenticating proxy.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="apply migrations and serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--keep-alive",
        type=_positive_int,
        default=KEEP_ALIVE_SECONDS,
        metavar="SECONDS",
        help=f"close idle keep-alive connections after this long ({KEEP_ALIVE_SECONDS}); keep "
        "it above the load balancer's idle timeout",
    )
    serve.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        metavar="N",
        help="API processes answering on the port (1); 'auto' starts one per CPU core. SIGHUP "
        "replaces them one by one, SIGTERM lets them finish their requests and stops them",
    )
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker", help="run Dramatiq worker processes (needs ZENZEFI_REDIS_URL)"
    )
    worker.add_argument("--processes", type=int, default=2, help="worker processes (2)")
    worker.add_argument(
        "--threads", type=int, default=None, help="threads per process (ZENZEFI_WORKER_THREADS)"
    )
    worker.add_argument(
        "--queues",
        nargs="+",
        metavar="QUEUE",
        help="only these queues: events, emails, webhooks, jobs",
    )
    worker.set_defaults(run=_worker)

    commands.add_parser(
        "scheduler",
        help="run the periodic jobs, one active scheduler across the cluster (needs Redis)",
    ).set_defaults(run=_scheduler)

    jobs = commands.add_parser("jobs", help="run a scheduled job now")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    run_job = job_commands.add_parser("run", help="run one job once and print what it did")
    run_job.add_argument("name", choices=JOB_NAMES, metavar="NAME", help=", ".join(JOB_NAMES))
    run_job.set_defaults(run=_jobs_run)

    commands.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)

    admin = commands.add_parser("admin", help="manage operator accounts")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    create = admin_commands.add_parser(
        "create", help="create a superuser, or promote the user who has this email"
    )
    create.add_argument("--email", required=True)
    create.add_argument("--username", required=True)
    create.add_argument("--password", required=True)
    create.set_defaults(run=_admin_create)

    commands.add_parser(
        "check-ledger",
        help="verify every wallet (balance = sum of its entries, never negative) and the money "
        "supply (every entry has its cause; no referral bonus exceeds what stayed paid)",
    ).set_defaults(run=_check_ledger)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        if settings.secret_key is None and (settings.data_dir / "secret_key").exists():
            # A damaged key file stops every command at once, not the first signature.
            settings.resolved_secret_key()
    except ValidationError as error:
        # Each setting's name and the reason only: the input may be a secret.
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"])
            print(f"error: setting {name}: {problem['msg']}", file=sys.stderr)
        return 2
    except SecretKeyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    core = Core.from_settings(settings)
    try:
        return int(args.run(core, args))
    except (DomainError, SecretKeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        core.close()


if __name__ == "__main__":
    sys.exit(main())
