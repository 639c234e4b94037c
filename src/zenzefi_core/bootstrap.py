"""The composition root for the core: settings in, wired adapters out.

The API, the worker and the command line all start from `Core.from_settings`, so every process
opens the database, hashes passwords and tells time the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zenzefi_core.adapters.sqlalchemy import Database
from zenzefi_core.clock import SystemClock
from zenzefi_core.ports import Clock, PasswordHasher, UnitOfWork
from zenzefi_core.security import Argon2PasswordHasher
from zenzefi_core.settings import Settings


@dataclass
class Core:
    settings: Settings
    database: Database
    clock: Clock = field(default_factory=SystemClock)
    hasher: PasswordHasher = field(default_factory=Argon2PasswordHasher)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        hasher: PasswordHasher | None = None,
    ) -> Core:
        return cls(
            settings=settings,
            database=Database(settings.database_url),
            clock=clock or SystemClock(),
            hasher=hasher or Argon2PasswordHasher(),
        )

    def uow(self) -> UnitOfWork:
        return self.database.unit_of_work()

    def migrate(self) -> None:
        self.database.migrate()

    def close(self) -> None:
        self.database.dispose()
