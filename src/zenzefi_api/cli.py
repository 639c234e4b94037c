"""The `zenzefi` command: serve, run jobs, migrate, manage operators and audit the ledger.

Commands that only need the database (migrate, admin, check-ledger) import nothing from the web
or queue frameworks, so they work where only the core is installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from zenzefi_core.bootstrap import Core
from zenzefi_core.errors import DomainError
from zenzefi_core.services.accounts import CreateSuperuser
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.settings import Settings

#: How long a stopping server lets running requests finish before it closes their connections.
GRACEFUL_SHUTDOWN_SECONDS = 10


def _serve(core: Core, args: argparse.Namespace) -> int:
    """Serve the API until SIGINT or SIGTERM; the app's lifespan applies migrations first."""
    # The web stack is imported here only, so the database commands run without it.
    import uvicorn

    from zenzefi_api.access_log import configure_logging
    from zenzefi_api.app import create_app

    configure_logging()
    uvicorn.run(
        create_app(core.settings, core),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
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
    report = CheckLedger(core.uow)()
    print(report.render())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zenzefi",
        description="Zenzefi: ZNC wallet, access tokens and the authenticating proxy.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="apply migrations and serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.set_defaults(run=_serve)

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
        help="verify balance = sum of ledger entries and balance >= 0 for every user",
    ).set_defaults(run=_check_ledger)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    core = Core.from_settings(Settings())
    try:
        return int(args.run(core, args))
    except DomainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        core.close()


if __name__ == "__main__":
    sys.exit(main())
