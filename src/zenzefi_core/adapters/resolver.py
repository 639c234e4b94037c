"""Host name resolution with the standard library, for the webhook URL checks."""

from __future__ import annotations

import socket


class SocketResolver:
    def resolve(self, host: str) -> list[str]:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError):
            return []
        # In the order the system prefers them (RFC 6724), without repeats.
        return list(dict.fromkeys(str(info[4][0]) for info in infos))
