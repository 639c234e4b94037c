"""The mailers against a real SMTP server on loopback: plain, STARTTLS with login, and the ways a
server can fail; and the mailbox folder of the embedded default."""

from __future__ import annotations

import dataclasses
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from tests.notifications import SmtpServer, free_port
from zenzefi_core.adapters.mail import MailboxMailer, SmtpMailer, mailer_from_settings
from zenzefi_core.errors import MailDeliveryFailed
from zenzefi_core.ports import EmailMessage
from zenzefi_core.settings import Settings, SmtpSettings

MESSAGE = EmailMessage(
    recipient="alice@example.com",
    subject="Low balance alert",
    text="Hello alice,\n\nYour balance is low.\n",
    html="<p>Hello alice,</p><p>Your balance is <b>low</b>.</p>",
    message_id="<0190abcd@zenzefi.example>",
    unsubscribe_url="https://zenzefi.example/api/v1/notifications/unsubscribe?token=t",
)


def smtp_settings(port: int, **fields: object) -> SmtpSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "timeout_seconds": 5,
        "ZENZEFI_SMTP_FROM": "Zenzefi <no-reply@zenzefi.example>",
    }
    values.update(fields)
    return SmtpSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def plain() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def test_an_email_goes_out_with_both_versions_and_its_headers(plain: SmtpServer) -> None:
    SmtpMailer(smtp_settings(plain.port)).send(MESSAGE)
    (received,) = plain.wait_for(1)
    assert received.mail_from == "no-reply@zenzefi.example"
    assert received.rcpt_tos == ["alice@example.com"]
    message = received.message
    assert message["From"] == "Zenzefi <no-reply@zenzefi.example>"
    assert message["Subject"] == "Low balance alert"
    assert message["Message-ID"] == "<0190abcd@zenzefi.example>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["List-Unsubscribe"] == f"<{MESSAGE.unsubscribe_url}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Date"]
    assert received.text == MESSAGE.text
    assert received.html.strip() == MESSAGE.html
    assert not received.tls


def test_a_server_that_is_down_is_a_failure_worth_retrying() -> None:
    with pytest.raises(MailDeliveryFailed) as failure:
        SmtpMailer(smtp_settings(free_port())).send(MESSAGE)
    assert not failure.value.permanent
    assert "127.0.0.1" in str(failure.value)


def test_a_refused_recipient_is_a_permanent_failure(plain: SmtpServer) -> None:
    plain.refused.add("alice@example.com")
    with pytest.raises(MailDeliveryFailed) as failure:
        SmtpMailer(smtp_settings(plain.port)).send(MESSAGE)
    assert failure.value.permanent
    assert plain.messages() == []


# --- STARTTLS and login ----------------------------------------------------------------------

USER, PASSWORD = "mailer", "mail-password"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


@pytest.fixture
def secure(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = SmtpServer(
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    ).start()
    yield server
    server.stop()


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_starttls_and_login_as_configured(
    secure: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    settings = smtp_settings(
        secure.port, starttls=True, username=USER, password=SecretStr(PASSWORD)
    )
    SmtpMailer(settings, ssl_context=trusting(certificate)).send(MESSAGE)
    (received,) = secure.wait_for(1)
    assert received.tls
    assert received.login == USER
    assert received.rcpt_tos == ["alice@example.com"]


def test_a_wrong_password_is_worth_retrying_once_fixed(
    secure: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    settings = smtp_settings(secure.port, starttls=True, username=USER, password=SecretStr("no"))
    with pytest.raises(MailDeliveryFailed) as failure:
        SmtpMailer(settings, ssl_context=trusting(certificate)).send(MESSAGE)
    assert not failure.value.permanent
    assert secure.messages() == []


def test_a_server_that_requires_starttls_refuses_a_plain_conversation(
    secure: SmtpServer,
) -> None:
    with pytest.raises(MailDeliveryFailed):
        SmtpMailer(smtp_settings(secure.port)).send(MESSAGE)
    assert secure.messages() == []


def test_a_certificate_nobody_vouches_for_is_refused(secure: SmtpServer) -> None:
    settings = smtp_settings(
        secure.port, starttls=True, username=USER, password=SecretStr(PASSWORD)
    )
    with pytest.raises(MailDeliveryFailed) as failure:
        SmtpMailer(settings).send(MESSAGE)  # the system's trust store
    assert "certificate" in str(failure.value).lower()
    assert secure.messages() == []


# --- the mailbox folder ----------------------------------------------------------------------


def test_the_mailbox_keeps_each_email_as_an_eml_file(tmp_path: Path) -> None:
    mailbox = tmp_path / "mailbox"
    mailer = MailboxMailer(mailbox, "Zenzefi <no-reply@zenzefi.example>")
    mailer.send(MESSAGE)
    mailer.send(MESSAGE)  # a repeated attempt replaces the file instead of adding a copy

    (path,) = mailbox.iterdir()
    assert path.name == "0190abcd_zenzefi.example.eml"
    message = message_from_bytes(path.read_bytes(), policy=email_policy.default)
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Low balance alert"
    plain_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert plain_part is not None
    assert html_part is not None
    assert plain_part.get_content() == MESSAGE.text
    assert "<b>low</b>" in html_part.get_content()


def test_an_unwritable_mailbox_is_a_delivery_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(MailDeliveryFailed):
        MailboxMailer(blocker, "x@example.com").send(MESSAGE)


def test_the_settings_choose_the_mailer(tmp_path: Path) -> None:
    embedded = mailer_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(embedded, MailboxMailer)
    assert embedded.directory == tmp_path / "mailbox"
    configured = Settings(data_dir=tmp_path, smtp=smtp_settings(2525))
    assert isinstance(mailer_from_settings(configured), SmtpMailer)


def test_an_email_without_an_unsubscribe_link_claims_no_one_click(plain: SmtpServer) -> None:
    SmtpMailer(smtp_settings(plain.port)).send(dataclasses.replace(MESSAGE, unsubscribe_url=None))
    (received,) = plain.wait_for(1)
    assert received.message["List-Unsubscribe"] is None
    assert received.message["List-Unsubscribe-Post"] is None
