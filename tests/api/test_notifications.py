"""Email preferences over HTTP, and the unsubscribe link from a real email: it works without
logging in, and a forged or altered one changes nothing."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.api.conftest import Account, Accounts, ApiClient
from zenzefi_core.adapters.mail import MemoryMailer
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain import TransactionType
from zenzefi_core.domain.notifications import NotificationKind
from zenzefi_core.notifications import NotificationPolicy, UnsubscribeLinks
from zenzefi_core.ports import EmailMessage
from zenzefi_core.services.notifications import QueueEventEmail, SendNotification
from zenzefi_core.settings import Settings

PREFERENCES = "/api/v1/users/me/notifications"
UNSUBSCRIBE = "/api/v1/notifications/unsubscribe"
ALL_ON = {"token_expiring": True, "balance_low": True, "referral_bonus": True}


def low_balance_email(core: Core, settings: Settings, accounts: Accounts, who: Account) -> str:
    """Take `who` below the line and have the alert rendered and sent; its unsubscribe path."""
    accounts.post(who, "15.00")
    accounts.post(who, "-8.00", TransactionType.PURCHASE, "A token")
    with core.uow() as uow:
        (event,) = [e for e in uow.outbox.pending(limit=100) if e.event_type == "balance.low"]
    links = UnsubscribeLinks.from_settings(settings)
    policy = NotificationPolicy.from_settings(settings)
    mailer = MemoryMailer()
    queued = QueueEventEmail(core.uow, core.clock, links, settings.public_url, policy)(event.id)
    assert queued.notification_id is not None
    SendNotification(core.uow, core.clock, mailer, links, settings.public_url, policy)(
        queued.notification_id
    )
    (email,) = mailer.sent
    return unsubscribe_path(email)


def unsubscribe_path(email: EmailMessage) -> str:
    assert email.unsubscribe_url is not None
    assert email.unsubscribe_url in email.text
    link = urlsplit(email.unsubscribe_url)
    assert link.path == UNSUBSCRIBE
    return f"{link.path}?{link.query}"


def test_every_kind_is_on_until_turned_off(client: ApiClient, accounts: Accounts) -> None:
    alice = accounts.register("alice")
    assert client.get(PREFERENCES, headers=alice.headers).json() == ALL_ON

    response = client.put(PREFERENCES, json={"referral_bonus": False}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {**ALL_ON, "referral_bonus": False}
    assert client.get(PREFERENCES, headers=alice.headers).json() == {
        **ALL_ON,
        "referral_bonus": False,
    }

    both = {"referral_bonus": True, "balance_low": False}
    assert client.put(PREFERENCES, json=both, headers=alice.headers).json() == {
        **ALL_ON,
        "balance_low": False,
    }
    # Another user's settings are their own.
    bob = accounts.register("bob")
    assert client.get(PREFERENCES, headers=bob.headers).json() == ALL_ON


def test_preferences_need_a_login(client: ApiClient) -> None:
    assert client.get(PREFERENCES).status_code == 401
    assert client.put(PREFERENCES, json={"balance_low": False}).status_code == 401


@pytest.mark.parametrize(
    "body",
    [{"balance_low": "no"}, {"newsletter": False}, {"balance_low": None}, ["balance_low"]],
)
def test_a_malformed_change_is_refused(client: ApiClient, accounts: Accounts, body: object) -> None:
    alice = accounts.register("alice")
    response = client.put(PREFERENCES, json=body, headers=alice.headers)
    assert response.status_code in (400, 422), response.text
    assert client.get(PREFERENCES, headers=alice.headers).json() == ALL_ON


def test_the_link_in_an_email_unsubscribes_without_a_login(
    client: ApiClient, accounts: Accounts, core: Core, settings: Settings
) -> None:
    alice = accounts.register("alice")
    path = low_balance_email(core, settings, accounts, alice)

    response = client.get(path)  # no Authorization header
    assert response.status_code == 200, response.text
    assert response.json() == {
        "kind": "balance_low",
        "enabled": False,
        "detail": "You will no longer receive low balance alerts by email.",
    }
    assert client.get(PREFERENCES, headers=alice.headers).json() == {
        **ALL_ON,
        "balance_low": False,
    }
    # Following the link again is harmless.
    assert client.get(path).status_code == 200


def test_a_forged_or_altered_link_changes_nothing(
    client: ApiClient, accounts: Accounts, core: Core, settings: Settings
) -> None:
    alice = accounts.register("alice")
    bob = accounts.register("bob")
    token = low_balance_email(core, settings, accounts, alice).split("token=", 1)[1]
    user, kind, signature = token.split(".")
    forged = [
        f"{user}.referral_bonus.{signature}",  # another kind
        f"{bob.id.hex}.{kind}.{signature}",  # another user
        f"{user}.{kind}.{signature[:-4]}AAAA",  # another signature
        # signed, but with another key
        UnsubscribeLinks("not-the-server-key-" + "x" * 40, settings.public_url).token(
            alice.id, NotificationKind(kind)
        ),
        "garbage",
    ]
    for attempt in forged:
        response = client.get(UNSUBSCRIBE, params={"token": attempt})
        assert response.status_code == 401, (attempt, response.text)
        assert response.json()["detail"] == "Invalid unsubscribe link"
    assert client.get(UNSUBSCRIBE).status_code == 422
    assert client.get(PREFERENCES, headers=alice.headers).json() == ALL_ON
    assert client.get(PREFERENCES, headers=bob.headers).json() == ALL_ON


def test_the_routes_are_in_the_schema(client: ApiClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths[PREFERENCES]["get"]["operationId"] == "getNotificationPreferences"
    assert paths[PREFERENCES]["put"]["operationId"] == "updateNotificationPreferences"
    unsubscribe = paths[UNSUBSCRIBE]["get"]
    assert unsubscribe["operationId"] == "unsubscribe"
    assert "security" not in unsubscribe or unsubscribe["security"] in ([], [{}])
