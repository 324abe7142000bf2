"""Helpers shared by the agent-framework adapters (ADK, OpenAI Agents).

The adapters only call :class:`~sessionstreams.producer.service.SessionService` methods, so they
work the same in synchronous and asynchronous persistence modes; this module keeps what both
need: the receipts of writes that may still be in flight, a service per running event loop,
time conversions, JSON state values and the message a Go reader sees for a framework record
without chat content.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from sessionstreams.common.errors import (
    ConfigError,
    DeadLetteredError,
    PersistTimeoutError,
    SessionNotFoundError,
)
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Choice, ContentPart, Key, Message, UserKey
from sessionstreams.common.receipt import Receipt
from sessionstreams.producer.service import SessionService

_K = TypeVar("_K", Key, str, UserKey)

#: ``num_events`` meaning "every stored event" for an exact-window read.
ALL_EVENTS = (1 << 31) - 1


def ns_from_seconds(seconds: float) -> int:
    """Unix seconds (a framework's float timestamp) to integer nanoseconds."""
    return round(seconds * 1e9)


def seconds_from_ns(unix_ns: int) -> float:
    """Integer nanoseconds to float Unix seconds (the same float for the same instant)."""
    return unix_ns / 1e9


def gotime_from_seconds(seconds: float) -> GoTime:
    """A UTC GoTime from float Unix seconds."""
    return GoTime(ns_from_seconds(seconds))


def decode_json_value(raw: bytes | None) -> Any:
    """A state value stored as JSON bytes; a value that is not JSON (written by Go or by
    ``update_*_state`` with raw bytes) comes back as its UTF-8 text."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw.decode("utf-8", "replace")


def decode_json_state(state: Mapping[str, bytes | None]) -> dict[str, Any]:
    """A whole state map of JSON bytes, decoded (see :func:`decode_json_value`)."""
    return {k: decode_json_value(v) for k, v in state.items()}


def placeholder_choice(role: str) -> Choice:
    """The choice of a framework record that has no chat content (a state-only event, a
    control item): an empty ``message`` a Go agent adds nothing to its prompt from, and an
    empty text part in ``delta`` so that the record is stored (Go stores only events with
    content; the framework record itself lives in the event's extensions)."""
    return Choice(
        index=0,
        message=Message(role=role),
        delta=Message(role=role, content_parts=[ContentPart(type="text", text="")]),
    )


class PendingWrites:
    """Receipts of streamed writes not yet known to be persisted.

    In synchronous mode every receipt is complete and nothing is kept. In asynchronous mode the
    adapters wait for them before a read that could show them (read-your-writes within the
    process): a session's own writes before that session is read, and the writes of any
    session that changed the app or user state before that state is read.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()  # adapters may run on several threads' loops
        self._receipts: dict[str, Receipt] = {}  # rid -> receipt, still pending
        self._by_key: dict[Key, list[str]] = {}
        self._by_app: dict[str, list[str]] = {}
        self._by_user: dict[UserKey, list[str]] = {}

    def add(
        self, receipts: Iterable[Receipt], *, app_state: bool = False, user_state: bool = False
    ) -> None:
        """Remember the streamed receipts among ``receipts`` (and the scopes they wrote)."""
        with self._guard:
            for receipt in receipts:
                if not receipt.streamed:
                    continue
                key, rid = receipt.key, receipt.rid
                self._receipts[rid] = receipt
                self._by_key.setdefault(key, []).append(rid)
                if app_state:
                    self._by_app.setdefault(key.app_name, []).append(rid)
                if user_state:
                    self._by_user.setdefault(UserKey(key.app_name, key.user_id), []).append(rid)

    def forget(self, key: Key) -> None:
        """Drop a session's receipts (it was deleted: its writes will be dropped)."""
        with self._guard:
            for rid in self._by_key.pop(key, ()):
                self._receipts.pop(rid, None)

    async def wait(self, service: SessionService, key: Key) -> None:
        """Wait until every remembered write of session ``key`` is persisted.

        Raises:
            SessionNotFoundError: a write found its session deleted or re-created.
            PersistTimeoutError: a write was not persisted in time.
        """
        await self._wait(service, self._take(self._by_key, key), own=True)

    async def wait_scopes(
        self, service: SessionService, app: str | None = None, user: UserKey | None = None
    ) -> None:
        """Wait for the remembered writes that changed ``app``'s app state or ``user``'s user
        state (of any session; a write dropped with its deleted session is no error here)."""
        rids = self._take(self._by_app, app) + self._take(self._by_user, user)
        await self._wait(service, rids, own=False)

    async def wait_sessions(
        self, service: SessionService, app: str, user_id: str | None = None
    ) -> None:
        """Wait for the remembered writes of every session of ``app`` (of one user's
        sessions when ``user_id`` is given)."""
        with self._guard:
            keys = [k for k in self._by_key
                    if k.app_name == app and user_id in (None, k.user_id)]
        rids = [rid for key in keys for rid in self._take(self._by_key, key)]
        await self._wait(service, rids, own=False)

    def _take(self, index: dict[_K, list[str]], name: _K | None) -> list[str]:
        if name is None:
            return []
        with self._guard:
            return [rid for rid in index.pop(name, ()) if rid in self._receipts]

    async def _wait(self, service: SessionService, rids: list[str], *, own: bool) -> None:
        if not rids:
            return
        settings = service.settings
        deadline = time.monotonic() + settings.read_your_writes_wait_s
        for rid in rids:
            with self._guard:
                receipt = self._receipts.get(rid)
            if receipt is None:
                continue  # awaited meanwhile
            try:
                await service.wait_persisted(receipt, max(deadline - time.monotonic(), 0.0))
            except (SessionNotFoundError, DeadLetteredError):
                if own:
                    raise
            except PersistTimeoutError:
                if not settings.read_your_writes_stale_ok:
                    raise
            finally:
                with self._guard:
                    self._receipts.pop(rid, None)


#: The event loop each service serves, shared by every adapter on that service.
_homes: weakref.WeakKeyDictionary[
    SessionService, weakref.ReferenceType[asyncio.AbstractEventLoop]
] = weakref.WeakKeyDictionary()
_homes_guard = threading.Lock()


class LoopServices:
    """The :class:`SessionService` of each running event loop.

    A ``redis.asyncio`` client belongs to the event loop it first ran in, while an adapter may
    be used from several: the Agents SDK's ``Runner.run_sync`` runs on the calling thread's
    own loop, ADK's ``Runner.run`` runs each call in a new thread under ``asyncio.run``. A
    service serves its home loop: the first loop an adapter on it ran in (or was made or
    entered in). Any other loop gets a service of the adapter's own, built from the same
    settings and kept for later calls in that loop (``run_sync`` keeps a thread's loop). Every
    service the adapter owns is closed by :meth:`close_current` in its loop, or when its loop's
    remaining tasks are cancelled (``asyncio.run`` does that at its end).

    Args:
        service: the service of the home loop.
        owned: the adapter built ``service`` (and closes it).
    """

    def __init__(self, service: SessionService, *, owned: bool) -> None:
        self.service = service
        self.owned = owned
        self._guard = threading.Lock()
        self._home_closer: asyncio.Task[None] | None = None
        self._others: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[SessionService, asyncio.Task[None]]
        ] = weakref.WeakKeyDictionary()
        with contextlib.suppress(RuntimeError):  # no running loop: the first one claims it
            self.claim()

    def claim(self) -> None:
        """Make the running loop the home of ``service`` if it has none yet."""
        loop = asyncio.get_running_loop()
        with _homes_guard:
            if self.service in _homes:
                return
            _homes[self.service] = weakref.ref(loop)
        if self.owned:
            self._home_closer = loop.create_task(_close_when_cancelled(self.service))

    def _is_home(self, loop: asyncio.AbstractEventLoop) -> bool:
        self.claim()
        with _homes_guard:
            home = _homes.get(self.service)
        return home is not None and home() is loop

    async def current(self) -> SessionService:
        """The service of the running loop (built on first use in a loop other than home).

        Raises:
            ConfigError: another loop needs a service, and ``service`` runs on a client of the
                caller's (only that caller can make one for the other loop).
        """
        loop = asyncio.get_running_loop()
        if self._is_home(loop):
            return self.service
        with self._guard:
            entry = self._others.get(loop)
            if entry is not None:
                return entry[0]
            if not self.service.store.owns_client:
                raise ConfigError(
                    "this SessionService runs on a Redis client of yours, which belongs to "
                    "one event loop; give the adapter settings instead to use it from "
                    "several event loops (threads)"
                )
            other = type(self.service)(self.service.settings)
            closer = loop.create_task(
                _close_when_cancelled(other, lambda: self._forget(loop)))
            self._others[loop] = (other, closer)
        return other

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._guard:
            self._others.pop(loop, None)

    async def close_current(self) -> None:
        """Close the running loop's service if the adapter owns it."""
        loop = asyncio.get_running_loop()
        if self._is_home(loop):
            closer, self._home_closer = self._home_closer, None
        else:
            with self._guard:
                entry = self._others.pop(loop, None)
            closer = entry[1] if entry is not None else None
        if closer is not None:
            closer.cancel()
            (outcome,) = await asyncio.gather(closer, return_exceptions=True)
            if isinstance(outcome, Exception):
                raise outcome  # the close failed (e.g. writes still pending)


async def _close_when_cancelled(
    service: SessionService, forget: Callable[[], None] | None = None
) -> None:
    """Wait until cancelled (``asyncio.run`` cancels the tasks left at its end), then close
    ``service`` in its own loop."""
    try:
        await asyncio.Event().wait()
    finally:
        if forget is not None:
            forget()
        await service.close()
