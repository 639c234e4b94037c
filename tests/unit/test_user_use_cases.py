"""Self-service account use cases on the in-memory adapter: registration with referral codes,
login, the per-request identity check, profile changes and the referral summary."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest

from zenzefi_core.adapters.memory import MemoryStore
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType, User
from zenzefi_core.errors import (
    AccountDisabled,
    ActionRefused,
    AuthenticationFailed,
    DuplicateUser,
    InvalidInput,
    InvalidReferralCode,
    UserNotFound,
)
from zenzefi_core.ids import new_id
from zenzefi_core.ports import PasswordHasher
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.users import (
    Authenticate,
    Credentials,
    GetReferralSummary,
    IdentifyUser,
    LoginSession,
    ProfileChange,
    ReferralQuery,
    RegisterUser,
    Registration,
    UpdateProfile,
)
from zenzefi_core.services.wallet import post_entry

PASSWORD = "correct horse"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def hasher() -> PasswordHasher:
    return fast_password_hasher()


@pytest.fixture
def register(store: MemoryStore, clock: FixedClock, hasher: PasswordHasher):
    use_case = RegisterUser(store.unit_of_work, clock, hasher)

    def make(username: str = "alice", *, ref: str | None = None, **fields: str) -> User:
        request = Registration(
            email=fields.pop("email", f"{username}@example.com"),
            username=username,
            password=fields.pop("password", PASSWORD),
            referral_code=ref,
            **fields,
        )
        return use_case(request)

    return make


def stored(store: MemoryStore, user_id) -> User:
    with store.unit_of_work() as uow:
        user = uow.users.get(user_id)
    assert user is not None
    return user


def set_active(store: MemoryStore, user: User, active: bool) -> None:
    with store.unit_of_work() as uow:
        uow.users.set_active(user.id, active)
        uow.commit()


# Registration


def test_register_normalises_and_gives_a_referral_code(register, store) -> None:
    user = register("Alice", email="  Alice@Example.COM ", full_name="  Alice A  ")
    assert user.email == "alice@example.com"
    assert user.username == "Alice"
    assert user.full_name == "Alice A"
    assert re.fullmatch(r"[A-Z0-9]{12}", user.referral_code)
    assert user.referred_by_id is None
    assert stored(store, user.id) == user


def test_register_links_the_referrer_whatever_the_case_of_the_code(register) -> None:
    referrer = register("alice")
    referee = register("bob", ref=f" {referrer.referral_code.lower()} ")
    assert referee.referred_by_id == referrer.id


@pytest.mark.parametrize("code", ["", "   "])
def test_a_blank_referral_code_means_none(register, code: str) -> None:
    assert register("bob", ref=code).referred_by_id is None


@pytest.mark.parametrize(
    "code", ["NOSUCHCODE12", "short", "WAY-TOO-LONG-CODE", "ÄBCDEFGHIJKL", "\x00" * 12]
)
def test_unknown_or_malformed_referral_codes_are_refused(register, store, code: str) -> None:
    register("alice")
    with pytest.raises(InvalidReferralCode, match="Invalid referral code"):
        register("bob", ref=code)
    with store.unit_of_work() as uow:
        assert uow.users.get_by_username("bob") is None


def test_an_inactive_referrer_code_is_refused(register, store) -> None:
    referrer = register("alice")
    set_active(store, referrer, False)
    with pytest.raises(InvalidReferralCode):
        register("bob", ref=referrer.referral_code)


def test_duplicates_are_refused_case_insensitively(register) -> None:
    register("alice")
    with pytest.raises(DuplicateUser, match="email"):
        register("alice2", email="ALICE@example.com")
    with pytest.raises(DuplicateUser, match="username"):
        register("ALICE", email="other@example.com")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a\x00b@example.com"}, "email"),
        ({"password": "short"}, "password"),
        ({"password": "x" * 73}, "password"),
        ({"full_name": "x" * 201}, "full_name"),
        ({"full_name": "line\nbreak"}, "full_name"),
    ],
)
def test_registration_validates_every_field(register, fields, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        register("alice", **fields)


# Login and the per-request identity check


@pytest.fixture
def authenticate(store, hasher) -> Authenticate:
    return Authenticate(store.unit_of_work, hasher)


def test_login_with_the_right_password(register, authenticate) -> None:
    user = register("alice")
    assert authenticate(Credentials(email=" ALICE@example.com", password=PASSWORD)) == user


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("alice@example.com", "wrong password"),
        ("nobody@example.com", PASSWORD),
        ("not an email", PASSWORD),
        ("alice@example.com", "x" * 10_000),
        ("alice@example.com", ""),
    ],
)
def test_login_failures_all_look_the_same(register, authenticate, email, password) -> None:
    register("alice")
    with pytest.raises(AuthenticationFailed) as raised:
        authenticate(Credentials(email=email, password=password))
    assert str(raised.value) == "Incorrect email or password"


def test_a_disabled_account_cannot_log_in(register, authenticate, store) -> None:
    user = register("alice")
    set_active(store, user, False)
    with pytest.raises(AuthenticationFailed):
        authenticate(Credentials(email="alice@example.com", password=PASSWORD))


def test_identify_reads_the_account_on_every_call(register, store) -> None:
    user = register("alice")
    identify = IdentifyUser(store.unit_of_work)
    session = LoginSession(user.id, session_version=0)
    assert identify(session) == user
    set_active(store, user, False)
    with pytest.raises(AccountDisabled):
        identify(session)
    with pytest.raises(AuthenticationFailed):
        identify(LoginSession(new_id(), session_version=0))


def test_identify_refuses_a_session_of_another_version(register, store) -> None:
    user = register("alice")
    identify = IdentifyUser(store.unit_of_work)
    with store.unit_of_work() as uow:
        uow.users.end_sessions(user.id)
        uow.commit()
    for version in (0, 2, -1):
        with pytest.raises(AuthenticationFailed):
            identify(LoginSession(user.id, session_version=version))
    assert identify(LoginSession(user.id, session_version=1)).session_version == 1


def test_a_password_change_ends_every_session_a_name_change_none(register, update, store) -> None:
    user = register("alice")
    identify = IdentifyUser(store.unit_of_work)
    update(ProfileChange(user.id, full_name="Alice"))
    assert identify(LoginSession(user.id, 0)).full_name == "Alice"
    changed = update(
        ProfileChange(user.id, new_password="a brand new one", current_password=PASSWORD)
    )
    assert changed.session_version == 1
    with pytest.raises(AuthenticationFailed):
        identify(LoginSession(user.id, 0))
    assert identify(LoginSession(user.id, 1)) == stored(store, user.id)


# Profile


@pytest.fixture
def update(store, hasher) -> UpdateProfile:
    return UpdateProfile(store.unit_of_work, hasher)


def test_full_name_can_be_set_kept_and_cleared(register, update, store) -> None:
    user = register("alice")
    assert update(ProfileChange(user.id, full_name=" Alice ")).full_name == "Alice"
    assert update(ProfileChange(user.id)).full_name == "Alice"
    assert update(ProfileChange(user.id, full_name=None)).full_name is None
    assert update(ProfileChange(user.id, full_name="   ")).full_name is None
    assert stored(store, user.id).full_name is None


def test_password_change_needs_the_current_password(register, update, authenticate) -> None:
    user = register("alice")
    with pytest.raises(InvalidInput, match="current_password"):
        update(ProfileChange(user.id, new_password="new password 1"))
    with pytest.raises(ActionRefused, match="Current password is incorrect"):
        update(
            ProfileChange(
                user.id, new_password="new password 1", current_password="not it", full_name="X"
            )
        )
    # Nothing changed, not even the name sent along with the refused password.
    assert authenticate(Credentials("alice@example.com", PASSWORD)).full_name is None

    update(ProfileChange(user.id, new_password="new password 1", current_password=PASSWORD))
    assert authenticate(Credentials("alice@example.com", "new password 1")).id == user.id
    with pytest.raises(AuthenticationFailed):
        authenticate(Credentials("alice@example.com", PASSWORD))


def test_profile_changes_validate_and_need_an_active_account(register, update, store) -> None:
    user = register("alice")
    with pytest.raises(InvalidInput, match="password"):
        update(ProfileChange(user.id, new_password="short", current_password=PASSWORD))
    with pytest.raises(InvalidInput, match="full_name"):
        update(ProfileChange(user.id, full_name="x" * 201))
    set_active(store, user, False)
    with pytest.raises(AccountDisabled):
        update(ProfileChange(user.id, full_name="Alice"))
    with pytest.raises(UserNotFound):
        update(ProfileChange(new_id(), full_name="Alice"))


# Referral summary


def test_referral_summary_counts_referees_and_nets_clawbacks(register, store, clock) -> None:
    referrer = register("alice")
    referees = []
    for name in ["bob", "carol", "dave"]:
        clock.advance(timedelta(minutes=1))
        referees.append(register(name, ref=referrer.referral_code))
    register("eve")  # not referred
    with store.unit_of_work() as uow:
        for amount, kind in [
            (Decimal("10.00"), TransactionType.REFERRAL_BONUS),
            (Decimal("5.30"), TransactionType.REFERRAL_BONUS),
            (Decimal("-2.00"), TransactionType.REFERRAL_CLAWBACK),
            (Decimal("50.00"), TransactionType.DEPOSIT),
        ]:
            post_entry(
                uow,
                clock,
                user_id=referrer.id,
                amount=amount,
                transaction_type=kind,
                description="test",
                reference_type="test",
                reference_id="1",
            )
        uow.commit()

    summary = GetReferralSummary(store.unit_of_work)(ReferralQuery(referrer.id))
    assert summary.referral_code == referrer.referral_code
    assert summary.total_referrals == 3
    assert summary.bonus_earned == Decimal("13.30")
    assert [r.username for r in summary.referees] == ["bob", "carol", "dave"]
    assert [r.joined_at for r in summary.referees] == [u.created_at for u in referees]

    page = GetReferralSummary(store.unit_of_work)(ReferralQuery(referrer.id, limit=1, offset=2))
    assert [r.username for r in page.referees] == ["dave"]
    assert page.total_referrals == 3


def test_referral_summary_pages_are_bounded(register, store) -> None:
    user = register("alice")
    summary = GetReferralSummary(store.unit_of_work)
    assert summary(ReferralQuery(user.id)).bonus_earned == Decimal("0.00")
    for limit, offset in [(0, 0), (101, 0), (10, -1)]:
        with pytest.raises(InvalidInput):
            summary(ReferralQuery(user.id, limit=limit, offset=offset))
    with pytest.raises(UserNotFound):
        summary(ReferralQuery(new_id()))
