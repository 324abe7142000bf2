"""Short reasons for Redis client failures (private helper of
:mod:`sessionstreams.common.connection` and :mod:`sessionstreams.common._clients`).

redis-py's messages repeat the address, quote the socket call and, for Sentinel, include the
repr of whole clients; our error messages say in a few words what failed and never show a
client repr.
"""

from __future__ import annotations

import os
import re
import socket
import ssl

#: The longest text taken from a client message.
MAX_TEXT = 160

_REPR = re.compile(r"<[^<>]*>")
_SPACE = re.compile(r"\s+")


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, innermost last."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def os_reason(exc: BaseException) -> str | None:
    """The reason of the operating-system error behind ``exc``, if there is one."""
    for cause in chain(exc):
        if isinstance(cause, socket.gaierror):
            return f"host not found ({clean(cause.strerror or str(cause))})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({clean(cause.reason or str(cause))})"
        if isinstance(cause, TimeoutError):  # the builtin one (socket, asyncio)
            return "timed out"
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
    return None


def reason(exc: BaseException) -> str:
    """A few words on why ``exc`` happened: the OS error behind it, else its cleaned text."""
    return os_reason(exc) or clean(str(exc) or type(exc).__name__)


def clean(text: str) -> str:
    """``text`` on one line, without object reprs (``<...>``), at most :data:`MAX_TEXT` long."""
    while True:
        stripped = _REPR.sub("", text)
        if stripped == text:
            break
        text = stripped
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3].rstrip() + "..."
