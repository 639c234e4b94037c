"""The proxy's path rule: normalisation and the `certificates_only` scope, by example and by
property (Hypothesis)."""

from __future__ import annotations

import itertools
import posixpath
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import servlet
from zenzefi_core.domain.tokens import TokenScope
from zenzefi_core.proxy_scope import (
    CERTIFICATE_PATHS,
    InvalidPath,
    encode_path,
    in_scope,
    normalise_path,
)

CERTS = TokenScope.CERTIFICATES_ONLY


def allowed(raw: str) -> bool:
    return in_scope(CERTS, normalise_path(raw))


@pytest.mark.parametrize(
    "raw",
    [
        "certificates/filter",
        "/certificates/filter/",
        "certificates/details/42",
        "certificates/export/all.zip",
        "certificates/activeForTesting/activate/7",
        "certificates/activeForTesting/usecases/x",
        "certificates/update/cancel",
        "certificates/update/metrics",
        "certificates/checkSystemIntegrityLogExistance",
        "configurations/certificatesColumnOrder",
        "configurations/certificatesColumnVisibility",
        "certificates//filter",
        "certificates/./filter",
        "certificates/details/../filter",
        "certificates/%66ilter",
    ],
)
def test_certificate_paths_are_inside(raw: str) -> None:
    assert allowed(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "admin",
        "certificates",
        "certificates/filterX",
        "certificates/filter/../../admin",
        "certificates/filter/%2e%2e/%2e%2e/admin",
        "certificates/filter/%2E%2E/%2E%2E/admin",
        "certificates/filter/..%2f..%2fadmin",
        "certificates/filter/..%2F..%2Fadmin",
        "certificates/filter/%252e%252e/%252e%252e/admin",
        "certificates/filter/%25252e%25252e%25252fadmin/../../x",
        "certificates/filter/..\\..\\admin",
        "certificates/filter/..%5c..%5cadmin",
        "certificates/filter/.%2e/.%2e/admin",
        "certificates/filter;/../../admin",
        "certificates%2ffilter%2f..%2f..%2fadmin",
        "//certificates/filter/../../admin",
        "configurations/other",
        "CERTIFICATES/filter",
    ],
)
def test_escapes_and_neighbours_are_outside(raw: str) -> None:
    assert not allowed(raw)


def test_full_scope_reaches_everything() -> None:
    assert in_scope(TokenScope.FULL, normalise_path("admin/users"))


def test_a_path_that_keeps_decoding_or_hides_control_characters_is_refused() -> None:
    with pytest.raises(InvalidPath):
        normalise_path("%2525252525252e")
    with pytest.raises(InvalidPath):
        normalise_path("certificates/filter%00/../../admin")
    with pytest.raises(InvalidPath):
        normalise_path("certificates/filter%0a")


def test_the_path_never_climbs_above_the_root() -> None:
    assert normalise_path("../../../certificates/filter") == ("certificates", "filter")
    assert encode_path(("a b", "c%d"), trailing_slash=True) == "/a%20b/c%25d/"


#: Pieces an attacker strings together: separators and dots in every spelling the tests know.
ESCAPE_PIECES = [
    "..",
    ".",
    "/",
    "//",
    "\\",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2f",
    "%2F",
    "%5c",
    "%252e%252e",
    "%252f",
    "admin",
    "filter",
    "certificates",
    "details",
    ";",
    "%3b",
    "%3B",
    "..;",
    ".;",
    "..;x",
    ";jsessionid=1",
    "%2e%2e%3b",
    "%c0%ae",
    "%c0%af",
]

segments_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="%/\\"),
    min_size=1,
    max_size=8,
)


def naive_upstream_view(forwarded: str) -> tuple[str, ...]:
    """How a server that decodes once and resolves dots (treating backslash as a separator)
    would read the path the proxy forwards."""
    decoded = unquote(forwarded).replace("\\", "/")
    resolved = posixpath.normpath("/" + decoded)
    return tuple(part for part in resolved.split("/") if part)


@given(
    prefix=st.sampled_from(CERTIFICATE_PATHS),
    pieces=st.lists(st.sampled_from(ESCAPE_PIECES), max_size=12),
)
def test_what_the_upstream_sees_is_what_was_checked(prefix: tuple[str, ...], pieces) -> None:
    raw = "/".join(prefix) + "/" + "".join(pieces)
    try:
        segments = normalise_path(raw)
    except InvalidPath:
        return
    forwarded = encode_path(segments)
    # The upstream reads exactly the checked segments: nothing left to decode or resolve.
    assert naive_upstream_view(forwarded) == segments
    assert in_scope(CERTS, naive_upstream_view(forwarded)) == in_scope(CERTS, segments)


@given(st.lists(st.one_of(segments_text, st.sampled_from(ESCAPE_PIECES)), max_size=10))
def test_normalising_is_idempotent_and_leaves_no_separators(parts: list[str]) -> None:
    raw = "/".join(parts)
    try:
        segments = normalise_path(raw)
    except InvalidPath:
        return
    assert normalise_path(encode_path(segments)) == segments
    for segment in segments:
        assert segment not in ("", ".", "..")
        assert "/" not in segment
        assert "\\" not in segment
        assert unquote(segment) == segment


@given(prefix=st.sampled_from(CERTIFICATE_PATHS), tail=st.lists(segments_text, max_size=4))
def test_percent_encoding_plain_segments_does_not_change_the_answer(
    prefix: tuple[str, ...], tail: list[str]
) -> None:
    plain = "/".join([*prefix, *tail])
    encoded = "/".join(quote(part, safe="") for part in [*prefix, *tail])
    assert normalise_path(encoded) == normalise_path(plain)
    assert in_scope(CERTS, normalise_path(encoded)) == in_scope(CERTS, normalise_path(plain))


#: Ways out of `certificates/filter` to `users/currentUser`, each of which a servlet container
#: (the model in tests/servlet.py) reads as outside the scope when it is sent to it directly.
ESCAPES = [
    "certificates/filter/..;/..;/users/currentUser",
    "certificates/filter/..;x/..;x/users/currentUser",
    "certificates/filter/..;jsessionid=1/..;/users/currentUser",
    "certificates/filter/.;/..;/..;/users/currentUser",
    "certificates/filter/%2e%2e%3b/%2e%2e%3b/users/currentUser",
    "certificates/filter/%2E%2e%3B/%2e%2E%3b/users/currentUser",
    "certificates/filter/..%3B/..%3B/users/currentUser",
    "certificates/filter/..%3b/..%3bx/users/currentUser",
    "certificates/filter/%2e%2e;/%2E%2E;/users/currentUser",
    "certificates/filter/.%2e;/%2e.;/users/currentUser",
    "certificates/filter/%252e%252e%253b/%252e%252e%253b/users/currentUser",
    "certificates/filter/%2e%2e/%2e%2e/users/currentUser",
    "certificates/filter/%2e/%2e%2e/%2e%2e/users/currentUser",
    "certificates/filter/%252e%252e/%252e%252e/users/currentUser",
    "certificates/filter/..%2f..%2fusers/currentUser",
    "certificates/filter/..%2F..%2Fusers%2FcurrentUser",
    "certificates/filter/..%5c..%5cusers/currentUser",
    "certificates/filter/..\\..\\users/currentUser",
    "certificates/filter//..//..//users/currentUser",
    "//certificates/filter/../../users/currentUser",
    "certificates/filter/%c0%ae%c0%ae/%c0%ae%c0%ae/users/currentUser",
    "certificates/filter/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afusers/currentUser",
    "certificates;x/filter/..;/..;/users/currentUser",
    "certificates/filter;x/../../users/currentUser",
]

#: Spellings the model refuses by itself, or that stay inside, for completeness of the table.
OTHER_ATTEMPTS = [
    "certificates/filter%00/../../users/currentUser",
    "certificates/filter/%00/..;/..;/users",
    "certificates/filter/%ff/..;/..;/users",
    "CERTIFICATES/filter/x",
    "certificates/FILTER/..;/x",
    "certificates/filter;jsessionid=1",
    "certificates/filter/x;jsessionid=1",
    "certificates/filter/;x/..",
    "certificates/%66ilter/%2e/x",
]


def without_parameters(segments: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in (s.partition(";")[0] for s in segments) if name)


def proxy_verdict(raw: str) -> str | tuple[str, ...]:
    """What the proxy does with `raw`: "refused" (400 or 403), or the path it forwards."""
    try:
        segments = normalise_path(raw)
    except InvalidPath:
        return "refused"
    if not in_scope(CERTS, segments):
        return "refused"
    return segments


@pytest.mark.parametrize("raw", ESCAPES)
def test_every_escape_reaches_outside_when_sent_straight_to_a_servlet(raw: str) -> None:
    readings = [
        servlet.resolve("/" + raw, order=order, rounds=rounds)
        for order in servlet.ORDERS
        for rounds in servlet.ROUNDS
    ]
    assert any(r is not None and not in_scope(CERTS, r) for r in readings), readings


@pytest.mark.parametrize("raw", ESCAPES + OTHER_ATTEMPTS)
def test_through_the_proxy_each_attempt_is_refused_or_stays_inside(raw: str) -> None:
    verdict = proxy_verdict(raw)
    if verdict == "refused":
        return
    assert isinstance(verdict, tuple)
    forwarded = encode_path(verdict, trailing_slash=raw.endswith("/"))
    for order, rounds in itertools.product(servlet.ORDERS, servlet.ROUNDS):
        reading = servlet.resolve(forwarded, order=order, rounds=rounds)
        # The servlet reads what was checked, less the `;` parameters it cuts off: no dot
        # segment left to climb with, so it lands where the check said.
        assert reading == without_parameters(verdict), (order, forwarded)
        assert reading is not None
        assert in_scope(CERTS, reading)


@pytest.mark.parametrize(
    "raw", ["..;", ".;", "..;x", "%2e%2e%3b", "..%3B", ".%3bx", "%252e%252e%253b"]
)
def test_a_dot_segment_with_path_parameters_is_malformed(raw: str) -> None:
    with pytest.raises(InvalidPath):
        normalise_path(f"certificates/filter/{raw}/x")


def test_other_path_parameters_are_forwarded_as_sent() -> None:
    assert normalise_path("certificates/filter/x;jsessionid=1") == (
        "certificates",
        "filter",
        "x;jsessionid=1",
    )
    assert encode_path(("certificates", "filter", "x;v=1")) == "/certificates/filter/x;v=1"
    # A name with a parameter is not the name: `filter;x` is not `certificates/filter`.
    assert not allowed("certificates/filter;x/y")


def test_overlong_utf8_is_malformed() -> None:
    with pytest.raises(InvalidPath):
        normalise_path("certificates/filter/%c0%ae%c0%ae/x")


@given(
    prefix=st.sampled_from(CERTIFICATE_PATHS),
    pieces=st.lists(st.sampled_from(ESCAPE_PIECES), max_size=12),
)
def test_a_servlet_never_reads_a_forwarded_path_outside_the_scope(
    prefix: tuple[str, ...], pieces: list[str]
) -> None:
    raw = "/".join(prefix) + "/" + "".join(pieces)
    verdict = proxy_verdict(raw)
    if verdict == "refused":
        return
    assert isinstance(verdict, tuple)
    forwarded = encode_path(verdict, trailing_slash=raw.endswith("/"))
    for order, rounds in itertools.product(servlet.ORDERS, servlet.ROUNDS):
        reading = servlet.resolve(forwarded, order=order, rounds=rounds)
        assert reading is not None
        assert in_scope(CERTS, reading), (raw, forwarded, order, reading)
