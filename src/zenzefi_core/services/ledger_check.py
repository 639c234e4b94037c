"""The ledger audit behind `zenzefi check-ledger`."""

from __future__ import annotations

from dataclasses import dataclass

from zenzefi_core.ports import LedgerDiscrepancy, UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class LedgerReport:
    users_checked: int
    discrepancies: list[LedgerDiscrepancy]

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def render(self) -> str:
        """A report an operator can read at a terminal."""
        if self.ok:
            return f"Ledger OK: {self.users_checked} wallet(s) checked, no discrepancies."
        lines = [
            f"Ledger check FAILED: {len(self.discrepancies)} of {self.users_checked} "
            "wallet(s) break an invariant."
        ]
        for d in self.discrepancies:
            problems = []
            if d.balance != d.ledger_total:
                problems.append(
                    f"balance {d.balance:.2f} != ledger total {d.ledger_total:.2f} "
                    f"(difference {d.balance - d.ledger_total:+.2f})"
                )
            if d.balance < 0:
                problems.append(f"balance {d.balance:.2f} is negative")
            lines.append(f"  user {d.user_id} ({d.username}): " + "; ".join(problems))
        return "\n".join(lines)


class CheckLedger:
    """Balance = sum of the user's entries, and never negative, for every user."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    def __call__(self) -> LedgerReport:
        with self._uow_factory() as uow:
            return LedgerReport(
                users_checked=uow.ledger.count_users(),
                discrepancies=uow.ledger.discrepancies(),
            )
