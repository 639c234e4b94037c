"""Where a webhook may go: the sender connects to the addresses the core checked and nowhere
else, keeps the host name for `Host`, SNI and certificate checks, and a name that resolves to
a public address at the check and to loopback afterwards (DNS rebinding) never reaches the
loopback server running here. End to end on the in-process broker and on Redis, on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dramatiq
import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dramatiq.brokers.stub import StubBroker

from tests.notifications import eventually
from tests.worker.conftest import Running, account
from tests.worker.test_webhook_delivery import FAST, log
from zenzefi_core.bootstrap import Core
from zenzefi_core.domain.webhooks import DeliveryState
from zenzefi_core.errors import WebhookSendFailed
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.webhooks import CreateWebhook, SendTestWebhook, WebhookPolicy
from zenzefi_core.settings import Settings, WebhookSettings
from zenzefi_core.webhooks import SecretCipher, verify_webhook
from zenzefi_worker.app import WorkerApp
from zenzefi_worker.broker import build_broker
from zenzefi_worker.webhooks import HttpxWebhookSender

NAME = "hooks.zenzefi.test"
#: A public address the receiver's name "has" at every check; the tests never let a connection
#: to it leave the machine.
PUBLIC = "93.184.215.14"
#: One retry is enough to show every attempt behaves the same.
ONE_RETRY = WebhookSettings(retry_delays_seconds=[0.1], timeout_seconds=2.0)


class Listener:
    """An HTTP(S) server on one loopback address that keeps what it receives, and the TLS
    server name each client asked for."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.server_names: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                listener.received.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            tls.sni_callback = self._remember_name
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _remember_name(self, _socket: ssl.SSLObject, name: str, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.stop()


@pytest.fixture
def system_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's resolver answers 127.0.0.1 for the receiver's name: what an HTTP client
    that looks the name up again at connect time would be given by a rebinding name."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in (NAME, NAME.encode()):
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address a webhook connection is opened to. One to `PUBLIC` is refused here, as an
    unreachable receiver would be, so no test sends anything to the internet."""
    opened: list[str] = []
    real = httpcore.SyncBackend.connect_tcp

    def connect_tcp(
        self: httpcore.SyncBackend, host: str, port: int, *args: Any, **kwargs: Any
    ) -> httpcore.NetworkStream:
        opened.append(host)
        if host == PUBLIC:
            raise httpcore.ConnectError("unreachable from the test")
        return real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    return opened


class Rebinding:
    """A resolver that answers `PUBLIC` to the first `public_lookups` lookups of the name and
    127.0.0.1 afterwards."""

    def __init__(self, public_lookups: int) -> None:
        self.public_lookups = public_lookups
        self.lookups = 0
        self.lock = threading.Lock()

    def resolve(self, host: str) -> list[str]:
        with self.lock:
            self.lookups += 1
            return [PUBLIC] if self.lookups <= self.public_lookups else ["127.0.0.1"]


# --- the sender ----------------------------------------------------------------------------


def test_the_simulated_rebinding_does_lead_a_client_that_resolves_again_inside(
    system_dns: None, loopback: Listener
) -> None:
    """The control: an HTTP client that looks the name up itself reaches the loopback server,
    so the tests below would catch a sender that did."""
    with httpx.Client(trust_env=False) as client:
        assert client.post(f"http://{NAME}:{loopback.port}/hook", content=b"{}").status_code == 200
    assert len(loopback.received) == 1


def test_the_sender_connects_to_the_checked_address_not_to_what_the_name_resolves_to(
    system_dns: None, loopback: Listener
) -> None:
    # A second server on the same port of another loopback address: the checked one.
    checked = Listener("127.0.0.2", loopback.port)
    sender = HttpxWebhookSender(FAST)
    try:
        url = f"http://{NAME}:{loopback.port}/hook"
        status, answer = sender.post(url, {"webhook-id": "m1"}, b"{}", addresses=["127.0.0.2"])
        # The next address when the first refuses the connection.
        sender.post(url, {"webhook-id": "m2"}, b"{}", addresses=["127.0.0.3", "127.0.0.2"])
    finally:
        sender.close()
        checked.stop()
    assert (status, answer) == (200, b"ok")
    assert loopback.received == []
    assert [h["webhook-id"] for h, _ in checked.received] == ["m1", "m2"]
    assert {h["Host"] for h, _ in checked.received} == {f"{NAME}:{loopback.port}"}


def test_the_sender_connects_nowhere_without_a_checked_address(
    system_dns: None, loopback: Listener
) -> None:
    sender = HttpxWebhookSender(FAST)
    try:
        with pytest.raises(WebhookSendFailed, match="no checked address"):
            sender.post(f"http://{NAME}:{loopback.port}/hook", {}, b"{}", addresses=[])
    finally:
        sender.close()
    assert loopback.received == []


def test_the_answer_kept_is_at_most_1_kib(loopback: Listener) -> None:
    assert WebhookSettings().max_response_bytes == 1024
    with pytest.raises(ValueError, match="1024"):
        WebhookSettings(max_response_bytes=65_536)


def _certificate(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for `name` only, and its key, in PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # What strict verification (Python 3.13's default) asks of a self-signed certificate.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def tls_receiver(tmp_path: Any) -> Iterator[tuple[Listener, ssl.SSLContext]]:
    """An HTTPS server on 127.0.0.1 with a certificate for `NAME`, and a client context that
    trusts that certificate (and nothing else)."""
    certificate, key = _certificate(NAME)
    (tmp_path / "cert.pem").write_bytes(certificate)
    (tmp_path / "key.pem").write_bytes(key)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = Listener(tls=server_context)
    yield listener, ssl.create_default_context(cadata=certificate.decode())
    listener.stop()


def test_tls_goes_to_the_checked_address_with_the_name_for_sni_and_verification(
    tls_receiver: tuple[Listener, ssl.SSLContext],
) -> None:
    listener, trust = tls_receiver
    sender = HttpxWebhookSender(FAST, ssl_context=trust)
    try:
        url = f"https://{NAME}:{listener.port}/hook"
        status, _ = sender.post(url, {"webhook-id": "m1"}, b"{}", addresses=["127.0.0.1"])
        # The certificate is checked against the URL's name, not the address connected to:
        # the same server under another name, or under its address, is refused.
        with pytest.raises(WebhookSendFailed, match="CERTIFICATE_VERIFY_FAILED"):
            sender.post(
                f"https://other.zenzefi.test:{listener.port}/hook",
                {"webhook-id": "m2"},
                b"{}",
                addresses=["127.0.0.1"],
            )
        with pytest.raises(WebhookSendFailed, match="CERTIFICATE_VERIFY_FAILED"):
            sender.post(
                f"https://127.0.0.1:{listener.port}/hook",
                {"webhook-id": "m3"},
                b"{}",
                addresses=["127.0.0.1"],
            )
    finally:
        sender.close()
    assert status == 200
    [(headers, _)] = listener.received
    assert headers["webhook-id"] == "m1"
    assert headers["Host"] == f"{NAME}:{listener.port}"
    assert listener.server_names[0] == NAME


def test_tls_with_the_system_authorities_refuses_a_self_signed_receiver(
    tls_receiver: tuple[Listener, ssl.SSLContext],
) -> None:
    listener, _ = tls_receiver
    sender = HttpxWebhookSender(FAST)
    try:
        with pytest.raises(WebhookSendFailed, match="CERTIFICATE_VERIFY_FAILED"):
            sender.post(f"https://{NAME}:{listener.port}/hook", {}, b"{}", addresses=["127.0.0.1"])
    finally:
        sender.close()
    assert listener.received == []


# --- end to end ----------------------------------------------------------------------------


def _subscribe(core: Core, resolver: Rebinding, url: str) -> Any:
    policy = WebhookPolicy.from_settings(core.settings)
    cipher = SecretCipher(core.settings.resolved_secret_key())
    return CreateWebhook(core.uow, core.clock, cipher, resolver, policy)


def _strict(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": False, "webhooks": ONE_RETRY})


@pytest.mark.usefixtures("system_dns")
def test_a_name_rebound_to_loopback_after_the_check_never_reaches_it(
    settings: Settings, loopback: Listener, connections: list[str]
) -> None:
    resolver = Rebinding(public_lookups=1_000)
    core = Core.from_settings(_strict(settings), hasher=fast_password_hasher())
    running = Running(WorkerApp(core, StubBroker(), resolver=resolver))
    running.worker.start()
    try:
        alice = account(core, "alice")
        url = f"http://{NAME}:{loopback.port}/hook"
        hook = _subscribe(core, resolver, url)(alice.id, url, ["webhook.test"])
        SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
        running.settle()
        [record] = log(core, alice.id, hook.endpoint.id)
    finally:
        running.worker.stop(timeout=5_000)
        running.app.close()
        core.close()
    assert loopback.received == []
    # Every attempt went to the checked public address, and only there.
    assert connections == [PUBLIC, PUBLIC]
    assert record.delivery.state is DeliveryState.FAILED
    assert [a.status_code for a in record.attempts] == [None, None]
    assert all("unreachable from the test" in (a.error or "") for a in record.attempts)


@pytest.mark.usefixtures("system_dns")
def test_a_name_public_at_creation_and_loopback_at_delivery_is_refused(
    settings: Settings, loopback: Listener, connections: list[str]
) -> None:
    resolver = Rebinding(public_lookups=1)
    core = Core.from_settings(_strict(settings), hasher=fast_password_hasher())
    running = Running(WorkerApp(core, StubBroker(), resolver=resolver))
    running.worker.start()
    try:
        alice = account(core, "alice")
        url = f"http://{NAME}:{loopback.port}/hook"
        hook = _subscribe(core, resolver, url)(alice.id, url, ["webhook.test"])
        SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
        running.settle()
        [record] = log(core, alice.id, hook.endpoint.id)
    finally:
        running.worker.stop(timeout=5_000)
        running.app.close()
        core.close()
    assert loopback.received == []
    assert connections == []
    assert record.delivery.state is DeliveryState.FAILED
    assert all("private or reserved" in (a.error or "") for a in record.attempts)


@pytest.mark.redis
@pytest.mark.usefixtures("system_dns")
def test_a_rebinding_name_never_reaches_loopback_through_redis(
    redis_settings: Callable[..., Settings], loopback: Listener, connections: list[str]
) -> None:
    settings = _strict(redis_settings())
    resolver = Rebinding(public_lookups=1_000)
    api, worker_side = (
        WorkerApp(
            Core.from_settings(settings, hasher=fast_password_hasher()),
            build_broker(settings),
            resolver=resolver,
        )
        for _ in range(2)
    )
    worker = dramatiq.Worker(worker_side.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        alice = account(api.core, "alice")
        url = f"http://{NAME}:{loopback.port}/hook"
        hook = _subscribe(api.core, resolver, url)(alice.id, url, ["webhook.test"])
        SendTestWebhook(api.core.uow, api.core.clock)(alice.id, hook.endpoint.id)

        def given_up() -> bool:
            records = log(api.core, alice.id, hook.endpoint.id)
            return bool(records) and records[0].delivery.state is DeliveryState.FAILED

        eventually(given_up, timeout=30, what="the delivery to fail")
    finally:
        worker.stop(timeout=5_000)
        for app in (api, worker_side):
            app.close()
            app.core.close()
    assert loopback.received == []
    assert connections == [PUBLIC, PUBLIC]


def test_a_checked_public_name_is_delivered_and_signed(
    settings: Settings, loopback: Listener, connections: list[str], system_dns: None
) -> None:
    """The same path with private addresses allowed (the resolver says loopback): the one
    address checked is the one connected to, and the receiver verifies the signature."""
    resolver = Rebinding(public_lookups=0)
    allowed = settings.model_copy(update={"webhook_allow_private": True, "webhooks": ONE_RETRY})
    core = Core.from_settings(allowed, hasher=fast_password_hasher())
    running = Running(WorkerApp(core, StubBroker(), resolver=resolver))
    running.worker.start()
    try:
        alice = account(core, "alice")
        url = f"http://{NAME}:{loopback.port}/hook"
        hook = _subscribe(core, resolver, url)(alice.id, url, ["webhook.test"])
        SendTestWebhook(core.uow, core.clock)(alice.id, hook.endpoint.id)
        running.settle()
        [record] = log(core, alice.id, hook.endpoint.id)
    finally:
        running.worker.stop(timeout=5_000)
        running.app.close()
        core.close()
    assert record.delivery.state is DeliveryState.SUCCEEDED
    assert connections == ["127.0.0.1"]
    [(headers, body)] = loopback.received
    verify_webhook(hook.secret, headers, body)
    assert headers["Host"] == f"{NAME}:{loopback.port}"
