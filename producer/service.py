"""SessionService: the session API used by agent processes.

Synchronous persistence (``enable_async_persist=False``) writes through the HashIdx engine:
one Lua script per write, every multi-key write inside the ``{user}`` hash tag, every write
carrying a request id so a retried command never applies twice.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from sessionstreams.common.compat import uses_legacy
from sessionstreams.common.entries import Kind, StatePayload, StreamEntry, TrackPayload
from sessionstreams.common.errors import (
    ClosedError,
    CorruptDataError,
    InvalidArgumentError,
    InvalidKeyError,
    PersistTimeoutError,
    SessionChangedError,
    SessionNotFoundError,
)
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.hashidx import AppendEntry, HashIdxEngine
from sessionstreams.common.keys import (
    KeySpace,
    validate_app,
    validate_key,
    validate_track,
    validate_user_key,
    validate_write_key,
)
from sessionstreams.common.models import (
    Event,
    Key,
    Session,
    TrackEvent,
    TrackEvents,
    UserKey,
)
from sessionstreams.common.outcomes import STALE, Outcome
from sessionstreams.common.readpath import (
    INCARNATION,
    SessionReader,
    decode_events,
    newest_first,
    track_names,
)
from sessionstreams.common.receipt import Receipt
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.settings import Settings
from sessionstreams.common.state import (
    APP_PREFIX,
    TEMP_PREFIX,
    USER_PREFIX,
    b64_patch,
    copy_state,
    is_normalised,
    split_scopes,
    strip_prefix,
)
from sessionstreams.common.store import Store
from sessionstreams.common.tracing import (
    instruments_for,
    operation,
    storage_of_result,
    storage_of_subject,
)
from sessionstreams.common.userdata import EraseReport, ImportReport, UserData
from sessionstreams.common.validation import (
    check_event,
    check_track_event,
    encode_checked,
    score_ns,
)
from sessionstreams.producer._streams import StreamWriter
from sessionstreams.producer._summaries import SummaryRequests
from sessionstreams.producer._writes import SessionWriter
from sessionstreams.producer.hooks import AppendEventContext, GetSessionContext, run_chain

Timestamp = GoTime | datetime | None



def _as_gotime(value: Timestamp) -> GoTime | None:
    if value is None or isinstance(value, GoTime):
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidArgumentError(f"expected an aware datetime (tzinfo set), not {value!r}")
        return GoTime.from_datetime(value)
    raise InvalidArgumentError(f"expected a datetime or GoTime, not {type(value).__name__}")


_RID_PREFIX = uuid.uuid4().hex[:16]
_rid_counter = itertools.count()


def _rid() -> str:
    """A request id unique across processes: a random process prefix and a counter."""
    return f"{_RID_PREFIX}-{next(_rid_counter)}"


def _check_status(status: str, key: Key) -> None:
    outcome = Outcome.from_status(status)
    if outcome is Outcome.APPLIED:
        return
    where = f"{key.app_name}/{key.user_id}/{key.session_id}"
    if status == STALE:
        raise SessionChangedError(f"session {where} was updated meanwhile; nothing written")
    if outcome is not None and outcome.session_missing:
        raise SessionNotFoundError(f"session not found: {where}")
    raise CorruptDataError(f"session {where}: {status}")


class SessionService:
    """Sessions, events, state, tracks on Redis, data-compatible with trpc-agent-go.

    Args:
        settings: the one settings object (see :class:`~sessionstreams.common.settings.Settings`).
        client: an existing ``redis.asyncio`` client (``Redis`` or ``RedisCluster``) to use
            instead of one built from ``settings.url``; :meth:`close` leaves it open (its owner
            closes it).

    Use as ``async with SessionService(settings) as svc:``; :meth:`close` drains and closes.
    Reads go through the read path (:class:`~sessionstreams.common.readpath.SessionReader`),
    direct writes through :class:`~sessionstreams.producer._writes.SessionWriter`, streamed
    writes through :class:`~sessionstreams.producer._streams.StreamWriter`.
    """

    def __init__(self, settings: Settings, *, client: Any = None) -> None:
        self.settings = settings
        self.store = Store(settings, client=client)
        self._instruments = instruments_for(settings)
        count = self._go_count if self._instruments is not None else None
        self._reader = SessionReader(self.store, count=count)
        self._writer = SessionWriter(self.store, self._reader, self.get_session)
        self._streams = (
            StreamWriter(self.client, self.keys, self.scripts, settings)
            if settings.enable_async_persist else None
        )
        self._summaries = SummaryRequests(
            self._reader, queued=self._streams is not None,
            wait_own_writes=self._read_your_writes, count=count,
        )
        self._user_data = UserData(self.store)
        self._started = False
        self._closed = False
        self._errors = self.store.errors

    @property
    def client(self) -> Any:
        """The Redis client (``redis.asyncio``)."""
        return self.store.client

    @property
    def keys(self) -> KeySpace:
        """Every Redis key name of these settings."""
        return self.store.keys

    @property
    def scripts(self) -> Scripts:
        """The Lua scripts."""
        return self.store.scripts

    @property
    def engine(self) -> HashIdxEngine:
        """The HashIdx engine."""
        return self.store.hashidx

    def _go_count(self, name: str, route: str) -> None:
        """The Go counter of ``name`` per layout (ref. §9.2), when metrics are on."""
        if self._instruments is not None and self._instruments.metrics_on:
            self._instruments.go_count(name, route)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Check the server (reachable, no evicting maxmemory-policy on any primary) and
        start the Sentinel failover watch. Idempotent."""
        if not self._started:
            async with self._errors:
                await self.store.start()
                if self._streams is not None:
                    await self._streams.check_conf()
            self._started = True

    async def __aenter__(self) -> SessionService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every write of this process is persisted (immediate in sync mode).

        Raises:
            PersistTimeoutError: writes still pending after ``timeout`` seconds.
        """
        if self._streams is not None:
            async with self._errors:
                await self._streams.flush(timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout``, default ``read_your_writes_wait_s``), then close the clients.

        Writes still pending then stay durable in their shard streams (workers apply them
        later); close reports them with PersistTimeoutError after closing (PersistLostError
        for writes Redis lost). It returns within ``timeout`` even when Redis does not answer.
        A second call does nothing.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush(self.settings.read_your_writes_wait_s if timeout is None else timeout)
        finally:
            await self.store.aclose()

    def _stream_entry(
        self,
        session: Session,
        kind: Kind,
        route: str,
        producer_ts: str = "",
        *,
        event: AppendEntry | None = None,
        app_pairs: tuple[tuple[str, bytes], ...] = (),
        track: TrackPayload | None = None,
        state: StatePayload | None = None,
    ) -> StreamEntry:
        """A stream entry for ``session`` carrying its route, incarnation and limits."""
        s = self.settings
        return StreamEntry(
            kind=kind,
            app=session.app_name,
            user=session.user_id,
            sid=session.id,
            route=route,
            incarnation=session.service_meta.get(INCARNATION, ""),
            producer_ts=producer_ts or GoTime.now().to_text(),
            ttl_ms=self._ttl_ms,
            storage_limit=s.storage_limit,
            user_state_ttl_ms=s.user_state_ttl_s * 1000,
            app_state_ttl_ms=s.app_state_ttl_s * 1000,
            event=event,
            app_pairs=app_pairs,
            track=track,
            state=state,
        )

    async def _read_your_writes(self, key: Key) -> None:
        """Before a read: wait for this process's pending writes of the session."""
        if self._streams is None or not self._streams.pending_for(key):
            return
        try:
            async with self._errors:
                await self._streams.wait_session(key, self.settings.read_your_writes_wait_s)
        except PersistTimeoutError:
            if not self.settings.read_your_writes_stale_ok:
                raise

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the session service is closed")

    def _check_writable(self, key: Key) -> None:
        """Refuse ids that would share keys with another session in the layouts this compat
        mode writes (``common.keys``: ':' in track names, and in user ids with the legacy
        layout)."""
        validate_write_key(key, legacy_layout=uses_legacy(self.settings.compat_mode))

    def _check_summary_target(self, session: Session | None) -> None:
        if session is None:
            return  # refused by the summary requests ("session is nil")
        try:
            self._check_writable(session.key)
        except InvalidKeyError as exc:
            raise InvalidKeyError(f"check session key failed: {exc}") from exc

    @property
    def _ttl_ms(self) -> int:
        return self.settings.session_ttl_ms

    # -- sessions -----------------------------------------------------------------------
    @operation("create_session", span=True, count="after", storage=storage_of_result)
    async def create_session(
        self, key: Key, state: Mapping[str, Any] | None = None, *, exclusive: bool = False
    ) -> Session:
        """Create a session; return the existing one when ``key.session_id`` exists.

        An empty ``session_id`` gets a UUID. ``app:``/``user:`` keys of ``state`` go to the
        app and user state, ``temp:`` keys stay on the returned session only.

        Raises:
            SessionExistsError: ``exclusive`` and ``key.session_id`` exists. The create
                script decides, so of concurrent creators of one id exactly one succeeds;
                the others write nothing.
        """
        self._check_open()
        validate_user_key(key)
        given_id = bool(key.session_id)
        if not given_id:
            key = Key(key.app_name, key.user_id, str(uuid.uuid4()))
        self._check_writable(key)
        values = copy_state(state)
        async with self._errors:
            return await self._writer.create(key, values, given_id, exclusive=exclusive)

    @operation("get_session", span=True, count="after", storage=storage_of_result)
    async def get_session(
        self,
        key: Key,
        num_events: int = 0,
        after: Timestamp = None,
        *,
        exact_window: bool = False,
        wait_own_writes: bool = True,
    ) -> Session | None:
        """Read a session with its newest events; None when it does not exist.

        Args:
            key: the session.
            num_events: newest events to return (0 = ``session_event_limit``).
            after: only events at or after this time (the reference filtering applies:
                the newest earlier user message may be prepended).
            exact_window: return exactly the newest ``num_events`` stored events at or after
                ``after``, without the reference's user-message filtering (no event dropped
                before the first user message, none prepended). For frameworks with their own
                window semantics (the ADK and OpenAI Agents adapters).
            wait_own_writes: in async mode, first wait until this process's pending writes of
                the session are applied (read-your-writes). False reads what is stored now,
                e.g. a check of the session's meta that accounts for its own writes itself.
        """
        self._check_open()
        validate_key(key)
        ctx = GetSessionContext(
            key=key, num_events=num_events, after=_as_gotime(after), exact_window=exact_window,
            wait_own_writes=wait_own_writes,
        )
        hooks = self.settings.get_session_hooks
        if not hooks:
            return await self._get_final(ctx)
        session: Session | None = await run_chain(hooks, ctx, self._get_final)
        return session

    @operation("get_events")
    async def get_events(
        self,
        key: Key,
        num_events: int = 0,
        after: Timestamp = None,
        *,
        wait_own_writes: bool = True,
    ) -> list[Event] | None:
        """The newest ``num_events`` stored events of a session, oldest first; None when the
        session does not exist.

        The window of ``get_session(..., exact_window=True)`` without reading the state
        scopes, summaries or track events: one script call (on a HashIdx-only deployment).
        With get-session hooks set it goes through :meth:`get_session`, so the hooks see it.

        Args:
            key: the session.
            num_events: newest events to return (0 = ``session_event_limit``).
            after: only events at or after this time.
            wait_own_writes: as for :meth:`get_session`.
        """
        if self.settings.get_session_hooks:
            return await self._hooked_events(key, num_events, after, wait_own_writes)
        limit, since = await self._window_args(key, num_events, after, wait_own_writes)
        async with self._errors:
            return await self._reader.get_events(key, limit, since)

    @operation("get_event_documents")
    async def get_event_documents(
        self,
        key: Key,
        num_events: int = 0,
        after: Timestamp = None,
        *,
        wait_own_writes: bool = True,
    ) -> list[bytes] | None:
        """The stored JSON (Go's ``json.Marshal(event)``) of the events :meth:`get_events`
        returns, for callers that decode only the fields they need; None when the session does
        not exist. A document Go would refuse is returned as stored (get_events skips it)."""
        if self.settings.get_session_hooks:
            events = await self._hooked_events(key, num_events, after, wait_own_writes)
            return None if events is None else [e.to_json() for e in events]
        limit, since = await self._window_args(key, num_events, after, wait_own_writes)
        async with self._errors:
            return await self._reader.event_documents(key, limit, since)

    async def _hooked_events(
        self, key: Key, num_events: int, after: Timestamp, wait_own_writes: bool
    ) -> list[Event] | None:
        """An event window read through :meth:`get_session`, so its hooks see it."""
        session = await self.get_session(key, num_events, after, exact_window=True,
                                         wait_own_writes=wait_own_writes)
        return None if session is None else session.events

    async def _window_args(
        self, key: Key, num_events: int, after: Timestamp, wait_own_writes: bool
    ) -> tuple[int, GoTime | None]:
        """Check the call, wait for this process's writes if asked; (limit, after)."""
        self._check_open()
        validate_key(key)
        if wait_own_writes:
            await self._read_your_writes(key)
        limit = num_events if num_events > 0 else max(self.settings.session_event_limit, 0)
        return limit, _as_gotime(after)

    async def _get_final(self, ctx: GetSessionContext) -> Session | None:
        limit = ctx.num_events if ctx.num_events > 0 else max(self.settings.session_event_limit, 0)
        if ctx.wait_own_writes:
            await self._read_your_writes(ctx.key)
        async with self._errors:
            return await self._reader.get_session(
                ctx.key, limit, ctx.after, exact=ctx.exact_window
            )

    @operation("list_sessions")
    async def list_sessions(
        self,
        user_key: UserKey,
        only_meta: bool = False,
        offset: int = 0,
        limit: int = 0,
        num_events: int = 0,
        after: Timestamp = None,
    ) -> list[Session]:
        """A user's sessions, newest ``updated_at`` first, paged by ``offset``/``limit``.

        ``limit`` 0 returns every session from ``offset`` on. With the user session index
        enabled no SCAN is made.
        """
        self._check_open()
        validate_user_key(user_key)
        if offset < 0 or limit < 0:
            raise InvalidArgumentError("list session page requires offset >= 0 and limit >= 0")
        events_limit = num_events if num_events > 0 else max(self.settings.session_event_limit, 0)
        if self._streams is not None:
            for pending_key in self._streams.pending_keys(user_key):
                await self._read_your_writes(pending_key)
        async with self._errors:
            sessions = await self._reader.list_sessions(
                user_key, only_meta, events_limit, _as_gotime(after)
            )
        sessions.sort(key=newest_first, reverse=True)
        end = None if limit == 0 else offset + limit
        return sessions[offset:end]

    @operation("list_app_sessions")
    async def list_app_sessions(self, app_name: str) -> list[Session]:
        """Every session of an app, all users (meta and state only, no events).

        This SCANs the keyspace over every primary: its cost grows with the whole database,
        not with the app. Prefer :meth:`list_sessions` where the user is known.
        """
        self._check_open()
        validate_app(app_name)
        async with self._errors:
            return await self._reader.list_app_sessions(app_name)

    @operation("delete_session", span=True)
    async def delete_session(self, key: Key) -> None:
        """Delete a session with its events, tracks, summaries and index entry.

        Streamed writes of the session still in flight are dropped by the workers (outcome
        ``session_gone`` or ``superseded``); reads in this process stop waiting for them.
        """
        self._check_open()
        self._check_writable(key)
        async with self._errors:
            await self._writer.delete(key)
        if self._streams is not None:
            self._streams.forget_session(key)

    # -- events -------------------------------------------------------------------------
    @operation("append_event", span=True, count="after", storage=storage_of_subject,
               synchronous_only=True)
    async def append_event(
        self,
        session: Session,
        event: Event,
        *,
        updated_at: GoTime | None = None,
        unless_updated_after: GoTime | None = None,
    ) -> Receipt:
        """Append an event: stored if storable, its state delta applied, caller updated.

        ``updated_at`` is the update time the write carries (default: now); the stored
        ``updatedAt`` becomes the later of it and the stored one. ``unless_updated_after``
        (synchronous mode only) makes the write conditional: refused, with nothing written,
        when the stored ``updatedAt`` is later than that time (an optimistic check that the
        caller's view of the session is current, in the same script as the write).

        Returns:
            A Receipt; in synchronous mode the write is already persisted.

        Raises:
            SessionNotFoundError: the session does not exist (deleted or expired).
            SessionChangedError: the stored session was updated after
                ``unless_updated_after``.
            InvalidArgumentError: ``unless_updated_after`` in asynchronous mode.
        """
        self._check_open()
        if session is None:
            raise InvalidArgumentError("session is nil")
        if event is None:
            raise InvalidArgumentError("event is nil")
        if unless_updated_after is not None and self._streams is not None:
            raise InvalidArgumentError(
                "unless_updated_after needs synchronous mode (a streamed write is applied later)")
        key = session.key
        self._check_writable(key)
        guard = None if unless_updated_after is None else unless_updated_after.to_text()
        hooks = self.settings.append_event_hooks
        if not hooks:
            return (await self._append_many(session, [event], key, updated_at, guard))[0]
        ctx = AppendEventContext(session=session, event=event, key=key)
        final = functools.partial(self._append_final, updated_at=updated_at, guard=guard)
        receipt: Receipt = await run_chain(hooks, ctx, final)
        return receipt

    async def _append_final(
        self, ctx: AppendEventContext, updated_at: GoTime | None = None, guard: str | None = None
    ) -> Receipt:
        receipts = await self._append_many(ctx.session, [ctx.event], ctx.key, updated_at, guard)
        return receipts[0]

    @operation("append_events")
    async def append_events(self, session: Session, events: Sequence[Event]) -> list[Receipt]:
        """Append several events to one session in one script call (hooks do not run)."""
        self._check_open()
        if session is None:
            raise InvalidArgumentError("session is nil")
        if any(e is None for e in events):
            raise InvalidArgumentError("event is nil")
        key = session.key
        self._check_writable(key)
        return await self._append_many(session, list(events), key)

    async def _append_many(
        self,
        session: Session,
        events: list[Event],
        key: Key,
        updated_at: GoTime | None = None,
        guard: str | None = None,
    ) -> list[Receipt]:
        """Check and encode every event, write them, then show them on the caller's session.

        Nothing is written (or acknowledged) unless every event passed its checks, and the
        caller's session changes only once the write succeeded. ``updated_at`` is the update
        time the write carries (default: now); ``guard`` the Go time text of
        ``unless_updated_after`` (synchronous mode).
        """
        now = updated_at or GoTime.now()
        producer_ts = now.to_text()
        built = [b for e in events if (b := _prepare_event(e, producer_ts)) is not None]
        if not built:
            return [Receipt(key, -1, "", _rid()) for _ in events]
        if self._streams is not None:
            async with self._errors:
                route = await self._reader.route_of(session)
                streamed = [
                    self._stream_entry(session, "event", route, b.entry.producer_ts,
                                       event=b.entry, app_pairs=tuple(b.app))
                    for b in built
                ]
                receipts = await self._streams.submit(key, streamed)
            # The window a read finds once the workers applied them (checked by that read).
            self.store.hashidx.windows.appended(
                key, (b.entry.event_id for b in built if b.entry.event_json),
                keep=self.settings.storage_limit)
        else:
            receipts = await self._append_direct(session, key, built, guard or "")
        for b in built:
            _update_in_memory(session, b.event, now, b.storable)
        return receipts

    async def _append_direct(
        self, session: Session, key: Key, built: list[_Built], guard: str = ""
    ) -> list[Receipt]:
        """Synchronous append: the session script, then the app state of what it applied.

        App state lives in another slot. Its key is checked first, and it is written after the
        script and only for entries the script applied (or had applied): a refused append
        changes nothing, and a retry of the same event repeats the app write.
        """
        entries = [b.entry for b in built]
        app_name = key.app_name
        async with self._errors:
            route = await self._reader.route_of(session)
            if any(b.app for b in built):
                await self._writer.check_app_state(app_name)
            statuses = await self.store.engines[route].append(
                key, entries, ttl_ms=self._ttl_ms, storage_limit=self.settings.storage_limit,
                user_state_ttl_ms=self.settings.user_state_ttl_s * 1000, stale_after=guard,
            )
            app_pairs = [pair for b, status in zip(built, statuses, strict=True)
                         if Outcome.from_status(status) is Outcome.APPLIED for pair in b.app]
            if app_pairs:
                await self._writer.write_app_state(app_name, app_pairs)
        for status in statuses:
            _check_status(status, key)
        return [Receipt(key, -1, "", e.rid) for e in entries]

    @operation("append_track_event", span=True, count="before",
               storage=storage_of_subject)
    async def append_track_event(self, session: Session, track_event: TrackEvent) -> Receipt:
        """Append a track event; the track name is merged into ``state["tracks"]``."""
        self._check_open()
        if session is None:
            raise InvalidArgumentError("session is nil")
        if track_event is None:
            raise InvalidArgumentError("append track event: track event is nil")
        key = session.key
        self._check_writable(key)
        if not track_event.track:
            raise InvalidArgumentError("append track event: track name is required")
        validate_track(track_event.track)
        check_track_event(track_event)
        track_json = encode_checked(track_event.to_json, "the track event")
        ts_ns = score_ns(track_event.timestamp)
        rid = _rid()
        s = self.settings
        if self._streams is not None:
            payload = TrackPayload(
                rid=rid, track=track_event.track, track_json=track_json, ts_ns=ts_ns,
                track_ttl_s=s.track_ttl_s, persist=s.track_ttl_explicit_none,
            )
            async with self._errors:
                route = await self._reader.route_of(session)
                (receipt,) = await self._streams.submit(
                    key, [self._stream_entry(session, "track", route, track=payload)]
                )
            _add_track_in_memory(session, track_event)
            return receipt
        async with self._errors:
            route = await self._reader.route_of(session)
            status = await self.store.engines[route].append_track(
                key, rid=rid, track=track_event.track, track_json=track_json, ts_ns=ts_ns,
                track_ttl_s=s.track_ttl_s, persist=s.track_ttl_explicit_none,
                producer_ts=GoTime.now().to_text(), session_ttl_ms=self._ttl_ms,
            )
        _check_status(status, key)
        _add_track_in_memory(session, track_event)
        return Receipt(key, -1, "", rid)

    @operation("get_track_events", span=True)
    async def get_track_events(
        self, key: Key, track: str, num_events: int = 0, after: Timestamp = None
    ) -> TrackEvents:
        """Events of one track, oldest first (``num_events`` 0 = all); read even without meta."""
        self._check_open()
        validate_key(key)
        await self._read_your_writes(key)
        async with self._errors:
            return await self._reader.track_events(key, track, num_events, _as_gotime(after))

    @operation("trim_conversations")
    async def trim_conversations(self, key: Key, count: int = 1) -> list[Event]:
        """Delete the newest ``count`` conversations (events sharing a request id).

        Returns the deleted events oldest first; an unknown session gives ``[]``.
        """
        self._check_open()
        self._check_writable(key)
        count = max(count, 1)
        await self._read_your_writes(key)
        async with self._errors:
            status, raws = await self._writer.trim(key, count, _rid())
        if status == "session_gone":
            return []
        _check_status(status, key)
        return decode_events(raws, key)

    # -- state --------------------------------------------------------------------------
    @operation("update_session_state")
    async def update_session_state(self, key: Key, state: Mapping[str, Any]) -> Receipt:
        """Merge ``state`` into the session state (``app:``/``user:`` keys are refused)."""
        self._check_open()
        self._check_writable(key)
        values = copy_state(state)
        for k in values:
            if not k:
                raise InvalidKeyError("state key is required")
            if k.startswith(APP_PREFIX):
                raise InvalidKeyError(f"{k} is not allowed, use update_app_state instead")
            if k.startswith(USER_PREFIX):
                raise InvalidKeyError(f"{k} is not allowed, use update_user_state instead")
        patch = {k: v for k, v in values.items() if not k.startswith(TEMP_PREFIX)}
        rid = _rid()
        if self._streams is not None:
            async with self._errors:
                entry = self._stream_entry(
                    Session(id=key.session_id, app_name=key.app_name, user_id=key.user_id),
                    "state", await self._reader.route_of(key),
                    state=StatePayload(rid=rid, patch_json=b64_patch(patch)),
                )
                (receipt,) = await self._streams.submit(key, [entry])
            return receipt
        async with self._errors:
            route = await self._reader.route_of(key)
            status = await self.store.engines[route].update_state(
                key, rid=rid, patch_json=b64_patch(patch), producer_ts=GoTime.now().to_text(),
                ttl_ms=self._ttl_ms,
            )
        _check_status(status, key)
        return Receipt(key, -1, "", rid)

    @operation("update_app_state")
    async def update_app_state(self, app_name: str, state: Mapping[str, Any]) -> None:
        """Set app-state fields (a leading ``app:`` is stripped); refreshes the app TTL."""
        self._check_open()
        validate_app(app_name)
        pairs = strip_prefix(state, APP_PREFIX)
        async with self._errors:
            await self._writer.write_app_state(app_name, pairs)

    @operation("list_app_states")
    async def list_app_states(self, app_name: str) -> dict[str, bytes]:
        """Every app-state field (empty when none)."""
        self._check_open()
        validate_app(app_name)
        async with self._errors:
            return await self._reader.list_app_states(app_name)

    @operation("delete_app_state")
    async def delete_app_state(self, app_name: str, key: str) -> None:
        """Delete one app-state field (a missing one is fine)."""
        self._check_open()
        validate_app(app_name)
        field = _state_field(key, APP_PREFIX)
        async with self._errors:
            await self.client.hdel(self.keys.app_state(app_name), field)

    @operation("update_user_state")
    async def update_user_state(self, user_key: UserKey, state: Mapping[str, Any]) -> None:
        """Set user-state fields (a leading ``user:`` is stripped); refreshes the user TTL."""
        self._check_open()
        validate_user_key(user_key)
        pairs = strip_prefix(state, USER_PREFIX)
        async with self._errors:
            await self._writer.write_user_state(user_key, pairs)

    @operation("list_user_states")
    async def list_user_states(self, user_key: UserKey) -> dict[str, bytes]:
        """Every user-state field (empty when none)."""
        self._check_open()
        validate_user_key(user_key)
        async with self._errors:
            return await self._reader.list_user_states(user_key)

    @operation("delete_user_state")
    async def delete_user_state(self, user_key: UserKey, key: str) -> None:
        """Delete one user-state field (a missing one is fine)."""
        self._check_open()
        validate_user_key(user_key)
        field = _state_field(key, USER_PREFIX)
        async with self._errors:
            await self._writer.delete_user_state(user_key, field)

    # -- summaries (reference §7; producer/_summaries.py) ---------------------------------
    @operation("create_session_summary", span=True)
    async def create_session_summary(
        self, session: Session, filter_key: str = "", force: bool = False
    ) -> None:
        """Summarize ``session`` (its in-memory events) for ``filter_key`` here and store it.

        Does nothing without ``settings.summarizer`` or for a filter key the allowlist
        refuses. Only events after the previous summary's boundary are summarized; with
        ``force`` the summarizer runs even without new events.

        Raises:
            SummarizeError: the summarizer failed (the stored summary is kept).
        """
        self._check_open()
        self._check_summary_target(session)
        async with self._errors:
            await self._summaries.create(session, filter_key, force)

    @operation("enqueue_summary_job")
    async def enqueue_summary_job(
        self, session: Session, filter_key: str = "", force: bool = False
    ) -> str | None:
        """Queue a summary of ``session`` for the summary workers (async mode).

        The job covers every write queued before it, from any process. With the queue over
        ``summary_queue_size`` (or in synchronous mode) it runs here when this service has a
        summarizer. Returns the job's stream entry id, or None when it ran here.

        Raises:
            BackpressureError: the queue is full and this service has no summarizer.
            SummaryTimeoutError: a job run here exceeded ``summary_job_timeout``.
        """
        self._check_open()
        self._check_summary_target(session)
        async with self._errors:
            return await self._summaries.enqueue(session, filter_key, force)

    @operation("get_session_summary_text", span=True)
    async def get_session_summary_text(
        self, session: Session, filter_key: str = ""
    ) -> str | None:
        """The summary of ``filter_key`` (else the full-session one); None when there is none.

        In-memory summaries first, then the stored ones; errors give None (as in Go).
        """
        return await self._summaries.text(session, filter_key)

    # -- a user's data ------------------------------------------------------------------
    async def export_user(self, user_key: UserKey) -> AsyncIterator[dict[str, Any]]:
        """Everything held about one user, both layouts, as export records (JSON-ready
        dicts, one per line of ``sessionstreams user export``): every session's keys (meta,
        events, state, summaries, tracks), the user's keys (user state, index), and writes
        still in flight in the streams. See :mod:`sessionstreams.common.userdata`.

        This process's pending writes of the user are waited for first.
        """
        self._check_open()
        validate_user_key(user_key)
        if self._streams is not None:
            for pending_key in self._streams.pending_keys(user_key):
                await self._read_your_writes(pending_key)
        async with self._errors:
            async for record in self._user_data.export(user_key):
                yield record

    async def import_user(
        self, records: Iterable[dict[str, Any]], *, replace: bool = False
    ) -> ImportReport:
        """Load export records back (e.g. into an empty Redis); existing keys are refused
        unless ``replace``.

        Raises:
            SessionExistsError: a key of a record exists already.
        """
        self._check_open()
        async with self._errors:
            return await self._user_data.load(records, replace=replace)

    async def erase_user(self, user_key: UserKey) -> EraseReport:
        """Delete every key of one user in both layouts (sessions, events, tracks, summaries,
        user state, the session index, our bookkeeping) and the user's entries in the
        persist, summary and dead-letter streams, so none is applied afterwards. The app
        state, shared by every user of the app, is left alone. Safe to rerun.
        """
        self._check_open()
        validate_user_key(user_key)
        if self._streams is not None:
            for pending_key in self._streams.pending_keys(user_key):
                self._streams.forget_session(pending_key)
        async with self._errors:
            return await self._user_data.erase(user_key)

    # -- receipts -----------------------------------------------------------------------
    async def wait_persisted(self, receipt: Receipt | str, timeout: float = 5.0) -> str:
        """Wait until a write reached its outcome; returns ``applied``.

        A receipt may come from another process (``str(receipt)`` / ``Receipt.parse``).

        Raises:
            SessionNotFoundError: the session was deleted, re-created or expired meanwhile.
            DeadLetteredError: the write failed repeatedly and was dead-lettered.
            PersistTimeoutError: no outcome within ``timeout`` seconds.
        """
        if isinstance(receipt, str):
            receipt = Receipt.parse(receipt)
        if not receipt.streamed:
            return "applied"
        writer = self._streams or StreamWriter(self.client, self.keys, self.scripts, self.settings)
        async with self._errors:
            outcomes = await writer.wait([receipt], timeout)
        return outcomes[receipt.rid]


def _state_field(key: str, prefix: str) -> str:
    field = key[len(prefix):] if key.startswith(prefix) else key
    if not field:
        raise InvalidKeyError("state key is required")
    return field


class _Built(NamedTuple):
    """An event checked and encoded, ready to write."""

    event: Event
    entry: AppendEntry
    app: list[tuple[str, bytes]]
    storable: bool


def _prepare_event(event: Event, producer_ts: str) -> _Built | None:
    """Give ``event`` an id and a normalised delta, check it, and build its apply-script entry
    and app-state pairs; None for a partial (streaming) event, which changes nothing, in
    memory or in storage. The caller's session is not touched here.

    Raises:
        InvalidArgumentError: a field does not hold what it declares (see
            :mod:`sessionstreams.common.validation`), or a delta value is neither bytes, str
            nor None.
        InvalidKeyError: a delta key is empty or names no field.
    """
    if isinstance(event.state_delta, dict) and not is_normalised(event.state_delta):
        event.state_delta = copy_state(event.state_delta)  # str → UTF-8, else refused
    check_event(event)
    if event.is_partial:
        return None
    if not event.id:
        event.id = str(uuid.uuid4())
    storable = event.is_storable()
    entry, app = _entry_for(event, producer_ts, storable)
    return _Built(event, entry, app, storable)


def _update_in_memory(session: Session, event: Event, now: GoTime, storable: bool) -> None:
    """What the running agent sees at once: the event and its whole delta (temp: included)."""
    if storable:
        session.events.append(event)
    session.updated_at = now
    if event.state_delta:
        session.state.update(event.state_delta)


def _entry_for(
    event: Event, producer_ts: str, storable: bool
) -> tuple[AppendEntry, list[tuple[str, bytes]]]:
    """The apply-script entry of one checked event, and its app-state pairs (written after
    the session script, for what it applied)."""
    delta = event.state_delta or {}
    scoped = split_scopes(delta)
    stored = event
    if any(k.startswith(TEMP_PREFIX) for k in delta):
        kept = {k: v for k, v in delta.items() if not k.startswith(TEMP_PREFIX)}
        stored = msgspec.structs.replace(event, state_delta=kept or None)
    entry = AppendEntry(
        rid=_rid(),
        event_id=event.id,
        event_json=encode_checked(stored.to_json, "the event") if storable else b"",
        ts_ns=score_ns(event.timestamp),
        is_user=event.is_user_message(),
        producer_ts=producer_ts,
        session_delta=b64_patch(scoped.session) if scoped.session else b"",
        user_pairs=tuple(scoped.user),
    )
    return entry, scoped.app


def _add_track_in_memory(session: Session, track_event: TrackEvent) -> None:
    name = track_event.track
    names = track_names(session.state)
    if name not in names:
        session.state["tracks"] = msgspec.json.encode([*names, name])
    if session.tracks is None:
        session.tracks = {}
    bundle = session.tracks.setdefault(name, TrackEvents(track=name, events=[]))
    if bundle.events is None:
        bundle.events = []
    bundle.events.append(track_event)
    session.updated_at = GoTime.now()
