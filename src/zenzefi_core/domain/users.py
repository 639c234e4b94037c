from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID


@dataclass(frozen=True, slots=True)
class User:
    """An account. `balance` is a cache of the ledger: only wallet operations change it.

    `session_version` is raised whenever the account's logins must end (a password change, a
    deactivation); a login token is valid only while the version it was issued at is current.
    """

    id: UUID
    email: str
    username: str
    password_hash: str
    referral_code: str
    created_at: datetime
    full_name: str | None = None
    referred_by_id: UUID | None = None
    is_active: bool = True
    is_superuser: bool = False
    balance: Decimal = Decimal("0.00")
    session_version: int = 0
