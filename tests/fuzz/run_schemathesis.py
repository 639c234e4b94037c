"""Fuzz the live API with schemathesis, as a user, as an operator and without a login
(`nox -s fuzz`).

The app is served over real HTTP on a free loopback port, on a fresh SQLite database, with
dev-mode payments so a top-up can be settled and purchases succeed. Schemathesis reads the
schema the running app serves at /openapi.json and, once per caller, sends every operation
valid and invalid requests. The run fails on any 5xx, any status code the schema does not list
for the operation, a body or content type that does not match what the schema documents, a
crash of the server, or a ledger that no longer adds up afterwards.

The app runs without the worker (unlike `zenzefi serve` on the embedded default): the fuzzer
registers webhook endpoints at whatever addresses it makes up, and a worker would deliver
events to them. Without it, events wait in the outbox and nothing leaves the machine; for the
same reason webhook URLs are not resolved (`webhook_allow_private`).

Usage: `python tests/fuzz/run_schemathesis.py [extra schemathesis options]` (nox passes its
posargs on, e.g. `nox -s fuzz -- --report junit`). The number of examples per operation comes
from ZENZEFI_FUZZ_EXAMPLES (default 25); the seed is fixed so a failure found in CI reproduces
locally, and ZENZEFI_FUZZ_SEED picks another.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr

from zenzefi_api.app import create_app
from zenzefi_core.bootstrap import Core
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import CreateSuperuser
from zenzefi_core.services.ledger_check import CheckLedger
from zenzefi_core.settings import (
    DatabaseSettings,
    PaymentSettings,
    RateLimitSettings,
    RedisSettings,
    Settings,
    SmtpSettings,
    UpstreamSettings,
)

DEFAULT_EXAMPLES = 25
DEFAULT_SEED = 20261126
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
#: Operations left out, and why:
#: - /api/v1/proxy and /api/v1/proxy/{path}: forward any method and path to the upstream
#:   diagnostic server and pass its answer through; what they return is the upstream's, not
#:   described by our schema.
EXCLUDED_PATH_REGEX = r"^/api/v1/proxy(/\{path\})?$"
PASSWORD = "fuzzing password 1"
#: What each identity tops up before fuzzing, so purchases can succeed rather than only 402.
DEPOSIT = Decimal("5000.00")
STARTUP_SECONDS = 30.0


def _settings(data_dir: Path) -> Settings:
    """Everything that reaches outside the process is set here, so that ZENZEFI_ variables in
    the environment (a developer's database, Redis or upstream) never point the fuzzer at them."""
    return Settings(
        data_dir=data_dir,
        database=DatabaseSettings(url=f"sqlite:///{data_dir / 'fuzz.db'}"),
        redis=RedisSettings(url=None),
        smtp=SmtpSettings(host=None),
        upstream=UpstreamSettings(url=None),
        secret_key=SecretStr("fuzz-secret-key-" + "f" * 48),
        public_url="http://127.0.0.1",
        webhook_allow_private=True,
        payments=PaymentSettings(dev_mode=True),
        # The fuzzer registers and logs in far more often than a person; a 429 is documented,
        # but answering most requests with it would fuzz nothing.
        rate_limit=RateLimitSettings(enabled=False),
    )


@contextmanager
def serving(core: Core) -> Iterator[str]:
    """Serve the app on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(core.settings, core),
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("fuzz: the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_SECONDS)
        sock.close()


def _login(client: httpx.Client, email: str) -> str:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["access_token"])


def _top_up(client: httpx.Client, token: str, admin_token: str) -> None:
    """Pay DEPOSIT in through a payment intent that the operator settles (dev mode)."""
    intent = client.post(
        "/api/v1/currency/purchase",
        json={"amount_znc": str(DEPOSIT)},
        headers={"Authorization": f"Bearer {token}"},
    )
    intent.raise_for_status()
    settled = client.post(
        f"/api/v1/admin/payments/{intent.json()['payment_id']}/settle",
        json={"status": "succeeded"},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    settled.raise_for_status()
    assert settled.json()["credited"], settled.text


def identities(core: Core, base_url: str) -> dict[str, str]:
    """A user registered through the API and an operator made as `zenzefi admin create`
    makes one; both logged in and with money on their wallets. Name -> bearer token."""
    CreateSuperuser(core.uow, core.clock, core.hasher)(
        email="operator@example.com", username="operator", password=PASSWORD
    )
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        registered = client.post(
            "/api/v1/auth/register",
            json={"email": "fuzzer@example.com", "username": "fuzzer", "password": PASSWORD},
        )
        registered.raise_for_status()
        tokens = {
            "user": _login(client, "fuzzer@example.com"),
            "admin": _login(client, "operator@example.com"),
        }
        for token in tokens.values():
            _top_up(client, token, tokens["admin"])
    return tokens


def _schemathesis() -> list[str]:
    """The `st` command of the interpreter running this script (nox installs it there)."""
    beside = Path(sys.executable).with_name("st")
    found = str(beside) if beside.exists() else shutil.which("st")
    if found is None:
        raise SystemExit("fuzz: schemathesis is not installed (pip install schemathesis)")
    return [found]


def fuzz(base_url: str, name: str, token: str | None, extra: Sequence[str]) -> int:
    """One schemathesis run; `token` is sent as the bearer token on every request, or nothing
    when it is None."""
    examples = int(os.environ.get("ZENZEFI_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
    seed = int(os.environ.get("ZENZEFI_FUZZ_SEED", DEFAULT_SEED))
    command = [
        *_schemathesis(),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        *(["--header", f"Authorization: Bearer {token}"] if token else []),
        # Only our bearer token (or none); schemathesis would otherwise make up its own.
        "--generation-with-security-parameters",
        "false",
        "--exclude-path-regex",
        EXCLUDED_PATH_REGEX,
        # Only the seed decides what is generated: no examples remembered from earlier runs.
        "--generation-database",
        "none",
        # Hypothesis's timing check: on a busy machine it would fail the run for slowness
        # alone, which says nothing about the API.
        "--suppress-health-check",
        "too_slow",
        "--no-color",
        *extra,
    ]
    print(f"fuzz: as the {name}, {examples} examples per operation, seed {seed}", flush=True)
    return subprocess.run(command, check=False).returncode  # noqa: S603 - our own command line


def main(argv: Sequence[str]) -> int:
    # Unexpected errors are logged with their traceback by the app; show them beside the
    # schemathesis report that names the request.
    logging.basicConfig(level=logging.WARNING, format="server: %(levelname)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="zenzefi-fuzz-") as data_dir:
        settings = _settings(Path(data_dir))
        core = Core.from_settings(settings, hasher=fast_password_hasher())
        try:
            with serving(core) as base_url:
                # Anonymous too: every route that needs a login must document its 401.
                callers = {"anonymous caller": None, **identities(core, base_url)}
                failed = [
                    name
                    for name, token in callers.items()
                    if fuzz(base_url, name, token, argv) != 0
                ]
            report = CheckLedger(core.uow)()
        finally:
            core.close()
    if not report.ok:
        print(f"fuzz: the ledger does not add up after fuzzing:\n{report.render()}")
        return 1
    if failed:
        print(f"fuzz: schemathesis found problems as the {' and the '.join(failed)}")
        return 1
    print("fuzz: no problems found as anyone; the ledger adds up")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
