"""Which upstream paths a token may reach: path normalisation and the scope rule, pure.

The check runs on the path the proxy will forward, never on what the client typed: the raw path
is percent-decoded until it no longer changes (so `%252e%252e` is `..` too), backslashes count
as separators, empty and `.` segments go, and `..` removes the segment before it (never climbing
above the root). The proxy then forwards exactly this canonical path, re-encoded, so the server
behind it cannot read anything else into it. Method and query string play no part.

Java servlet containers (Tomcat, Jetty) and Spring cut a `;` path parameter off each segment
before they resolve dots, so `..;`, `..;x` or `.;jsessionid=1` climb or stay like `..` and `.`
there while looking like names here. A segment that is a dot segment once its parameters are cut
off is refused as malformed: no server reads it the way the check did. Any other `;` is kept and
forwarded (a servlet reading `filter;x` as `filter` lands on a name, never climbs), so a
`certificates_only` scope only ever admits the prefixes it lists, spelled as listed.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from zenzefi_core.domain.tokens import TokenScope

#: Segment prefixes a `certificates_only` token may reach (the list in the API contract). A
#: path is inside when its segments start with one of these; `certificates/filterX` is not.
CERTIFICATE_PATHS: tuple[tuple[str, ...], ...] = tuple(
    tuple(prefix.split("/"))
    for prefix in (
        "certificates/filter",
        "certificates/details",
        "certificates/export",
        "certificates/import",
        "certificates/remove",
        "certificates/restore",
        # Its `activate/`, `deactivate/`, `enhanced`, `options/` and `usecases/` children too.
        "certificates/activeForTesting",
        # With `cancel` and `metrics`.
        "certificates/update",
        "certificates/checkSystemIntegrityReport",
        "certificates/checkSystemIntegrityLog",
        "certificates/checkSystemIntegrityLogExistance",
        "configurations/certificatesColumnOrder",
        "configurations/certificatesColumnVisibility",
    )
)

#: Rounds of percent-decoding before a path that keeps changing is refused as malformed.
_MAX_DECODE_ROUNDS = 4
#: Characters left as they are when re-encoding a segment (RFC 3986 `pchar` minus `%`).
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"


class InvalidPath(ValueError):
    """A path no server should be asked for: control characters, endless encoding, invalid
    UTF-8 (overlong `%c0%ae` included), or a dot segment carrying a `;` path parameter."""


def _is_dot_with_parameters(segment: str) -> bool:
    """`..;`, `.;x`: a dot segment to a servlet container, which drops everything from `;`."""
    name, semicolon, _ = segment.partition(";")
    return bool(semicolon) and name in (".", "..")


def _fully_decoded(raw: str) -> str:
    current = raw
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(current, errors="strict")
        if decoded == current:
            return current
        current = decoded
    raise InvalidPath("Invalid path")


def normalise_path(raw: str) -> tuple[str, ...]:
    """The path's canonical segments; raises `InvalidPath` for a malformed one."""
    try:
        decoded = _fully_decoded(raw)
    except UnicodeDecodeError:
        raise InvalidPath("Invalid path") from None
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in decoded):
        raise InvalidPath("Invalid path")
    segments: list[str] = []
    for segment in decoded.replace("\\", "/").split("/"):
        if _is_dot_with_parameters(segment):
            raise InvalidPath("Invalid path")
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return tuple(segments)


def encode_path(segments: tuple[str, ...], *, trailing_slash: bool = False) -> str:
    """The canonical path as it goes upstream: `/a/b`, each segment percent-encoded."""
    path = "/" + "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in segments)
    if trailing_slash and segments:
        path += "/"
    return path


def in_scope(scope: TokenScope, segments: tuple[str, ...]) -> bool:
    """May a token of `scope` reach these (normalised) segments?"""
    if scope is TokenScope.FULL:
        return True
    return any(segments[: len(prefix)] == prefix for prefix in CERTIFICATE_PATHS)
