"""JSON request bodies are checked strictly against the handler's `data` type.

Litestar converts a decoded body to the handler's type in msgspec's lax mode, which is meant for
text-only inputs (query strings, forms): it reads `"5"` as 5, `0`/`1` and `"true"` as booleans,
`"null"` as null. JSON has real numbers and booleans, so a body that sends the wrong one is a
client bug the API should name rather than guess at. This request class checks the decoded body
once more in strict mode; Litestar's own conversion then sees only values it reads unchanged.

Problems are raised as Litestar raises them (message, key, `source: body`), so the existing
validation handler turns them into the documented 422 with the field named.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

#: msgspec ends a message with the path of the bad value: "... - at `$.is_active`".
_PATH = re.compile(r" - at `\$\.?(.*)`$")


class StrictJsonRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        value = await super().json()
        data = self.route_handler.parsed_fn_signature.parameters.get("data")
        if data is None or value is None:
            # No body parameter, or no body at all: Litestar's own checks decide.
            return value
        try:
            msgspec.convert(
                value,
                data.annotation,
                strict=True,
                dec_hook=self.route_handler.default_deserializer,
                str_keys=True,
            )
        except msgspec.ValidationError as error:
            raise ValidationException(
                detail="Validation failed", extra=[_problem(str(error))]
            ) from error
        return value


def _problem(text: str) -> dict[str, str]:
    """The shape of Litestar's own body problems: the key is the dotted path, `data` for the
    body as a whole."""
    found = _PATH.search(text)
    message = text[: found.start()] if found else text
    key = found.group(1) if found and found.group(1) else "data"
    return {"message": message, "key": key, "source": "body"}
