"""Script-free reads of a HashIdx session in one round trip, for windows whose ids are known.

A HashIdx event window is two lookups: its ids from the time index (a sorted set), then their
JSON from the data hash. One round trip needs the load script, and every byte a script returns
passes through Lua: on a 20-event window of ~400-byte events the server spends ~35 µs in the
script against ~5 µs for the same ``ZRANGE`` and ``HMGET`` sent as commands.

So the engine remembers, per session, the ids of the last window it read (the load script
returns them) and the ids its own appends added. The next read sends, in one ``MULTI``/``EXEC``,
the window's ``ZRANGE``, an ``HMGET`` of the remembered ids and the other reads of the script.
The transaction is atomic: when the ``ZRANGE`` it returns equals the ids sent, the ``HMGET``
returned exactly that window, as the script would have. Otherwise (another process wrote, an
event expired, the guess was wrong) the read is made again with the script, which corrects the
remembered ids; a session that keeps missing is read with the script for a while
(:data:`MAX_SKIP` reads at most) before the next attempt.

Only single-node deployments (standalone, Sentinel) use it, for windows without a lower time
bound; everything else takes the script. With legacy data to consult, the transaction also
checks that the legacy layout holds no copy of the session (``HashIdxEngine.quick_load``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from typing import Any

from hiredis import pack_command
from redis import exceptions as rx

from sessionstreams.common.models import Key

#: Sessions whose window ids are remembered (per engine); the oldest half is dropped beyond.
MAX_WINDOWS = 1024
#: Largest window remembered (events): a window holds its ids twice (as ids and packed).
MAX_WINDOW_EVENTS = 100
#: Reads at most that go straight to the script after repeated misses.
MAX_SKIP = 32
#: What a failed transaction falls back from (the script path then retries or raises).
_FALLBACK_ERRORS = (rx.ConnectionError, rx.TimeoutError, rx.ResponseError, TimeoutError)

_USER = b'"role":"user"'


class Window:
    """The remembered ids of one session's newest ``limit`` events, with the packed reads of
    them (per load flags: the commands before the ``HMGET``, then the ``HMGET``)."""

    __slots__ = ("heads", "ids", "limit", "misses", "skip", "tail")

    def __init__(self, limit: int, ids: tuple[bytes, ...]) -> None:
        self.limit = limit
        self.misses = 0
        self.skip = 0
        self.heads: dict[str, tuple[bytes, int]] = {}
        self.ids = ids
        self.tail = b""

    def set_ids(self, ids: tuple[bytes, ...]) -> None:
        if ids != self.ids:
            self.ids = ids
            self.tail = b""


class WindowCache:
    """The ids of the newest window read or written per session (one engine's)."""

    def __init__(self, capacity: int = MAX_WINDOWS) -> None:
        self.capacity = capacity
        self._windows: dict[Key, Window] = {}
        #: Reads answered by a transaction, and transactions that missed (for tests, metrics).
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._windows)

    def window_for(self, key: Key, limit: int) -> Window | None:
        """The remembered window of ``key``'s newest ``limit`` events, or None: read with the
        script (nothing remembered, another window size, or a miss streak)."""
        window = self._windows.get(key)
        if window is None or window.limit != limit:
            return None
        if window.skip:
            window.skip -= 1
            return None
        return window

    def learned(self, key: Key, limit: int, ids: Sequence[bytes]) -> None:
        """Remember the ids a script read of ``key``'s newest ``limit`` events returned
        (nothing with a capacity of 0)."""
        if self.capacity <= 0 or limit > MAX_WINDOW_EVENTS:
            return
        window = self._windows.get(key)
        if window is not None and window.limit == limit:
            window.set_ids(tuple(ids))
            return
        if len(self._windows) >= self.capacity:
            for old in list(self._windows)[: self.capacity // 2]:
                del self._windows[old]
        self._windows[key] = Window(limit, tuple(ids))

    def hit(self, key: Key) -> None:
        self.hits += 1
        window = self._windows.get(key)
        if window is not None:
            window.misses = 0

    def missed(self, key: Key) -> None:
        """A transaction found other ids (or failed): the next reads of ``key`` skip it,
        more of them after each consecutive miss."""
        self.misses += 1
        window = self._windows.get(key)
        if window is not None:
            window.misses += 1
            window.skip = min(2 ** window.misses - 1, MAX_SKIP)

    def appended(self, key: Key, event_ids: Iterable[str], keep: int = 0) -> None:
        """Events this process stored (newest last) extend the remembered window. ``keep``:
        the storage limit (0 = none); a window it may have trimmed is forgotten instead.
        ``event_ids`` is only iterated when ``key`` has a remembered window."""
        window = self._windows.get(key)
        if window is None:
            return
        added = tuple(i.encode() for i in event_ids)
        if not added:
            return
        ids = (*window.ids, *added)
        if keep and len(ids) > keep:
            del self._windows[key]
            return
        window.set_ids(ids[-window.limit:])

    def forget(self, key: Key) -> None:
        self._windows.pop(key, None)


#: The packed ``MULTI`` and ``EXEC``.
MULTI = pack_command(("MULTI",))
EXEC = pack_command(("EXEC",))


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """Commands packed as one write (RESP)."""
    return b"".join([pack_command(tuple(c)) for c in commands])


async def run_transaction(client: Any, packed: bytes, count: int) -> list[Any] | None:
    """The replies of ``count`` packed commands run in one ``MULTI``/``EXEC`` (``packed``
    holds both), sent as one write; None when it failed (connection, timeout, a command's
    error): the caller reads another way.

    A connection whose replies were not all read is closed, never returned to the pool with
    replies pending.
    """
    pool = client.connection_pool
    try:
        conn = await pool.get_connection()
    except _FALLBACK_ERRORS:
        return None
    try:
        await conn.send_packed_command(packed)
        # One deadline for every reply instead of one per reply (``math.inf`` turns redis-py's
        # per-read timeout off; the replies after the first are already buffered).
        async with asyncio.timeout(conn.socket_timeout):
            for _ in range(count + 1):  # MULTI's OK, then QUEUED per command
                await conn.read_response(timeout=math.inf)
            reply = await conn.read_response(timeout=math.inf)
    except BaseException as exc:
        await conn.disconnect(nowait=True)
        if isinstance(exc, _FALLBACK_ERRORS):
            return None
        raise
    finally:
        await pool.release(conn)
    if not isinstance(reply, list) or any(isinstance(r, Exception) for r in reply):
        return None
    return reply


def has_user_message(documents: Sequence[bytes]) -> bool:
    """True when a document looks like a user message (the load script's test)."""
    return any(_USER in doc for doc in documents)
