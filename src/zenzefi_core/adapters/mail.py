"""Mailers: SMTP for production, a mailbox folder for the embedded default, a list for tests.

All three build the same MIME message (plain text with an HTML alternative), so what lands in
the mailbox folder is byte for byte what an SMTP server would have received.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import tempfile
import threading
from email import policy
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate
from pathlib import Path

from zenzefi_core.errors import MailDeliveryFailed
from zenzefi_core.ports import EmailMessage, Mailer
from zenzefi_core.settings import Settings, SmtpSettings

#: RFC 5322's line limit rather than the usual 78: folding a long header that has no spaces (the
#: unsubscribe URL) would otherwise turn it into encoded words no mail client reads as a link.
_POLICY = policy.default.clone(max_line_length=998)


def to_mime(message: EmailMessage, sender: str) -> MimeMessage:
    mime = MimeMessage(policy=_POLICY)
    mime["From"] = sender
    mime["To"] = message.recipient
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(usegmt=True)
    mime["Message-ID"] = message.message_id
    # RFC 3834: an automatic message, so auto-responders do not answer it.
    mime["Auto-Submitted"] = "auto-generated"
    if message.unsubscribe_url:
        # RFC 2369 and RFC 8058: mail clients show an unsubscribe button that POSTs
        # `List-Unsubscribe=One-Click` to the link, without opening a page.
        mime["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        mime["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime


def _permanent(error: smtplib.SMTPException) -> bool:
    """Only a refusal of this recipient or this message is final; anything else (a server that
    is down, busy, or refuses our credentials) may work later or once an operator fixed it."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in error.recipients.values())
    if isinstance(error, smtplib.SMTPDataError):
        return error.smtp_code >= 500
    return False


class SmtpMailer:
    """One SMTP conversation per email: connect, STARTTLS and log in when configured, send.

    No connection is kept between emails: the volume is a few emails per user per day, and a
    fresh connection never finds a server that has silently dropped an idle one.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not settings.host:
            raise ValueError("SmtpMailer needs ZENZEFI_SMTP_HOST")
        self._settings = settings
        self._host = settings.host
        self._ssl_context = ssl_context

    def send(self, message: EmailMessage) -> None:
        settings = self._settings
        mime = to_mime(message, settings.from_)
        try:
            with smtplib.SMTP(self._host, settings.port, timeout=settings.timeout_seconds) as smtp:
                if settings.starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                if settings.username:
                    password = settings.password.get_secret_value() if settings.password else ""
                    smtp.login(settings.username, password)
                smtp.send_message(mime)
        except smtplib.SMTPException as error:
            raise MailDeliveryFailed(
                f"SMTP {self._host}:{settings.port}: {error}", permanent=_permanent(error)
            ) from error
        except OSError as error:
            # Refused, unreachable, timed out, or the TLS handshake failed (`ssl.SSLError`).
            raise MailDeliveryFailed(f"SMTP {self._host}:{settings.port}: {error}") from error


class MailboxMailer:
    """Writes each email as an `.eml` file in a folder: the embedded default, where nobody has
    configured a mail server. Any mail client opens the files."""

    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory
        self._sender = sender

    def send(self, message: EmailMessage) -> None:
        data = to_mime(message, self._sender).as_bytes()
        # Named after the Message-ID: a repeated attempt overwrites instead of adding a copy.
        name = message.message_id.strip("<>").replace("@", "_").replace("/", "_") + ".eml"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed, so a reader never sees half an email.
            handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".part")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            Path(temporary).replace(self.directory / name)
        except OSError as error:
            raise MailDeliveryFailed(f"mailbox {self.directory}: {error}") from error


class MemoryMailer:
    """Keeps the emails in a list; for tests and for library users who send nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> None:
        with self._lock:
            self.sent.append(message)


def mailer_from_settings(settings: Settings) -> Mailer:
    """SMTP when a host is configured, the mailbox folder under DATA_DIR otherwise."""
    if settings.smtp.host:
        return SmtpMailer(settings.smtp)
    return MailboxMailer(settings.data_dir / "mailbox", settings.smtp.from_)
