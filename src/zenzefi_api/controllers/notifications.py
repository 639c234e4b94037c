"""Email preferences, and the signed unsubscribe link every email carries."""

from __future__ import annotations

import html
from typing import Annotated, Literal
from urllib.parse import urlencode

import msgspec
from litestar import Controller, MediaType, Response, get, post, put
from litestar.enums import RequestEncodingType
from litestar.params import Body, JSONBody, QueryParameter

from zenzefi_api.auth import BEARER, login_required
from zenzefi_api.context import CoreDep, CurrentUser
from zenzefi_api.schemas import error_responses
from zenzefi_core.domain.notifications import NotificationKind
from zenzefi_core.emails import KIND_NAMES
from zenzefi_core.notifications import UnsubscribeLinks
from zenzefi_core.services.notifications import (
    GetNotificationPreferences,
    ReadUnsubscribeLink,
    Unsubscribe,
    UpdateNotificationPreferences,
)

K = NotificationKind


class PreferencesOut(msgspec.Struct, kw_only=True):
    """Whether the caller gets each kind of email; every kind is on until turned off."""

    token_expiring: Annotated[bool, msgspec.Meta(description="Your access token expires soon")]
    balance_low: Annotated[bool, msgspec.Meta(description="Low balance alert")]
    referral_bonus: Annotated[bool, msgspec.Meta(description="You earned a referral bonus!")]

    @classmethod
    def of(cls, preferences: dict[NotificationKind, bool]) -> PreferencesOut:
        return cls(
            token_expiring=preferences[K.TOKEN_EXPIRING],
            balance_low=preferences[K.BALANCE_LOW],
            referral_bonus=preferences[K.REFERRAL_BONUS],
        )


class PreferencesIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The kinds to turn on (`true`) or off (`false`); kinds not sent keep their setting."""

    token_expiring: bool | msgspec.UnsetType = msgspec.UNSET
    balance_low: bool | msgspec.UnsetType = msgspec.UNSET
    referral_bonus: bool | msgspec.UnsetType = msgspec.UNSET

    def changes(self) -> dict[NotificationKind, bool]:
        sent = {
            K.TOKEN_EXPIRING: self.token_expiring,
            K.BALANCE_LOW: self.balance_low,
            K.REFERRAL_BONUS: self.referral_bonus,
        }
        return {kind: value for kind, value in sent.items() if isinstance(value, bool)}


class OneClick(msgspec.Struct, kw_only=True):
    """The form a mail client posts for a one-click unsubscribe (RFC 8058), which the page's
    own form posts too; an empty body does the same. Other fields are ignored."""

    list_unsubscribe: Annotated[
        Literal["One-Click"] | msgspec.UnsetType,
        msgspec.Meta(description="`One-Click` when sent"),
    ] = msgspec.field(default=msgspec.UNSET, name="List-Unsubscribe")


#: The pages run no script, load nothing, may only post their form back here, are never framed,
#: stored or sent on as a referrer (their address holds the link's token).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _page(title: str, *paragraphs: str, form: str = "") -> Response[str]:
    """A small HTML page; every paragraph is escaped here, the form is built escaped."""
    body = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs)
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)} · Zenzefi</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}{form}</main></body></html>"
    )
    return Response(page, media_type=MediaType.HTML, headers=PAGE_HEADERS)


def _confirm_form(token: str) -> str:
    action = html.escape("?" + urlencode({"token": token}), quote=True)
    return (
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )


_TOKEN = Annotated[
    str, QueryParameter(max_length=200, description="The token from the email's link")
]


class NotificationsController(Controller):
    """The caller's preferences (logged in), and the unsubscribe link (signed, no login)."""

    path = "/"
    tags = ("Notifications",)

    @get(
        "/users/me/notifications",
        operation_id="getNotificationPreferences",
        guards=[login_required],
        security=BEARER,
        summary="The caller's email preferences",
        responses=error_responses(401, 403, 503),
        sync_to_thread=True,
    )
    def preferences(self, core: CoreDep, current_user: CurrentUser) -> PreferencesOut:
        return PreferencesOut.of(GetNotificationPreferences(core.uow)(current_user.id))

    @put(
        "/users/me/notifications",
        operation_id="updateNotificationPreferences",
        guards=[login_required],
        security=BEARER,
        summary="Turn kinds of email on or off",
        description="Only the kinds sent change. Returns every kind's setting.",
        responses=error_responses(400, 401, 403, 413, 422, 503),
        sync_to_thread=True,
    )
    def update(
        self, core: CoreDep, current_user: CurrentUser, data: JSONBody[PreferencesIn]
    ) -> PreferencesOut:
        updated = UpdateNotificationPreferences(core.uow, core.clock)(
            current_user.id, data.changes()
        )
        return PreferencesOut.of(updated)

    @get(
        "/notifications/unsubscribe",
        operation_id="unsubscribePage",
        media_type=MediaType.HTML,
        summary="The page of the unsubscribe link in an email: asks to confirm, changes nothing",
        description="A small HTML page naming the kind of email, with a form that POSTs to the "
        "same address. Opening the link changes nothing, so a mail scanner or link preview "
        "following it unsubscribes nobody. The token names the user and the kind and is signed "
        "by the server; a forged or altered one is 401.",
        responses=error_responses(401, 404, 422, 503),
        sync_to_thread=True,
    )
    def unsubscribe_page(self, core: CoreDep, token: _TOKEN) -> Response[str]:
        links = UnsubscribeLinks.from_settings(core.settings)
        link = ReadUnsubscribeLink(core.uow, links)(token)
        name = KIND_NAMES[link.kind]
        if not link.enabled:
            return _page("Unsubscribed", f"You already receive no {name} by email.")
        return _page(
            "Unsubscribe",
            f"Stop receiving {name} by email?",
            "Nothing changes until you press the button.",
            form=_confirm_form(token),
        )

    @post(
        "/notifications/unsubscribe",
        operation_id="unsubscribe",
        media_type=MediaType.HTML,
        status_code=200,
        summary="Turn one kind of email off from the link in the email, without logging in",
        description="The confirming form of the page, and the RFC 8058 one-click target named "
        "by every email's `List-Unsubscribe` and `List-Unsubscribe-Post: "
        "List-Unsubscribe=One-Click` headers: a mail client posts the form body "
        "`List-Unsubscribe=One-Click`. The body may also be left out. The token is the only "
        "credential; a forged or altered one is 401 and changes nothing. Posting twice is "
        "harmless. Answers a small HTML page.",
        responses=error_responses(400, 401, 404, 413, 422, 503),
        sync_to_thread=True,
    )
    def unsubscribe(
        self,
        core: CoreDep,
        token: _TOKEN,
        data: Annotated[OneClick, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response[str]:
        # `data` is declared to have the form checked and documented; it carries no choice.
        links = UnsubscribeLinks.from_settings(core.settings)
        done = Unsubscribe(core.uow, core.clock, links)(token)
        return _page(
            "Unsubscribed", f"You will no longer receive {KIND_NAMES[done.kind]} by email."
        )
