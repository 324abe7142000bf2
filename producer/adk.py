"""Google ADK session service on sessionstreams (``pip install sessionstreams[adk]``).

One line in an ADK app::

    from sessionstreams.producer.adk import SessionStreamsSessionService
    session_service = SessionStreamsSessionService.from_url("redis://localhost:6379/0")
    runner = Runner(app_name="app", agent=agent, session_service=session_service)

Sessions, events and state go to the trpc-agent-go compatible layout, so a Go service reading
the same Redis sees the conversation (see :mod:`sessionstreams.producer._adk_events` for the
mapping). ADK's
rules hold:

* state values are JSON values, stored as their JSON bytes; ``app:``/``user:`` keys go to the
  app/user state, ``temp:`` keys stay on the in-memory session only;
* a partial event is neither stored nor applied;
* ``append_event`` raises ``SessionNotFoundError`` for a missing session and
  ``StaleSessionError`` when storage changed since the session was read (its
  ``updatedAt``, or the time of this process's latest append to it, is newer than the
  session's ``last_update_time``), like ADK's database services; appends to one session are
  serialised within the process;
* ``get_session`` honours ``GetSessionConfig`` exactly (``num_recent_events`` newest events,
  ``after_timestamp`` inclusive), without the Go reader's user-message filtering.

Only :class:`~sessionstreams.producer.service.SessionService` methods are called, so synchronous and
asynchronous persistence both work. In asynchronous mode ``get_session`` waits until this
process's appends to the session are applied (read-your-writes), while ``append_event`` does
not wait for the previous append: its stale check reads the stored session as it is and counts
this process's own appends from memory. A session deleted (or deleted and re-created) by
another process while appends were in flight loses them; that surfaces when they are awaited:
the next ``get_session`` of the session raises ``SessionNotFoundError``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
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

from sessionstreams.common.errors import SessionNotFoundError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Key, Session, UserKey
from sessionstreams.common.settings import Settings
from sessionstreams.producer._adk_events import (
    encode_state,
    from_store_event,
    session_seconds,
    to_store_event,
)
from sessionstreams.producer._interop import (
    ALL_EVENTS,
    PendingWrites,
    decode_json_state,
    gotime_from_seconds,
)
from sessionstreams.producer.service import SessionService

__all__ = ["SessionStreamsSessionService"]

#: Sessions whose latest own append time is remembered in asynchronous mode (oldest dropped).
_WRITTEN_MAX = 10_000

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
        self._owned = service is None
        self.service: SessionService = service if service is not None else SessionService(
            cast(Settings, settings)
        )
        self._pending = PendingWrites(self.service)
        self._locks: weakref.WeakValueDictionary[Key, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Async mode: last_update_time of this process's latest append per session, which the
        # stored session may not show yet (the workers apply it later).
        self._written: OrderedDict[Key, float] = OrderedDict()

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> SessionStreamsSessionService:
        """A service that owns a :class:`SessionService` on ``url`` (more settings as kwargs)."""
        return cls(settings=Settings(url=url, **settings))

    async def close(self) -> None:
        """Close the underlying service if this object built it."""
        if self._owned:
            await self.service.close()

    async def __aenter__(self) -> SessionStreamsSessionService:
        await self.service.start()
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
        """Create a session; ``AlreadyExistsError`` when ``session_id`` is taken."""
        sid = session_id.strip() if session_id else ""
        key = Key(app_name, user_id, sid)
        if sid and await self._peek(key) is not None:
            raise AlreadyExistsError(f"Session with id {sid} already exists.")
        before = GoTime.now()
        created = await self.service.create_session(key, state=encode_state(state))
        if sid and created.created_at < before:
            # Another caller created it between the check and the create.
            raise AlreadyExistsError(f"Session with id {sid} already exists.")
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
        try:
            await self._pending.wait(key)
        except SessionNotFoundError as exc:
            self._written.pop(key, None)
            raise AdkNotFoundError(
                f"Session {session_id} was deleted or re-created while events appended to it "
                "were being persisted; those events were dropped."
            ) from exc
        num = config.num_recent_events if config else None
        after = config.after_timestamp if config else None
        stored = await self.service.get_session(
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
        if user_id is None:
            found = await self.service.list_app_sessions(app_name)
        else:
            found = await self.service.list_sessions(UserKey(app_name, user_id), only_meta=True)
        sessions = [_adk_session(s, []) for s in found]
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    @override
    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete a session with its events (a missing one is fine)."""
        key = Key(app_name, user_id, session_id)
        self._pending.forget(key)
        self._written.pop(key, None)
        await self.service.delete_session(key)

    @override
    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user state without the ``user:`` prefix (empty when none)."""
        return decode_json_state(await self.service.list_user_states(UserKey(app_name, user_id)))

    @override
    async def flush(self) -> None:
        """Wait until every write of this process is persisted (immediate in sync mode)."""
        await self.service.flush()

    # -- events ---------------------------------------------------------------------------
    @override
    async def append_event(self, session: AdkSession, event: AdkEvent) -> AdkEvent:
        """Store ``event`` and apply its state delta, then update ``session`` in memory.

        Raises:
            SessionNotFoundError: (ADK's) the session does not exist.
            StaleSessionError: storage changed since ``session`` was read.
        """
        if event.partial:
            return event
        if not event.id:
            event.id = AdkEvent.new_id()
        key = Key(session.app_name, session.user_id, session.id)
        async with self._lock(key):
            carrier = await self._fresh(key, session)
            self._apply_temp_state(session, event)
            event = self._trim_temp_delta_state(event)
            try:
                receipt = await self.service.append_event(carrier, to_store_event(event))
            except SessionNotFoundError as exc:
                raise AdkNotFoundError(f"Session {session.id} not found.") from exc
            self._pending.add([receipt])
            session.last_update_time = session_seconds(carrier.updated_at)
            if receipt.streamed:
                self._remember_write(key, session.last_update_time)
        return self._commit_event_to_session(session, event)

    # -- helpers --------------------------------------------------------------------------
    def _lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def _peek(self, key: Key, *, wait_own_writes: bool = True) -> Session | None:
        """The stored session with at most one event (existence, updatedAt, incarnation)."""
        return await self.service.get_session(
            key, num_events=1, exact_window=True, wait_own_writes=wait_own_writes
        )

    async def _fresh(self, key: Key, session: AdkSession) -> Session:
        """The stored session, checked not newer than ``session`` (ADK's stale check).

        The stored session is read without waiting for this process's pending appends: they
        cannot make ``session`` stale when they were made through it, and when they were made
        through another object of the session their time is remembered here. Writes of other
        processes count once applied, in either persistence mode.
        """
        stored = await self._peek(key, wait_own_writes=False)
        if stored is None:
            raise AdkNotFoundError(f"Session {session.id} not found.")
        updated = session_seconds(stored.updated_at)
        written = self._written.get(key)
        if written is not None and written <= updated:
            del self._written[key]  # applied: the stored session shows it
            written = None
        if max(updated, written or updated) > session.last_update_time:
            raise StaleSessionError(_STALE)
        stored.events = []
        return stored

    def _remember_write(self, key: Key, when: float) -> None:
        self._written[key] = when
        self._written.move_to_end(key)
        if len(self._written) > _WRITTEN_MAX:
            self._written.popitem(last=False)


def _adk_session(stored: Session, events: list[AdkEvent]) -> AdkSession:
    return AdkSession(
        id=stored.id,
        app_name=stored.app_name,
        user_id=stored.user_id,
        state=decode_json_state(stored.state),
        events=events,
        last_update_time=session_seconds(stored.updated_at),
    )
