"""Wallet and account rules, on the in-memory adapter: the sign of each entry type, overdrafts,
unknown users, causes, explicit commits, account validation, superusers and the ledger report."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from zenzefi_core.adapters.memory import InMemoryUnitOfWork, MemoryStore
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import LedgerEntry, TransactionType, User
from zenzefi_core.errors import (
    DuplicateUser,
    InsufficientBalance,
    InvalidAmount,
    InvalidInput,
    UserNotFound,
)
from zenzefi_core.ports import LedgerDiscrepancy
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.accounts import (
    CreateSuperuser,
    add_user,
    normalize_email,
    validate_password,
    validate_username,
)
from zenzefi_core.services.ledger_check import CheckLedger, LedgerReport
from zenzefi_core.services.wallet import CreditWallet, DebitWallet, WalletChange, post_entry

if TYPE_CHECKING:
    from tests.conftest import UserMaker

T = TransactionType


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def entries(store: MemoryStore, user_id: uuid.UUID) -> list[LedgerEntry]:
    with store.unit_of_work() as uow:
        return list(uow.ledger.list_for_user(user_id, limit=1000, offset=0).items)


def balance(store: MemoryStore, user_id: uuid.UUID) -> Decimal:
    with store.unit_of_work() as uow:
        user = uow.users.get(user_id)
    assert user is not None
    return user.balance


def post(
    store: MemoryStore,
    clock: FixedClock,
    user_id: uuid.UUID,
    amount: str,
    transaction_type: TransactionType,
    *,
    reference_type: str = "test",
    reference_id: str = "ref-1",
) -> LedgerEntry:
    with store.unit_of_work() as uow:
        entry = post_entry(
            uow,
            clock,
            user_id=user_id,
            amount=Decimal(amount),
            transaction_type=transaction_type,
            description="test entry",
            reference_type=reference_type,
            reference_id=reference_id,
        )
        uow.commit()
    return entry


def change(
    user_id: uuid.UUID, amount: str, transaction_type: TransactionType, **overrides: str
) -> WalletChange:
    fields = {
        "description": "test change",
        "reference_type": "operator",
        "reference_id": "op-1",
        **overrides,
    }
    return WalletChange(
        user_id=user_id, amount=Decimal(amount), transaction_type=transaction_type, **fields
    )


@pytest.fixture
def funded(store: MemoryStore, make_user: UserMaker) -> User:
    return make_user(store.unit_of_work, balance=Decimal("50.00"))


# --- post_entry: signs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transaction_type", "amount", "allowed"),
    [
        (T.DEPOSIT, "5.00", True),
        (T.DEPOSIT, "-5.00", False),
        (T.REFUND, "5.00", True),
        (T.REFUND, "-5.00", False),
        (T.REFERRAL_BONUS, "5.00", True),
        (T.REFERRAL_BONUS, "-5.00", False),
        (T.PURCHASE, "-5.00", True),
        (T.PURCHASE, "5.00", False),
        (T.REFERRAL_CLAWBACK, "-5.00", True),
        (T.REFERRAL_CLAWBACK, "5.00", False),
        (T.ADJUSTMENT, "5.00", True),
        (T.ADJUSTMENT, "-5.00", True),
    ],
)
def test_post_entry_sign_rules(
    store: MemoryStore,
    clock: FixedClock,
    funded: User,
    transaction_type: TransactionType,
    amount: str,
    allowed: bool,
) -> None:
    before = entries(store, funded.id)
    if allowed:
        entry = post(store, clock, funded.id, amount, transaction_type)
        assert entry.amount == Decimal(amount)
        assert entry.transaction_type is transaction_type
        assert entry.balance_after == Decimal("50.00") + Decimal(amount)
        assert balance(store, funded.id) == entry.balance_after
        assert entries(store, funded.id)[0] == entry
    else:
        with pytest.raises(InvalidAmount, match=f"a {transaction_type} entry must be"):
            post(store, clock, funded.id, amount, transaction_type)
        assert balance(store, funded.id) == Decimal("50.00")
        assert entries(store, funded.id) == before


@pytest.mark.parametrize("transaction_type", list(TransactionType))
def test_post_entry_refuses_zero(
    store: MemoryStore, clock: FixedClock, funded: User, transaction_type: TransactionType
) -> None:
    with pytest.raises(InvalidAmount, match="must move money"):
        post(store, clock, funded.id, "0.00", transaction_type)
    assert len(entries(store, funded.id)) == 1


def test_post_entry_refuses_a_third_decimal(
    store: MemoryStore, clock: FixedClock, funded: User
) -> None:
    with pytest.raises(InvalidAmount, match="two decimal places"):
        post(store, clock, funded.id, "1.005", T.DEPOSIT)
    assert balance(store, funded.id) == Decimal("50.00")


def test_post_entry_records_everything_about_the_change(
    store: MemoryStore, clock: FixedClock, funded: User
) -> None:
    entry = post(store, clock, funded.id, "-12.34", T.PURCHASE, reference_id="token-9")
    assert entry.user_id == funded.id
    assert entry.amount == Decimal("-12.34")
    assert entry.balance_after == Decimal("37.66")
    assert entry.description == "test entry"
    assert (entry.reference_type, entry.reference_id) == ("test", "token-9")
    assert entry.created_at == clock.now()
    assert entry.id.version == 7


@pytest.mark.parametrize(("reference_type", "reference_id"), [("", "ref"), ("token", ""), ("", "")])
def test_post_entry_must_name_its_cause(
    store: MemoryStore, clock: FixedClock, funded: User, reference_type: str, reference_id: str
) -> None:
    with pytest.raises(InvalidInput, match="must name its cause"):
        post(
            store,
            clock,
            funded.id,
            "1.00",
            T.DEPOSIT,
            reference_type=reference_type,
            reference_id=reference_id,
        )
    assert balance(store, funded.id) == Decimal("50.00")
    assert len(entries(store, funded.id)) == 1


# --- overdrafts and unknown users ------------------------------------------------------------


@pytest.mark.parametrize("transaction_type", [T.PURCHASE, T.REFERRAL_CLAWBACK, T.ADJUSTMENT])
def test_debit_beyond_balance_raises_and_changes_nothing(
    store: MemoryStore, clock: FixedClock, funded: User, transaction_type: TransactionType
) -> None:
    debit = DebitWallet(store.unit_of_work, clock)
    before = entries(store, funded.id)
    with pytest.raises(InsufficientBalance) as raised:
        debit(change(funded.id, "50.01", transaction_type))
    assert str(raised.value) == "Insufficient balance. Required: 50.01 ZNC, Available: 50.00 ZNC"
    assert raised.value.required == Decimal("50.01")
    assert raised.value.available == Decimal("50.00")
    assert balance(store, funded.id) == Decimal("50.00")
    assert entries(store, funded.id) == before


def test_post_entry_overdraft_message_and_nothing_written(
    store: MemoryStore, clock: FixedClock, make_user: UserMaker
) -> None:
    user = make_user(store.unit_of_work, balance=Decimal("7.5"))
    with pytest.raises(
        InsufficientBalance,
        match=r"^Insufficient balance\. Required: 100\.00 ZNC, Available: 7\.50 ZNC$",
    ):
        post(store, clock, user.id, "-100", T.PURCHASE)
    assert balance(store, user.id) == Decimal("7.50")
    assert [e.transaction_type for e in entries(store, user.id)] == [T.DEPOSIT]


def test_debit_of_the_whole_balance_leaves_exactly_zero(
    store: MemoryStore, clock: FixedClock, funded: User
) -> None:
    entry = DebitWallet(store.unit_of_work, clock)(change(funded.id, "50.00", T.PURCHASE))
    assert entry.balance_after == Decimal("0.00")
    assert balance(store, funded.id) == Decimal("0.00")
    with pytest.raises(InsufficientBalance, match=r"Required: 0\.01 ZNC, Available: 0\.00 ZNC"):
        DebitWallet(store.unit_of_work, clock)(change(funded.id, "0.01", T.PURCHASE))


@pytest.mark.parametrize(
    ("use_case", "transaction_type"),
    [(CreditWallet, T.DEPOSIT), (DebitWallet, T.PURCHASE), (CreditWallet, T.ADJUSTMENT)],
)
def test_unknown_user_raises_user_not_found(
    store: MemoryStore,
    clock: FixedClock,
    funded: User,
    use_case: type[CreditWallet | DebitWallet],
    transaction_type: TransactionType,
) -> None:
    stranger = uuid.uuid4()
    with pytest.raises(UserNotFound) as raised:
        use_case(store.unit_of_work, clock)(change(stranger, "1.00", transaction_type))
    assert raised.value.user_id == stranger
    with store.unit_of_work() as uow:
        assert uow.users.get(stranger) is None
        assert uow.ledger.list_for_user(stranger, limit=10, offset=0).total == 0
    assert balance(store, funded.id) == Decimal("50.00")


# --- the stand-alone use cases ---------------------------------------------------------------


@pytest.mark.parametrize("transaction_type", [T.DEPOSIT, T.REFUND, T.REFERRAL_BONUS, T.ADJUSTMENT])
def test_credit_wallet_adds_a_positive_entry(
    store: MemoryStore, clock: FixedClock, funded: User, transaction_type: TransactionType
) -> None:
    entry = CreditWallet(store.unit_of_work, clock)(change(funded.id, "2.50", transaction_type))
    assert entry.amount == Decimal("2.50")
    assert entry.transaction_type is transaction_type
    assert balance(store, funded.id) == Decimal("52.50")
    assert entries(store, funded.id)[0] == entry


@pytest.mark.parametrize("transaction_type", [T.PURCHASE, T.REFERRAL_CLAWBACK, T.ADJUSTMENT])
def test_debit_wallet_adds_a_negative_entry(
    store: MemoryStore, clock: FixedClock, funded: User, transaction_type: TransactionType
) -> None:
    entry = DebitWallet(store.unit_of_work, clock)(change(funded.id, "2.50", transaction_type))
    assert entry.amount == Decimal("-2.50")
    assert entry.balance_after == Decimal("47.50")
    assert balance(store, funded.id) == Decimal("47.50")


@pytest.mark.parametrize("transaction_type", [T.PURCHASE, T.REFERRAL_CLAWBACK])
def test_credit_wallet_refuses_debit_types(
    store: MemoryStore, clock: FixedClock, funded: User, transaction_type: TransactionType
) -> None:
    with pytest.raises(InvalidInput, match="CreditWallet cannot record"):
        CreditWallet(store.unit_of_work, clock)(change(funded.id, "1.00", transaction_type))
    assert balance(store, funded.id) == Decimal("50.00")


@pytest.mark.parametrize("transaction_type", [T.DEPOSIT, T.REFUND, T.REFERRAL_BONUS])
def test_debit_wallet_refuses_credit_types(
    store: MemoryStore, clock: FixedClock, funded: User, transaction_type: TransactionType
) -> None:
    with pytest.raises(InvalidInput, match="DebitWallet cannot record"):
        DebitWallet(store.unit_of_work, clock)(change(funded.id, "1.00", transaction_type))
    assert balance(store, funded.id) == Decimal("50.00")


@pytest.mark.parametrize("use_case", [CreditWallet, DebitWallet])
@pytest.mark.parametrize("amount", ["0", "-1.00"])
def test_wallet_use_cases_want_a_positive_amount(
    store: MemoryStore,
    clock: FixedClock,
    funded: User,
    use_case: type[CreditWallet | DebitWallet],
    amount: str,
) -> None:
    with pytest.raises(InvalidAmount, match="greater than zero"):
        use_case(store.unit_of_work, clock)(change(funded.id, amount, T.ADJUSTMENT))
    assert len(entries(store, funded.id)) == 1


# --- units of work: nothing is committed implicitly ------------------------------------------


def test_unit_of_work_without_commit_rolls_back(
    store: MemoryStore, clock: FixedClock, funded: User
) -> None:
    with store.unit_of_work() as uow:
        post_entry(
            uow,
            clock,
            user_id=funded.id,
            amount=Decimal("5.00"),
            transaction_type=T.DEPOSIT,
            description="never committed",
            reference_type="test",
            reference_id="x",
        )
        assert uow.users.get(funded.id).balance == Decimal("55.00")  # type: ignore[union-attr]
    assert uow.committed is False
    assert balance(store, funded.id) == Decimal("50.00")
    assert len(entries(store, funded.id)) == 1


def test_an_error_inside_the_unit_of_work_rolls_back(
    store: MemoryStore, clock: FixedClock, funded: User
) -> None:
    def fail_half_way() -> None:
        with store.unit_of_work() as uow:
            post_entry(
                uow,
                clock,
                user_id=funded.id,
                amount=Decimal("-5.00"),
                transaction_type=T.PURCHASE,
                description="lost",
                reference_type="test",
                reference_id="x",
            )
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_half_way()
    assert balance(store, funded.id) == Decimal("50.00")
    assert [e.amount for e in entries(store, funded.id)] == [Decimal("50.00")]


def test_commit_keeps_only_what_came_before_it(
    store: MemoryStore, clock: FixedClock, funded: User
) -> None:
    with store.unit_of_work() as uow:
        for amount, reference in (("1.00", "kept"), ("2.00", "dropped")):
            post_entry(
                uow,
                clock,
                user_id=funded.id,
                amount=Decimal(amount),
                transaction_type=T.DEPOSIT,
                description=reference,
                reference_type="test",
                reference_id=reference,
            )
            if reference == "kept":
                uow.commit()
    assert balance(store, funded.id) == Decimal("51.00")
    assert [e.reference_id for e in entries(store, funded.id)] == ["kept", str(funded.id)]


def test_explicit_rollback_discards_the_work_so_far(
    store: MemoryStore, clock: FixedClock, funded: User
) -> None:
    with store.unit_of_work() as uow:
        post_entry(
            uow,
            clock,
            user_id=funded.id,
            amount=Decimal("3.00"),
            transaction_type=T.DEPOSIT,
            description="rolled back",
            reference_type="test",
            reference_id="x",
        )
        uow.rollback()
        assert uow.users.get(funded.id).balance == Decimal("50.00")  # type: ignore[union-attr]
        uow.commit()
    assert balance(store, funded.id) == Decimal("50.00")


def test_use_cases_commit_their_own_unit_of_work(
    store: MemoryStore, clock: FixedClock, funded: User
) -> None:
    opened: list[InMemoryUnitOfWork] = []

    def factory() -> InMemoryUnitOfWork:
        opened.append(store.unit_of_work())
        return opened[-1]

    CreditWallet(factory, clock)(change(funded.id, "1.00", T.DEPOSIT))
    with pytest.raises(InsufficientBalance):
        DebitWallet(factory, clock)(change(funded.id, "100.00", T.PURCHASE))
    assert [uow.committed for uow in opened] == [True, False]


# --- accounts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("alice@example.com", "alice@example.com"),
        ("  Alice@Example.COM ", "alice@example.com"),
        ("A.B+tag@Sub.Example.org", "a.b+tag@sub.example.org"),
    ],
)
def test_normalize_email(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "al ice@example.com",
        "alice@@example.com",
        "a" * 243 + "@example.com",
    ],
)
def test_normalize_email_refuses_malformed(raw: str) -> None:
    with pytest.raises(InvalidInput, match="email"):
        normalize_email(raw)


def test_normalize_email_length_limit_is_254() -> None:
    longest = "a" * 242 + "@example.com"
    assert len(longest) == 254
    assert normalize_email(longest) == longest
    with pytest.raises(InvalidInput):
        normalize_email("a" + longest)


@pytest.mark.parametrize("username", ["bob", "Bob_1.x-y", "a" * 50, "  padded  "])
def test_validate_username_accepts(username: str) -> None:
    assert validate_username(username) == username.strip()


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("ab", "3 to 50"),
        ("a" * 51, "3 to 50"),
        ("   ", "3 to 50"),
        ("bob smith", "only letters"),
        ("bob@home", "only letters"),
        ("bob!", "only letters"),
    ],
)
def test_validate_username_refuses(username: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_username(username)


@pytest.mark.parametrize(
    "password",
    [
        "x" * 8,
        "x" * 72,
        "é" * 4,  # four characters, eight bytes
        "€" * 3,  # three characters, nine bytes
        "é" * 36,  # seventy-two bytes
    ],
)
def test_validate_password_accepts_8_to_72_bytes(password: str) -> None:
    assert validate_password(password) == password


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("x" * 7, "at least 8 bytes"),
        ("", "at least 8 bytes"),
        ("x" * 73, "at most 72 bytes"),
        ("é" * 37, "at most 72 bytes"),  # only 37 characters, but 74 bytes
        ("€" * 25, "at most 72 bytes"),  # 25 characters, 75 bytes
    ],
)
def test_validate_password_refuses_outside_8_to_72_bytes(password: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_password(password)


def test_add_user_stores_a_normalized_user_with_a_hashed_password(
    store: MemoryStore, clock: FixedClock
) -> None:
    hasher = fast_password_hasher()
    with store.unit_of_work() as uow:
        user = add_user(
            uow,
            clock,
            hasher,
            email=" Carol@Example.com",
            username=" Carol ",
            password="s3cret-pass",
            full_name="Carol C",
        )
        uow.commit()
    assert user.email == "carol@example.com"
    assert user.username == "Carol"
    assert user.password_hash != "s3cret-pass"
    assert hasher.verify(user.password_hash, "s3cret-pass")
    assert not hasher.verify(user.password_hash, "wrong-pass")
    assert len(user.referral_code) == 12
    assert user.referral_code.isalnum()
    assert user.referral_code.upper() == user.referral_code
    assert user.balance == Decimal("0.00")
    assert user.is_active
    assert not user.is_superuser
    assert user.created_at == clock.now()
    with store.unit_of_work() as uow:
        assert uow.users.get(user.id) == user


@pytest.mark.parametrize(
    ("email", "username", "field"),
    [
        ("ALICE@example.com", "someone", "email"),
        ("  alice@EXAMPLE.com ", "someone", "email"),
        ("other@example.com", "ALICE", "username"),
        ("other@example.com", "Alice", "username"),
    ],
)
def test_add_user_refuses_duplicates_case_insensitively(
    store: MemoryStore,
    clock: FixedClock,
    make_user: UserMaker,
    email: str,
    username: str,
    field: str,
) -> None:
    make_user(store.unit_of_work, "alice")
    with store.unit_of_work() as uow:
        with pytest.raises(DuplicateUser) as raised:
            add_user(
                uow, clock, fast_password_hasher(), email=email, username=username, password="x" * 8
            )
        assert raised.value.field == field
        assert str(raised.value) == f"A user with this {field} already exists"
    with store.unit_of_work() as uow:
        assert uow.ledger.count_users() == 1


@pytest.mark.parametrize(
    ("email", "username", "password"),
    [
        ("not-an-email", "valid_name", "long enough"),
        ("ok@example.com", "no spaces allowed", "long enough"),
        ("ok@example.com", "valid_name", "short"),
    ],
)
def test_add_user_validates_before_storing(
    store: MemoryStore, clock: FixedClock, email: str, username: str, password: str
) -> None:
    with store.unit_of_work() as uow:
        with pytest.raises(InvalidInput):
            add_user(
                uow,
                clock,
                fast_password_hasher(),
                email=email,
                username=username,
                password=password,
            )
        assert uow.ledger.count_users() == 0


def test_create_superuser_creates_an_operator(store: MemoryStore, clock: FixedClock) -> None:
    hasher = fast_password_hasher()
    result = CreateSuperuser(store.unit_of_work, clock, hasher)(
        email="Admin@Example.com", username="admin", password="Secret123!"
    )
    assert result.created is True
    assert result.user.is_superuser
    assert result.user.is_active
    assert result.user.email == "admin@example.com"
    with store.unit_of_work() as uow:
        stored = uow.users.get_by_email("admin@example.com")
    assert stored == result.user
    assert hasher.verify(stored.password_hash, "Secret123!")


def test_create_superuser_promotes_and_reactivates_without_touching_the_password(
    store: MemoryStore, clock: FixedClock, make_user: UserMaker
) -> None:
    hasher = fast_password_hasher()
    existing = make_user(store.unit_of_work, "dave", balance=Decimal("12.00"))
    with store.unit_of_work() as uow:
        uow.users.set_active(existing.id, False)
        uow.commit()

    result = CreateSuperuser(store.unit_of_work, clock, hasher)(
        email="  DAVE@example.com", username="ignored_name", password="a-new-password"
    )

    assert result.created is False
    with store.unit_of_work() as uow:
        stored = uow.users.get(existing.id)
        assert uow.users.get_by_username("ignored_name") is None
        assert uow.ledger.count_users() == 1
    assert stored is not None
    assert stored == result.user
    assert stored.is_superuser
    assert stored.is_active
    assert stored.username == "dave"
    assert stored.password_hash == existing.password_hash
    assert hasher.verify(stored.password_hash, "correct horse")
    assert not hasher.verify(stored.password_hash, "a-new-password")
    assert stored.balance == Decimal("12.00")


def test_create_superuser_twice_creates_once(store: MemoryStore, clock: FixedClock) -> None:
    create = CreateSuperuser(store.unit_of_work, clock, fast_password_hasher())
    first = create(email="root@example.com", username="root", password="Secret123!")
    second = create(email="root@example.com", username="root", password="Secret123!")
    assert (first.created, second.created) == (True, False)
    assert first.user.id == second.user.id
    with store.unit_of_work() as uow:
        assert uow.ledger.count_users() == 1


def test_create_superuser_refuses_a_taken_username(
    store: MemoryStore, clock: FixedClock, make_user: UserMaker
) -> None:
    make_user(store.unit_of_work, "erin")
    with pytest.raises(DuplicateUser, match="username"):
        CreateSuperuser(store.unit_of_work, clock, fast_password_hasher())(
            email="new@example.com", username="ERIN", password="Secret123!"
        )
    with store.unit_of_work() as uow:
        assert uow.users.get_by_email("new@example.com") is None
        erin = uow.users.get_by_username("erin")
    assert erin is not None
    assert not erin.is_superuser


# --- the ledger report -----------------------------------------------------------------------


def test_check_ledger_ok_on_a_consistent_store(
    store: MemoryStore, clock: FixedClock, make_user: UserMaker
) -> None:
    make_user(store.unit_of_work, "alice", balance=Decimal("10.00"))
    make_user(store.unit_of_work, "bob")
    report = CheckLedger(store.unit_of_work)()
    assert report.ok
    assert report.users_checked == 2
    assert report.discrepancies == []
    assert report.render() == (
        "Ledger OK: 2 wallet(s) checked, no discrepancies.\n"
        "1 entry(ies) name causes outside Zenzefi's records and were not traced."
    )


def test_check_ledger_reports_a_balance_changed_behind_the_ledger(
    store: MemoryStore, make_user: UserMaker
) -> None:
    alice = make_user(store.unit_of_work, "alice", balance=Decimal("10.00"))
    make_user(store.unit_of_work, "bob", balance=Decimal("1.00"))
    store.tables.users[alice.id] = dataclasses.replace(alice, balance=Decimal("12.50"))

    report = CheckLedger(store.unit_of_work)()

    assert not report.ok
    assert report.users_checked == 2
    assert report.discrepancies == [
        LedgerDiscrepancy(
            user_id=alice.id,
            username="alice",
            balance=Decimal("12.50"),
            ledger_total=Decimal("10.00"),
        )
    ]
    assert report.render() == (
        "Ledger check FAILED: 1 of 2 wallet(s) break an invariant.\n"
        f"  user {alice.id} (alice): balance 12.50 != ledger total 10.00 (difference +2.50)\n"
        "2 entry(ies) name causes outside Zenzefi's records and were not traced."
    )


def test_ledger_report_renders_negative_balances_and_shortfalls() -> None:
    first, second = uuid.UUID(int=1), uuid.UUID(int=2)
    report = LedgerReport(
        users_checked=5,
        discrepancies=[
            LedgerDiscrepancy(
                user_id=first, username="neg", balance=Decimal("-1.00"), ledger_total=Decimal("0")
            ),
            LedgerDiscrepancy(
                user_id=second,
                username="short",
                balance=Decimal("3.00"),
                ledger_total=Decimal("4.25"),
            ),
        ],
    )
    assert not report.ok
    assert report.render().splitlines() == [
        "Ledger check FAILED: 2 of 5 wallet(s) break an invariant.",
        f"  user {first} (neg): balance -1.00 != ledger total 0.00 (difference -1.00); "
        "balance -1.00 is negative",
        f"  user {second} (short): balance 3.00 != ledger total 4.25 (difference -1.25)",
    ]


def test_ledger_report_renders_a_negative_balance_the_ledger_agrees_with() -> None:
    report = LedgerReport(
        users_checked=1,
        discrepancies=[
            LedgerDiscrepancy(
                user_id=uuid.UUID(int=3),
                username="deep",
                balance=Decimal("-2.00"),
                ledger_total=Decimal("-2.00"),
            )
        ],
    )
    assert report.render().splitlines()[1] == (
        f"  user {uuid.UUID(int=3)} (deep): balance -2.00 is negative"
    )
