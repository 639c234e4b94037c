"""The emails' words: a plain-text and an HTML version of each, from `templates/email/`.

Templates are `string.Template` files (standard library, no template engine to learn or to
sandbox): `<kind>.txt` and `<kind>.html` hold the body, `layout.txt` and `layout.html` the
greeting, signature and unsubscribe footer around it. Every value is escaped before it goes into
the HTML, so a username such as `<b>` arrives as text.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

from zenzefi_core.domain.notifications import NotificationKind

#: The subjects of the product documents.
SUBJECTS: dict[NotificationKind, str] = {
    NotificationKind.TOKEN_EXPIRING: "Your access token expires soon",
    NotificationKind.BALANCE_LOW: "Low balance alert",
    NotificationKind.REFERRAL_BONUS: "You earned a referral bonus!",
}

#: What each kind is called in words (the footer says it is turned on).
KIND_NAMES: dict[NotificationKind, str] = {
    NotificationKind.TOKEN_EXPIRING: "token expiry reminders",
    NotificationKind.BALANCE_LOW: "low balance alerts",
    NotificationKind.REFERRAL_BONUS: "referral bonus notices",
}


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@cache
def _template(name: str) -> Template:
    source = resources.files("zenzefi_core").joinpath("templates", "email", name)
    return Template(source.read_text(encoding="utf-8"))


def render_email(
    kind: NotificationKind,
    values: Mapping[str, str],
    *,
    username: str,
    unsubscribe_url: str,
) -> RenderedEmail:
    """Both versions of one email. `values` must name every placeholder of the kind's body;
    a missing one raises `KeyError` rather than sending an email with a hole in it."""
    subject = SUBJECTS[kind]
    frame = {
        "username": username,
        "unsubscribe_url": unsubscribe_url,
        "reason": KIND_NAMES[kind],
        "subject": subject,
    }
    text_body = _template(f"{kind.value}.txt").substitute(values)
    text = _template("layout.txt").substitute(frame, body=text_body)
    escaped = {key: html.escape(value) for key, value in {**values, **frame}.items()}
    html_body = _template(f"{kind.value}.html").substitute(escaped)
    html_text = _template("layout.html").substitute(escaped, body=html_body)
    return RenderedEmail(subject=subject, text=text, html=html_text)
