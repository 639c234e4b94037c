"""Webhook signatures against an independent implementation of the Standard Webhooks spec,
verify_webhook's round trip, tampering and staleness, secrets, encryption and URL safety."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenzefi_core.errors import InvalidInput, InvalidSignature, InvalidWebhookUrl
from zenzefi_core.webhooks import (
    SecretCipher,
    check_events,
    check_webhook_url,
    generate_secret,
    sign_webhook,
    verify_webhook,
)

NOW = 1_800_000_000
SECRET = generate_secret()


def reference_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The spec, written out again: HMAC-SHA256 over "id.timestamp.body" with the decoded key."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_signatures_match_an_independent_implementation() -> None:
    body = b'{"type":"token.purchased"}'
    headers = sign_webhook([SECRET], "msg_1", NOW, body)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(NOW)
    assert headers["webhook-signature"] == reference_signature(SECRET, "msg_1", NOW, body)
    expected_hex = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == expected_hex


def test_rotation_signs_with_both_secrets_and_either_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = sign_webhook([new, old], "msg_2", NOW, b"{}")
    assert headers["webhook-signature"].split() == [
        reference_signature(new, "msg_2", NOW, b"{}"),
        reference_signature(old, "msg_2", NOW, b"{}"),
    ]
    verify_webhook(old, headers, b"{}", now=NOW)
    verify_webhook(new, headers, b"{}", now=NOW)
    with pytest.raises(InvalidSignature):
        verify_webhook(generate_secret(), headers, b"{}", now=NOW)


def test_secrets_are_whsec_and_base64_of_24_to_64_bytes() -> None:
    for size in (24, 32, 64):
        secret = generate_secret(size)
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret[6:])) == size
    with pytest.raises(ValueError, match="24 to 64"):
        generate_secret(16)


@given(body=st.binary(max_size=512), msg_id=st.text(min_size=1, max_size=40).filter(str.strip))
def test_sign_then_verify_round_trips(body: bytes, msg_id: str) -> None:
    msg_id = msg_id.strip()
    verify_webhook(SECRET, sign_webhook([SECRET], msg_id, NOW, body), body, now=NOW + 10)


@given(body=st.binary(min_size=1, max_size=256), flip=st.integers(min_value=0))
def test_a_tampered_body_fails(body: bytes, flip: int) -> None:
    headers = sign_webhook([SECRET], "msg", NOW, body)
    index = flip % len(body)
    tampered = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
    with pytest.raises(InvalidSignature):
        verify_webhook(SECRET, headers, tampered, now=NOW)


@given(age=st.integers(min_value=301, max_value=10**6), sign=st.sampled_from([1, -1]))
def test_a_stale_or_future_timestamp_fails(age: int, sign: int) -> None:
    headers = sign_webhook([SECRET], "msg", NOW, b"{}")
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify_webhook(SECRET, headers, b"{}", now=NOW + sign * age)


def test_missing_headers_fail() -> None:
    with pytest.raises(InvalidSignature, match="Missing"):
        verify_webhook(SECRET, {"webhook-id": "x"}, b"{}", now=NOW)


def test_secrets_are_encrypted_and_come_back() -> None:
    cipher = SecretCipher("server key")
    stored = cipher.encrypt(SECRET)
    assert SECRET not in stored
    assert cipher.decrypt(stored) == SECRET
    assert SecretCipher("server key").decrypt(stored) == SECRET


class Table:
    def __init__(self, **hosts: list[str]) -> None:
        self.hosts = hosts

    def resolve(self, host: str) -> list[str]:
        return self.hosts.get(host.replace(".", "_"), [])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/",
        "http://192.168.0.5/",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://internal_example/",
        "http://mixed_example/",
        "http://nowhere_example/",
    ],
)
def test_private_and_unresolvable_urls_are_refused(url: str) -> None:
    table = Table(internal_example=["10.0.0.7"], mixed_example=["93.184.216.34", "127.0.0.1"])
    with pytest.raises(InvalidWebhookUrl):
        check_webhook_url(url.replace("_", "."), table, allow_private=False)


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "http:///x", "x"])
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        check_webhook_url(url, Table(), allow_private=True)


def test_public_urls_pass_and_private_ones_pass_when_allowed() -> None:
    table = Table(hooks_example_com=["93.184.216.34", "2606:2800:220:1::1"])
    assert check_webhook_url("https://hooks.example.com/in", table, allow_private=False)
    assert check_webhook_url("http://127.0.0.1:9/x", table, allow_private=True)


def test_events_are_checked_against_the_documented_list() -> None:
    assert check_events(["token.expired", "token.purchased", "token.purchased"]) == (
        "token.purchased",
        "token.expired",
    )
    with pytest.raises(InvalidInput, match=r"token\.bought"):
        check_events(["token.bought"])
    with pytest.raises(InvalidInput):
        check_events([])
