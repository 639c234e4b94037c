"""The composition root for the core: settings in, wired adapters out.

The API, the worker and the command line all start from `Core.from_settings`, so every process
opens the database, hashes passwords and tells time the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from zenzefi_core.adapters.sqlalchemy import SqlAlchemyUnitOfWork, make_engine, upgrade
from zenzefi_core.clock import SystemClock
from zenzefi_core.ports import Clock, PasswordHasher, UnitOfWork
from zenzefi_core.security import Argon2PasswordHasher
from zenzefi_core.settings import Settings


@dataclass
class Core:
    settings: Settings
    engine: Engine
    clock: Clock = field(default_factory=SystemClock)
    hasher: PasswordHasher = field(default_factory=Argon2PasswordHasher)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> Core:
        return cls(settings=settings, engine=make_engine(settings.database_url), **overrides)  # type: ignore[arg-type]

    def uow(self) -> UnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine)

    def migrate(self) -> None:
        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()
