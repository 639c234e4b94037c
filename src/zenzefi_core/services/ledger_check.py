"""The ledger audit behind `zenzefi check-ledger`: the wallets and the money supply.

Per wallet: balance = sum of its entries, and never negative. Over the money supply
(`zenzefi_core.money_audit`): every entry traced to the record that caused it, and no referral
link paid more than the policy's percentage of what the referee bought and kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from zenzefi_core.domain import AuditAction
from zenzefi_core.money_audit import MoneyProblem, audit_money
from zenzefi_core.ports import LedgerDiscrepancy, UnitOfWork, UnitOfWorkFactory
from zenzefi_core.referrals import ReferralPolicy


@dataclass(frozen=True, slots=True)
class LedgerReport:
    users_checked: int
    discrepancies: list[LedgerDiscrepancy]
    problems: list[MoneyProblem] = field(default_factory=list)
    #: Entries naming causes outside the product's records, which the audit cannot trace.
    untraced_entries: int = 0

    @property
    def ok(self) -> bool:
        return not self.discrepancies and not self.problems

    def render(self) -> str:
        """A report an operator can read at a terminal."""
        untraced = ""
        if self.untraced_entries:
            untraced = (
                f"\n{self.untraced_entries} entry(ies) name causes outside Zenzefi's records "
                "and were not traced."
            )
        if self.ok:
            return f"Ledger OK: {self.users_checked} wallet(s) checked, no discrepancies.{untraced}"
        headline = f"Ledger check FAILED: {len(self.discrepancies)} of {self.users_checked} "
        headline += "wallet(s) break an invariant."
        if self.problems:
            headline += f" Money supply: {len(self.problems)} problem(s)."
        lines = [headline]
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
        for problem in self.problems:
            lines.append(f"  user {problem.user_id}: {problem.detail}")
        return "\n".join(lines) + untraced


_AUDIT_PAGE = 500


def _adjustments(uow: UnitOfWork) -> dict[UUID, str]:
    """Every balance adjustment in the audit log: its id -> the adjusted user's id."""
    found: dict[UUID, str] = {}
    offset = 0
    while True:
        page = uow.audit.list_entries(
            limit=_AUDIT_PAGE, offset=offset, action=AuditAction.BALANCE_ADJUSTED
        )
        found.update((entry.id, entry.target_id) for entry in page.items)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return found


class CheckLedger:
    """Balance = sum of the user's entries and never negative, for every user; every entry
    traced to its cause; no referral link paid more than `referrals.percent` of what stayed
    paid (run it with the percentage the shop uses)."""

    def __init__(
        self, uow_factory: UnitOfWorkFactory, referrals: ReferralPolicy | None = None
    ) -> None:
        self._uow_factory = uow_factory
        self._referrals = referrals or ReferralPolicy()

    def __call__(self) -> LedgerReport:
        with self._uow_factory() as uow:
            # First: it asks the store for one snapshot for everything read after it.
            facts = uow.ledger.money_facts()
            adjustments = _adjustments(uow)
            return LedgerReport(
                users_checked=uow.ledger.count_users(),
                discrepancies=uow.ledger.discrepancies(),
                problems=audit_money(facts, adjustments, self._referrals.percent),
                untraced_entries=facts.untraced_entries,
            )
