"""Email preferences over HTTP, and the unsubscribe link from a real email: it works without
logging in, and a forged or altered one changes nothing."""

from __future__ import annotations

import json
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


ONE_CLICK = {"List-Unsubscribe": "One-Click"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_opening_the_link_changes_nothing_until_the_form_is_posted(
    client: ApiClient, accounts: Accounts, core: Core, settings: Settings
) -> None:
    alice = accounts.register("alice")
    path = low_balance_email(core, settings, accounts, alice)
    token = path.split("token=", 1)[1]

    for _ in range(3):  # a mail scanner, a link preview, then the user
        page = client.get(path)  # no Authorization header
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert client.get(PREFERENCES, headers=alice.headers).json() == ALL_ON
    assert "Stop receiving low balance alerts by email?" in page.text
    assert '<form method="post" action="?token=' + token + '">' in page.text
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"

    # What the page's form sends.
    done = client.post(path, data=ONE_CLICK)
    assert done.status_code == 200, done.text
    assert done.headers["content-type"].startswith("text/html")
    assert "You will no longer receive low balance alerts by email." in done.text
    assert client.get(PREFERENCES, headers=alice.headers).json() == {
        **ALL_ON,
        "balance_low": False,
    }
    again = client.get(path)
    assert "You already receive no low balance alerts by email." in again.text
    assert "<form" not in again.text
    # Posting again is harmless.
    assert client.post(path, data=ONE_CLICK).status_code == 200


def test_a_mail_clients_one_click_post_unsubscribes_without_a_login(
    client: ApiClient, accounts: Accounts, core: Core, settings: Settings
) -> None:
    alice = accounts.register("alice")
    path = low_balance_email(core, settings, accounts, alice)
    # RFC 8058: exactly this body, form-encoded, to the List-Unsubscribe address.
    response = client.post(path, content=b"List-Unsubscribe=One-Click", headers=FORM)
    assert response.status_code == 200, response.text
    assert client.get(PREFERENCES, headers=alice.headers).json() == {
        **ALL_ON,
        "balance_low": False,
    }


def test_a_post_without_a_body_unsubscribes_too(
    client: ApiClient, accounts: Accounts, core: Core, settings: Settings
) -> None:
    alice = accounts.register("alice")
    path = low_balance_email(core, settings, accounts, alice)
    assert client.post(path).status_code == 200
    assert client.get(PREFERENCES, headers=alice.headers).json()["balance_low"] is False


def test_a_post_with_another_one_click_value_changes_nothing(
    client: ApiClient, accounts: Accounts, core: Core, settings: Settings
) -> None:
    alice = accounts.register("alice")
    path = low_balance_email(core, settings, accounts, alice)
    response = client.post(path, data={"List-Unsubscribe": "Two-Clicks"})
    assert response.status_code == 422, response.text
    assert client.get(PREFERENCES, headers=alice.headers).json() == ALL_ON


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
        '"><script>alert(1)</script>',
    ]
    for attempt in forged:
        for response in (
            client.get(UNSUBSCRIBE, params={"token": attempt}),
            client.post(UNSUBSCRIBE, params={"token": attempt}, data=ONE_CLICK),
        ):
            assert response.status_code == 401, (attempt, response.text)
            assert response.json()["detail"] == "Invalid unsubscribe link"
            assert "<script>" not in response.text
    assert client.get(UNSUBSCRIBE).status_code == 422
    assert client.post(UNSUBSCRIBE, data=ONE_CLICK).status_code == 422
    assert client.get(PREFERENCES, headers=alice.headers).json() == ALL_ON
    assert client.get(PREFERENCES, headers=bob.headers).json() == ALL_ON


def test_the_routes_are_in_the_schema(client: ApiClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths[PREFERENCES]["get"]["operationId"] == "getNotificationPreferences"
    assert paths[PREFERENCES]["put"]["operationId"] == "updateNotificationPreferences"
    page, confirm = paths[UNSUBSCRIBE]["get"], paths[UNSUBSCRIBE]["post"]
    assert page["operationId"] == "unsubscribePage"
    assert confirm["operationId"] == "unsubscribe"
    for operation in (page, confirm):
        assert "security" not in operation or operation["security"] in ([], [{}])
        assert "text/html" in operation["responses"]["200"]["content"]
        assert "application/json" in operation["responses"]["401"]["content"]
    form = confirm["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    one_click = client.get("/openapi.json").json()["components"]["schemas"]["OneClick"]
    assert form == {"$ref": "#/components/schemas/OneClick"}
    assert '"const": "One-Click"' in json.dumps(one_click["properties"]["List-Unsubscribe"])
