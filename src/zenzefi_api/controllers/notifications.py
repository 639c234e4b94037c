"""Email preferences, and the signed unsubscribe link every email carries."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get, put
from litestar.params import JSONBody, QueryParameter

from zenzefi_api.auth import BEARER, login_required
from zenzefi_api.context import CoreDep, CurrentUser
from zenzefi_api.schemas import error_responses
from zenzefi_core.domain.notifications import NotificationKind
from zenzefi_core.emails import KIND_NAMES
from zenzefi_core.notifications import UnsubscribeLinks
from zenzefi_core.services.notifications import (
    GetNotificationPreferences,
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


class UnsubscribedOut(msgspec.Struct, kw_only=True):
    kind: NotificationKind
    enabled: bool
    detail: str


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
        operation_id="unsubscribe",
        summary="Turn one kind of email off from the link in the email, without logging in",
        description="The token names the user and the kind and is signed by the server; a "
        "forged or altered one is 401 and changes nothing. Following a link twice is harmless.",
        responses=error_responses(401, 404, 422, 503),
        sync_to_thread=True,
    )
    def unsubscribe(
        self,
        core: CoreDep,
        token: Annotated[
            str, QueryParameter(max_length=200, description="The token from the email's link")
        ],
    ) -> UnsubscribedOut:
        done = Unsubscribe(core.uow, core.clock, UnsubscribeLinks.from_settings(core.settings))(
            token
        )
        return UnsubscribedOut(
            kind=done.kind,
            enabled=False,
            detail=f"You will no longer receive {KIND_NAMES[done.kind]} by email.",
        )
