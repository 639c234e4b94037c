"""The pure rules of email notifications: signed unsubscribe links, retry delays, templates."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenzefi_core.domain.notifications import NotificationKind
from zenzefi_core.emails import SUBJECTS, render_email
from zenzefi_core.errors import InvalidSignature
from zenzefi_core.ids import new_id
from zenzefi_core.notifications import NotificationPolicy, UnsubscribeLinks, dedup_key
from zenzefi_core.settings import NotificationSettings, Settings, SmtpSettings

KEY = "a-secret-key-for-tests-" + "k" * 40
LINKS = UnsubscribeLinks(KEY, "https://zenzefi.example/")
KINDS = list(NotificationKind)


# --- unsubscribe links -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_link_names_its_user_and_kind(kind: NotificationKind) -> None:
    user_id = new_id()
    assert LINKS.verify(LINKS.token(user_id, kind)) == (user_id, kind)


def test_the_url_is_built_from_the_public_url_and_carries_the_token() -> None:
    user_id = new_id()
    url = LINKS.url(user_id, NotificationKind.BALANCE_LOW)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://zenzefi.example/api/v1/notifications/unsubscribe"
    )
    (token,) = parse_qs(parts.query)["token"]
    assert LINKS.verify(token) == (user_id, NotificationKind.BALANCE_LOW)


def test_a_link_for_one_kind_cannot_be_turned_into_another() -> None:
    user_id = new_id()
    token = LINKS.token(user_id, NotificationKind.BALANCE_LOW)
    _, _, signature = token.split(".")
    forged = f"{user_id.hex}.{NotificationKind.REFERRAL_BONUS.value}.{signature}"
    with pytest.raises(InvalidSignature):
        LINKS.verify(forged)


def test_a_link_for_one_user_cannot_be_turned_into_another() -> None:
    token = LINKS.token(new_id(), NotificationKind.TOKEN_EXPIRING)
    _, kind, signature = token.split(".")
    with pytest.raises(InvalidSignature):
        LINKS.verify(f"{new_id().hex}.{kind}.{signature}")


def test_a_link_signed_with_another_key_is_refused() -> None:
    other = UnsubscribeLinks("another-secret-key-" + "o" * 40, "https://zenzefi.example")
    with pytest.raises(InvalidSignature):
        LINKS.verify(other.token(new_id(), NotificationKind.BALANCE_LOW))


def test_a_link_with_any_other_spelling_of_the_signature_is_refused() -> None:
    token = LINKS.token(new_id(), NotificationKind.BALANCE_LOW)
    with pytest.raises(InvalidSignature):
        LINKS.verify(token + "=")
    with pytest.raises(InvalidSignature):
        LINKS.verify(token.upper())


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "not-a-uuid.balance_low.sig",
        "0190abcd0190abcd0190abcd0190abcd.nope.sig",
        "." * 5,
    ],
)
def test_malformed_links_are_refused(garbage: str) -> None:
    with pytest.raises(InvalidSignature):
        LINKS.verify(garbage)


@given(st.text(max_size=300))
def test_no_arbitrary_text_verifies(text: str) -> None:
    with pytest.raises(InvalidSignature):
        LINKS.verify(text)


@given(st.uuids(), st.sampled_from(KINDS), st.integers(min_value=0, max_value=80))
def test_changing_any_one_character_breaks_the_signature(user_id, kind, position) -> None:
    token = LINKS.token(user_id, kind)
    position %= len(token)
    replacement = "A" if token[position] != "A" else "B"
    tampered = token[:position] + replacement + token[position + 1 :]
    with pytest.raises(InvalidSignature):
        LINKS.verify(tampered)


# --- retry delays and the policy -------------------------------------------------------------


def test_retry_delays_double_up_to_the_maximum() -> None:
    policy = NotificationPolicy(
        retry_base=timedelta(seconds=30), retry_max=timedelta(minutes=5), max_attempts=10
    )
    delays = [policy.retry_delay(attempt) for attempt in range(1, 7)]
    assert delays == [
        timedelta(seconds=30),
        timedelta(seconds=60),
        timedelta(seconds=120),
        timedelta(seconds=240),
        timedelta(minutes=5),
        timedelta(minutes=5),
    ]
    assert policy.retry_delay(10_000) == timedelta(minutes=5)


def test_the_policy_reads_its_settings() -> None:
    settings = Settings(
        notifications=NotificationSettings(
            daily_limit=5,
            max_attempts=3,
            retry_base_seconds=0.5,
            retry_max_seconds=2,
            expiry_notice_hours=48,
        ),
        smtp=SmtpSettings(timeout_seconds=20),
    )
    policy = NotificationPolicy.from_settings(settings)
    assert policy.daily_limit == 5
    assert policy.max_attempts == 3
    assert policy.retry_base == timedelta(seconds=0.5)
    assert policy.retry_max == timedelta(seconds=2)
    assert policy.expiry_notice == timedelta(hours=48)
    # A lease outlasts the slowest conversation the SMTP timeout allows.
    assert policy.lease >= timedelta(seconds=20 * 6)


def test_the_defaults_are_two_a_day_and_a_24_hour_notice() -> None:
    policy = NotificationPolicy.from_settings(Settings())
    assert policy.daily_limit == 2
    assert policy.expiry_notice == timedelta(hours=24)


def test_dedup_keys_differ_by_kind_user_and_reference() -> None:
    user, other = new_id(), new_id()
    keys = {
        dedup_key(NotificationKind.BALANCE_LOW, user, "e1"),
        dedup_key(NotificationKind.BALANCE_LOW, user, "e2"),
        dedup_key(NotificationKind.REFERRAL_BONUS, user, "e1"),
        dedup_key(NotificationKind.BALANCE_LOW, other, "e1"),
    }
    assert len(keys) == 4


# --- templates -------------------------------------------------------------------------------

VALUES = {
    NotificationKind.TOKEN_EXPIRING: {
        "token_prefix": "AbCdEfGh",
        "duration_hours": "168",
        "expires_at": "2026-11-27 10:00 UTC",
        "time_left": "about 23 hours",
        "purchase_url": "https://zenzefi.example/tokens/purchase",
    },
    NotificationKind.BALANCE_LOW: {
        "balance": "7.50",
        "threshold": "10.00",
        "topup_url": "https://zenzefi.example/currency/purchase",
    },
    NotificationKind.REFERRAL_BONUS: {
        "amount": "1.80",
        "new_balance": "101.80",
        "referral_code": "ABCDEF123456",
        "referee_username": "rita",
    },
}


@pytest.mark.parametrize("kind", KINDS)
def test_each_email_has_its_subject_and_both_versions(kind: NotificationKind) -> None:
    email = render_email(
        kind, VALUES[kind], username="alice", unsubscribe_url="https://u.example/x?token=t"
    )
    assert email.subject == SUBJECTS[kind]
    for value in VALUES[kind].values():
        assert value in email.text
        assert value in email.html
    assert email.text.startswith("Hello alice,")
    assert "https://u.example/x?token=t" in email.text
    # In HTML the link's & and other characters are escaped, as HTML requires.
    assert 'href="https://u.example/x?token=t"' in email.html
    assert email.html.lstrip().startswith("<!DOCTYPE html>")


def test_the_subjects_are_the_product_documents() -> None:
    assert SUBJECTS == {
        NotificationKind.TOKEN_EXPIRING: "Your access token expires soon",
        NotificationKind.BALANCE_LOW: "Low balance alert",
        NotificationKind.REFERRAL_BONUS: "You earned a referral bonus!",
    }


def test_values_are_escaped_in_html_but_not_in_text() -> None:
    email = render_email(
        NotificationKind.BALANCE_LOW,
        VALUES[NotificationKind.BALANCE_LOW],
        username='<script>alert("x")</script>',
        unsubscribe_url="https://u.example/?a=1&b=2",
    )
    assert '<script>alert("x")</script>' in email.text
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in email.html
    assert "https://u.example/?a=1&amp;b=2" in email.html


def test_a_missing_value_fails_instead_of_sending_a_hole() -> None:
    values = dict(VALUES[NotificationKind.REFERRAL_BONUS])
    del values["referral_code"]
    with pytest.raises(KeyError):
        render_email(
            NotificationKind.REFERRAL_BONUS, values, username="a", unsubscribe_url="https://u"
        )
