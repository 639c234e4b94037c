"""A small model of how a Java servlet stack reads a request path, to judge what the proxy forwards.

We do not control what the diagnostic server runs, so the model takes the most permissive
reading the common containers can be configured for, in the order they apply it:

1. **Path parameters.** Tomcat's `CoyoteAdapter.parsePathParameters` and Jetty's `HttpURI` cut
   `;anything` off every segment before anything else, on the still-encoded path: `..;x` is `..`
   from here on. Spring's `UrlPathHelper.removeSemicolonContent` does the same but *after*
   decoding, so an encoded `%3b` counts there too. `order="servlet"` models the first,
   `order="spring"` the second; the tests apply both.
2. **Percent-decoding, once.** An encoded slash (`%2f`) and backslash (`%5c`) become separators
   (Tomcat's `ENCODED_SOLIDUS_HANDLING=decode`, `ALLOW_BACKSLASH=true`; Jetty on Windows).
   Overlong two-byte UTF-8 (`%c0%ae` = `.`, `%c0%af` = `/`) is read as the character it spells,
   as old decoders did; any other invalid UTF-8, and NUL, is refused (400), as Tomcat does.
3. **Backslash** is a separator (the permissive setting).
4. **Normalisation:** empty segments (`//`) merge, `.` goes, `..` removes the segment before it;
   `..` above the root is refused (400).

`rounds=2` models a stack that decodes twice (a decoding front server before the container, or
an application that decodes what the container already decoded): `%252e` is `.` there. Path
parameters are then cut before each decoding round (`order="servlet"`) or after the last one
(`order="spring"`).

`resolve` answers the segments the application would see, or None when the container refuses the
request outright. A proxied request is safe when the proxy refused it, or when what the model
reads from the path the proxy forwarded is inside the token's scope.
"""

from __future__ import annotations

import re
from typing import Literal

Order = Literal["servlet", "spring"]
ORDERS: tuple[Order, ...] = ("servlet", "spring")

_PARAMETERS = re.compile(r";[^/]*")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def _percent_decode(text: str) -> str | None:
    raw = _ESCAPE.sub(lambda match: bytes([int(match.group(1), 16)]), text.encode("utf-8"))
    characters: list[str] = []
    index = 0
    while index < len(raw):
        byte = raw[index]
        if byte in (0xC0, 0xC1) and index + 1 < len(raw) and 0x80 <= raw[index + 1] < 0xC0:
            # Overlong encoding of an ASCII character: the lenient reading.
            characters.append(chr(((byte & 0x1F) << 6) | (raw[index + 1] & 0x3F)))
            index += 2
            continue
        end = index + 1
        while end < len(raw) and raw[end] not in (0xC0, 0xC1):
            end += 1
        try:
            characters.append(raw[index:end].decode("utf-8"))
        except UnicodeDecodeError:
            return None
        index = end
    decoded = "".join(characters)
    return None if "\x00" in decoded else decoded


ROUNDS = (1, 2)


def resolve(path: str, *, order: Order = "servlet", rounds: int = 1) -> tuple[str, ...] | None:
    """The segments a servlet application reads from the request path `path` (as on the wire,
    without the query string), or None when the container answers 400 itself."""
    decoded = path
    for _ in range(rounds):
        if order == "servlet":
            decoded = _PARAMETERS.sub("", decoded)
        once = _percent_decode(decoded)
        if once is None:
            return None
        decoded = once
    if order == "spring":
        decoded = _PARAMETERS.sub("", decoded)
    segments: list[str] = []
    for segment in decoded.replace("\\", "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                return None
            segments.pop()
            continue
        segments.append(segment)
    return tuple(segments)
