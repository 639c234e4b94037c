"""A PostgreSQL host that takes the connection and never answers (a hung server, a firewall
that drops packets): a request gets its 503 once the connect timeout has run out, instead of
waiting minutes for the operating system to give up."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork, make_engine
from zenzefi_core.adapters.sqlalchemy.database import Database
from zenzefi_core.adapters.sqlalchemy.engine import CONNECT_TIMEOUT_SECONDS
from zenzefi_core.errors import StorageUnavailable

pytestmark = pytest.mark.fault

HUNG = "still waiting"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose connections the kernel accepts and nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def finishes(action: Callable[[], object], within: float) -> object:
    """Run `action` in a thread: what it returned or raised, or `HUNG` when it still runs after
    `within` seconds."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(action())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    return outcome[0] if outcome else HUNG


def test_a_silent_database_is_unavailable_not_a_hang(silent_server: int) -> None:
    url = f"postgresql://zenzefi@127.0.0.1:{silent_server}/zenzefi"
    database = Database(url)

    def open_unit_of_work() -> bool:
        with SqlAlchemyUnitOfWork(database.engine):
            return True

    try:
        # (`/health` gives up on its own after HEALTH_TIMEOUT_SECONDS; a request cannot.)
        raised = finishes(open_unit_of_work, within=CONNECT_TIMEOUT_SECONDS * 4)
        assert isinstance(raised, StorageUnavailable), f"a hang, or not a 503: {raised!r}"
    finally:
        database.dispose()


def test_a_connect_timeout_in_the_url_wins(silent_server: int) -> None:
    engine = make_engine(
        f"postgresql://zenzefi@127.0.0.1:{silent_server}/zenzefi?connect_timeout=2",
        pool_size=1,
    )
    try:
        raised = finishes(engine.connect, within=CONNECT_TIMEOUT_SECONDS - 1)
        assert isinstance(raised, Exception), f"the URL's 2 s did not apply: {raised!r}"
        assert "timeout" in str(raised).lower()
    finally:
        engine.dispose()
