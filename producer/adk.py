"""Google ADK session service on sessionstreams (``pip install sessionstreams[adk]``).

One line in an ADK app::

    from sessionstreams.producer.adk import SessionStreamsSessionService
    session_service = SessionStreamsSessionService.from_url("redis://localhost:6379/0")
    runner = Runner(app_name="app", agent=agent, session_service=session_service)

Sessions, events and state go to the trpc-agent-go compatible layout, so a Go service reading
the same Redis sees the conversation (see :mod:`sessionstreams.producer._adk_events` for the
mapping). ADK's rules hold:

* ``create_session`` with a taken id raises ``AlreadyExistsError``; the create script decides,
  so of concurrent creators (in any processes) exactly one wins;
* state values are JSON values, stored as their JSON bytes; ``app:``/``user:`` keys go to the
  app/user state, ``temp:`` keys stay on the in-memory session only;
* a partial event is neither stored nor applied; after ``append_event`` the session's
  ``last_update_time`` is the event's timestamp;
* ``append_event`` raises ``SessionNotFoundError`` for a missing session and
  ``StaleSessionError`` when storage changed since the session object was read (the stored
  ``updatedAt``, or the one this process's latest append to it leaves, is newer than the
  revision recorded on the object), like ADK's database services; appends to one session are
  serialised within the process;
* ``get_session`` honours ``GetSessionConfig`` exactly (``num_recent_events`` newest events,
  ``after_timestamp`` inclusive), without the Go reader's user-message filtering.

Only :class:`~sessionstreams.producer.service.SessionService` methods are called, so synchronous
and asynchronous persistence both work. In asynchronous mode reads wait until this process's
writes they could show are applied (read-your-writes across the session, app and user scopes),
while ``append_event`` does not wait for the previous append: its stale check reads the stored
session as it is and counts this process's own appends from memory. A session deleted (or
deleted and re-created) by another process while appends were in flight loses them; that
surfaces when they are awaited: the next ``get_session`` of the session raises
``SessionNotFoundError``. Each running event loop gets its own service (see
:class:`~sessionstreams.producer._interop.LoopServices`), so ADK's synchronous ``Runner.run``
works too.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError as AdkNotFoundError
from google.adk.events.event import Event as AdkEvent
from google.adk.sessions import Session as AdkSession
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from typing_extensions import override

from sessionstreams.common.errors import (
    SessionChangedError,
    SessionExistsError,
    SessionNotFoundError,
)
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Key, Session, UserKey
from sessionstreams.common.settings import Settings
from sessionstreams.common.state import APP_PREFIX, TEMP_PREFIX, USER_PREFIX
from sessionstreams.producer._adk_construct import make
from sessionstreams.producer._adk_events import (
    encode_state,
    from_store_event,
    session_seconds,
    to_store_event,
)
from sessionstreams.producer._interop import (
    ALL_EVENTS,
    LoopServices,
    PendingWrites,
    decode_json_state,
    decode_json_value,
    gotime_from_seconds,
    seconds_from_ns,
)
from sessionstreams.producer.service import SessionService

__all__ = ["SessionStreamsSessionService"]

#: Sessions whose latest own append time is remembered in asynchronous mode (oldest dropped).
_WRITTEN_MAX = 10_000

#: Prefix of the storage revision this service records on the sessions it returns.
_REVISION = "sessionstreams:"

_STALE = (
    "The session has been modified in storage since it was loaded. "
    "Please reload the session before appending more events."
)


class SessionStreamsSessionService(BaseSessionService):
    """ADK ``BaseSessionService`` backed by a :class:`SessionService`.

    Args:
        service: the sessionstreams service to use (not closed by :meth:`close`).
        settings: build and own a service from these settings instead.

    For ADK's usual expectations set ``session_event_storage_limit=0`` (keep every event;
    the default keeps ``session_event_limit`` = 1,000 per session) and, to list a user's
    sessions without SCAN, ``enable_user_session_index=True``.
    """

    def __init__(
        self, service: SessionService | None = None, *, settings: Settings | None = None
    ) -> None:
        if (service is None) == (settings is None):
            raise ValueError("pass exactly one of service or settings")
        owned = service is None
        self.service: SessionService = service if service is not None else SessionService(
            cast(Settings, settings)
        )
        self._services = LoopServices(self.service, owned=owned)
        self._pending = PendingWrites()
        self._locks: weakref.WeakValueDictionary[tuple[int, Key], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Async mode: the stored update time (ns) this process's latest append to a session
        # will leave, which the stored session may not show yet (the workers apply it later).
        self._written: OrderedDict[Key, int] = OrderedDict()
        self._event_ids = _EventIds()

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> SessionStreamsSessionService:
        """A service that owns a :class:`SessionService` on ``url`` (more settings as kwargs)."""
        return cls(settings=Settings(url=url, **settings))

    async def close(self) -> None:
        """Close this event loop's service if this object built it."""
        await self._services.close_current()

    async def __aenter__(self) -> SessionStreamsSessionService:
        self._services.claim()
        await (await self._services.current()).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sessions -------------------------------------------------------------------------
    @override
    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> AdkSession:
        """Create a session; ``AlreadyExistsError`` when ``session_id`` is taken (of
        concurrent creators of one id, in any processes, exactly one succeeds)."""
        sid = session_id.strip() if session_id else ""
        svc = await self._services.current()
        await self._pending.wait_scopes(svc, app_name, UserKey(app_name, user_id))
        try:
            created = await svc.create_session(
                Key(app_name, user_id, sid), state=encode_state(state), exclusive=True
            )
        except SessionExistsError as exc:
            raise AlreadyExistsError(f"Session with id {sid} already exists.") from exc
        return _adk_session(created, [])

    @override
    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> AdkSession | None:
        """A session with its events as ``config`` selects them; None when absent."""
        key = Key(app_name, user_id, session_id)
        svc = await self._services.current()
        try:
            await self._pending.wait(svc, key)
        except SessionNotFoundError as exc:
            self._written.pop(key, None)
            raise AdkNotFoundError(
                f"Session {session_id} was deleted or re-created while events appended to it "
                "were being persisted; those events were dropped."
            ) from exc
        await self._pending.wait_scopes(svc, app_name, UserKey(app_name, user_id))
        num = config.num_recent_events if config else None
        after = config.after_timestamp if config else None
        stored = await svc.get_session(
            key,
            num_events=ALL_EVENTS if num is None else max(num, 1),
            after=None if after is None else gotime_from_seconds(after),
            exact_window=True,
        )
        if stored is None:
            return None
        events = [] if num == 0 else [from_store_event(e) for e in stored.events]
        if after is not None:
            events = [e for e in events if e.timestamp >= after]
        return _adk_session(stored, events)

    @override
    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        """A user's sessions (every user's with ``user_id=None``: a SCAN of the keyspace),
        without events, oldest update first as ADK orders them."""
        svc = await self._services.current()
        await self._pending.wait_sessions(svc, app_name, user_id)
        await self._pending.wait_scopes(svc, app_name)
        if user_id is None:
            found = await svc.list_app_sessions(app_name)
        else:
            found = await svc.list_sessions(UserKey(app_name, user_id), only_meta=True)
        sessions = [_adk_session(s, []) for s in found]
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    @override
    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete a session with its events (a missing one is fine)."""
        key = Key(app_name, user_id, session_id)
        self._pending.forget(key)
        self._written.pop(key, None)
        await (await self._services.current()).delete_session(key)

    @override
    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user state without the ``user:`` prefix (empty when none)."""
        user = UserKey(app_name, user_id)
        svc = await self._services.current()
        await self._pending.wait_scopes(svc, user=user)
        return decode_json_state(await svc.list_user_states(user))

    @override
    async def flush(self) -> None:
        """Wait until every write of this process is persisted (immediate in sync mode)."""
        await (await self._services.current()).flush()

    # -- events ---------------------------------------------------------------------------
    @override
    async def append_event(self, session: AdkSession, event: AdkEvent) -> AdkEvent:
        """Store ``event`` and apply its state delta, then update ``session`` in memory
        (its ``last_update_time`` becomes the event's timestamp).

        Raises:
            SessionNotFoundError: (ADK's) the session does not exist.
            StaleSessionError: storage changed since ``session`` was read.
        """
        if event.partial:
            return event
        if self._event_ids.redelivered(session, event):
            return event  # delivered again (a retried call): already appended
        if not event.id:
            event.id = AdkEvent.new_id()
        key = Key(session.app_name, session.user_id, session.id)
        svc = await self._services.current()
        async with self._lock(key):
            guard = _revision_of(session) if not svc.settings.enable_async_persist else None
            if guard is None:
                carrier, revision = await self._fresh(svc, key, session)
            else:  # the stale check runs in the write's own script: no read first
                carrier, revision = Session(id=key.session_id, app_name=key.app_name,
                                            user_id=key.user_id), guard
            state_before = dict(session.state)
            delta_before = dict(event.actions.state_delta) if event.actions else None
            self._apply_temp_state(session, event)
            event = self._trim_temp_delta_state(event)
            at = gotime_from_seconds(event.timestamp)
            try:
                receipt = await svc.append_event(
                    carrier, to_store_event(event), updated_at=at,
                    unless_updated_after=None if guard is None else GoTime.from_unix_ns(guard))
            except SessionNotFoundError as exc:
                raise AdkNotFoundError(f"Session {session.id} not found.") from exc
            except SessionChangedError as exc:  # nothing written: leave both as they were
                session.state.clear()
                session.state.update(state_before)
                if event.actions and delta_before is not None:
                    event.actions.state_delta = delta_before
                raise StaleSessionError(_STALE) from exc
            delta = event.actions.state_delta if event.actions else {}
            self._pending.add([receipt], app_state=any(k.startswith(APP_PREFIX) for k in delta),
                              user_state=any(k.startswith(USER_PREFIX) for k in delta))
            revision = max(revision, at.unix_ns)  # the stored updatedAt after this write
            _set_revision(session, revision)
            session.last_update_time = event.timestamp
            if receipt.streamed:
                self._remember_write(key, revision)
        return self._commit_event_to_session(session, event)

    # -- helpers --------------------------------------------------------------------------
    def _lock(self, key: Key) -> asyncio.Lock:
        """The append lock of ``key`` in the running loop (a lock belongs to one loop)."""
        lock_key = (id(asyncio.get_running_loop()), key)
        lock = self._locks.get(lock_key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[lock_key] = lock
        return lock

    async def _fresh(
        self, svc: SessionService, key: Key, session: AdkSession
    ) -> tuple[Session, int]:
        """The stored session (no events) and its update time in ns, checked not newer than
        ``session`` (ADK's stale check).

        The stored session is read without waiting for this process's pending appends: they
        cannot make ``session`` stale when they were made through it, and when they were made
        through another object of the session their time is remembered here. Writes of other
        processes count once applied, in either persistence mode.
        """
        stored = await svc.get_session(key, num_events=1, exact_window=True,
                                       wait_own_writes=False)
        if stored is None:
            raise AdkNotFoundError(f"Session {session.id} not found.")
        current = stored.updated_at.unix_ns
        written = self._written.get(key)
        if written is not None:
            if written <= current:
                del self._written[key]  # applied: the stored session shows it
            else:
                current = written
        if _is_stale(session, current):
            raise StaleSessionError(_STALE)
        stored.events = []
        return stored, current

    def _remember_write(self, key: Key, revision: int) -> None:
        self._written[key] = revision
        self._written.move_to_end(key)
        if len(self._written) > _WRITTEN_MAX:
            self._written.popitem(last=False)


class _EventIds:
    """The event ids of the ADK session objects appended to, so that a redelivered event is
    found without comparing it with every event of a long session.

    The ids of a session object's ``events`` are indexed as the list grows; a list replaced,
    shortened or with another last event is indexed again from its start.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()  # the service may run on several threads' loops
        self._index: dict[int, _Indexed] = {}

    def redelivered(self, session: AdkSession, event: AdkEvent) -> bool:
        """``session.events`` holds an event equal to ``event`` with its id."""
        events = session.events
        with self._guard:
            entry = self._index.get(id(session))
            if entry is None or entry.session() is not session:
                entry = _Indexed(weakref.ref(session, self._forget(id(session))), events)
                self._index[id(session)] = entry
            ids = entry.update(events)
            if event.id not in ids:
                return False
        return any(e == event for e in events if e.id == event.id)

    def _forget(self, key: int) -> Callable[[object], None]:
        def forget(ref: object) -> None:
            with self._guard:
                entry = self._index.get(key)
                if entry is not None and entry.session is ref:
                    del self._index[key]
        return forget


class _Indexed:
    """The ids of one session object's events, and how far its list was indexed."""

    def __init__(self, session: weakref.ref[AdkSession], events: list[AdkEvent]) -> None:
        self.session = session
        self.events = events
        self.ids: set[str] = set()
        self.count = 0
        self.last: AdkEvent | None = None

    def update(self, events: list[AdkEvent]) -> set[str]:
        count = self.count
        if events is not self.events or len(events) < count or (
                count and events[count - 1] is not self.last):
            self.events, self.ids, count = events, set(), 0
        self.ids.update(e.id for e in itertools.islice(events, count, None))
        self.count = len(events)
        self.last = events[-1] if events else None
        return self.ids


def _set_revision(session: AdkSession, unix_ns: int) -> None:
    """Record on ``session`` the stored update time (ns) it reflects.

    ADK's own services keep such a storage revision in the session's private
    ``_storage_update_marker``; this one keeps its exact nanoseconds there, so the stale check
    does not depend on ``last_update_time`` (the last event's timestamp, which may be older).
    """
    session._storage_update_marker = f"{_REVISION}{unix_ns}"


def _revision_of(session: AdkSession) -> int | None:
    """The stored update time (ns) recorded on ``session`` by this adapter, or None."""
    marker = session._storage_update_marker
    if marker and marker.startswith(_REVISION):
        return int(marker[len(_REVISION):])
    return None


def _is_stale(session: AdkSession, stored_ns: int) -> bool:
    """Storage is newer than ``session``: compare with its recorded revision, or without one
    (a session made elsewhere) with its ``last_update_time`` as ADK's SQLite service does."""
    revision = _revision_of(session)
    if revision is not None:
        return stored_ns > revision
    return seconds_from_ns(stored_ns) > session.last_update_time


def _adk_session(stored: Session, events: list[AdkEvent]) -> AdkSession:
    fields = {
        "id": stored.id,
        "app_name": stored.app_name,
        "user_id": stored.user_id,
        "state": {k: decode_json_value(v) for k, v in stored.state.items()
                  if not k.startswith(TEMP_PREFIX)} if stored.state else {},
        "events": events,
        "last_update_time": session_seconds(stored.updated_at),
    }
    revision = {"_storage_update_marker": f"{_REVISION}{stored.updated_at.unix_ns}"}
    # Values of the declared types: built as validation builds them (validated otherwise).
    session = make(AdkSession, fields, revision)
    if session is None:
        session = AdkSession.model_validate(fields)
        _set_revision(session, stored.updated_at.unix_ns)
    return session
