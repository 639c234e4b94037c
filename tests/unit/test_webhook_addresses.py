"""Which addresses a webhook may connect to: a table of the special ranges in every form an
attacker can write them in, and properties over generated addresses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenzefi_core.errors import InvalidWebhookUrl
from zenzefi_core.webhooks import (
    SPECIAL_IPV4,
    check_webhook_url,
    is_public_address,
    webhook_target,
)

REFUSED = [
    # IPv4 special ranges.
    "0.0.0.0",  # noqa: S104 - an address to refuse, not to bind
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.1",
    "192.0.0.170",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6 special ranges.
    "::",
    "::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "ff02::1",
    "ff0e::1",
    "100::1",
    "2001:db8::1",
    "3fff::1",
    "2001:2::1",
    "2001:10::1",
    "5f00::1",
    # Teredo hides the IPv4 client address: never.
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001::1",
    # NAT64 local-use prefix: its embedding is the network's own choice.
    "64:ff9b:1::a00:1",
    # IPv4 inside IPv6.
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "::10.0.0.1",
    "::8.8.8.8",  # IPv4-compatible: deprecated, never a receiver
    "::ffff:0:8.8.8.8",  # IPv4-translated (SIIT)
    "64:ff9b::127.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::10.0.0.1",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    # Not addresses at all.
    "localhost",
    "",
    "127.1",
    "2130706433",
]

ALLOWED = [
    "8.8.8.8",
    "93.184.216.34",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:82a::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


@pytest.mark.parametrize("address", REFUSED)
def test_special_addresses_are_refused_in_every_form(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed_in_every_form(address: str) -> None:
    assert is_public_address(address)


special_ipv4 = st.sampled_from(SPECIAL_IPV4).flatmap(
    lambda network: st.integers(int(network.network_address), int(network.broadcast_address)).map(
        ipaddress.IPv4Address
    )
)
any_ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


def wrapped(ip: ipaddress.IPv4Address) -> list[str]:
    """The IPv6 spellings that lead to (or claim to carry) an IPv4 address."""
    value = int(ip)
    return [
        f"::ffff:{ip}",
        str(ipaddress.IPv6Address((0xFFFF << 32) | value)),
        f"::{ip}",
        str(ipaddress.IPv6Address((0x64FF9B << 96) | value)),
        str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80))),
        str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | 1)),
        str(ipaddress.IPv6Address((0x20010000 << 96) | (value ^ 0xFFFFFFFF))),
    ]


@given(special_ipv4)
def test_a_special_ipv4_address_is_refused_however_it_is_wrapped(
    ip: ipaddress.IPv4Address,
) -> None:
    assert not is_public_address(str(ip))
    for spelling in wrapped(ip):
        assert not is_public_address(spelling), spelling


@given(any_ipv4)
def test_a_wrapped_ipv4_address_is_never_more_public_than_itself(
    ip: ipaddress.IPv4Address,
) -> None:
    direct = is_public_address(str(ip))
    for spelling in wrapped(ip):
        if is_public_address(spelling):
            assert direct, spelling


@given(st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))
def test_an_allowed_ipv6_address_is_global_unicast_or_carries_a_public_ipv4(
    ip: ipaddress.IPv6Address,
) -> None:
    if not is_public_address(str(ip)):
        return
    in_global_unicast = ip in ipaddress.IPv6Network("2000::/3")
    carried = ip.ipv4_mapped or ip.sixtofour
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):
        carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    assert in_global_unicast or carried is not None
    assert not ip.is_multicast
    assert not ip.is_link_local
    assert not ip.is_loopback
    assert ip not in ipaddress.IPv6Network("fc00::/7")
    assert ip not in ipaddress.IPv6Network("2001::/32")
    if carried is not None:
        assert is_public_address(str(carried))


class Answers:
    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)

    def resolve(self, host: str) -> list[str]:
        return self.addresses


def test_every_resolved_address_must_pass_not_only_the_first() -> None:
    url = "https://hooks.example.com/in"
    with pytest.raises(InvalidWebhookUrl, match="private or reserved"):
        webhook_target(url, Answers("93.184.216.34", "127.0.0.1"), allow_private=False)
    with pytest.raises(InvalidWebhookUrl, match="private or reserved"):
        check_webhook_url(url, Answers("93.184.216.34", "fd00::1"), allow_private=False)
    target = webhook_target(
        url, Answers("93.184.216.34", "::ffff:93.184.216.35"), allow_private=False
    )
    # Connected to as what was checked: the mapped address as its IPv4 address.
    assert target.addresses == ("93.184.216.34", "93.184.216.35")
    assert target.url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/in",
        "http://[::1]/in",
        "http://[::ffff:127.0.0.1]/in",
        "http://[64:ff9b::7f00:1]/in",
        "http://[2002:7f00:1::]/in",
        "http://[fe80::1%25eth0]/in",
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_address_literals_are_checked_like_names(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        webhook_target(url, Answers("93.184.216.34"), allow_private=False)


def test_a_name_that_does_not_resolve_is_refused_even_when_private_is_allowed() -> None:
    with pytest.raises(InvalidWebhookUrl, match="does not resolve"):
        webhook_target("https://nowhere.example.com/in", Answers(), allow_private=True)
    allowed = webhook_target("http://localhost:9/in", Answers("127.0.0.1"), allow_private=True)
    assert allowed.addresses == ("127.0.0.1",)
