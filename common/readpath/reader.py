"""SessionReader: every read of sessions, tracks, state and summaries, in both layouts.

Which layout answers (the compat fallback), per :class:`~sessionstreams.common.settings.CompatMode`:

- ``NONE``: HashIdx only. A get is one load script (its window fetched by rank or score), plus
  the app-state hash on Cluster (another slot) and one call for tracks when the session has any.
- ``LEGACY`` / ``TRANSITION``: a session present in the legacy layout is read from there
  (tagged ``zset``), else from HashIdx (tagged ``hashidx``). Each read covers both layouts in
  one script (single node) or one pipeline (Cluster), so a HashIdx session costs no extra round
  trip for the existence check. The user state merged into every session is the legacy user
  state overlaid by the HashIdx one; listings merge both layouts, the legacy copy winning.

The stored documents are decoded by :mod:`.documents`; the engines
(:mod:`~sessionstreams.common.hashidx`, :mod:`~sessionstreams.common.legacy`) only build
the script calls and parse their raw replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from sessionstreams.common.compat import (
    HASHIDX,
    ZSET,
    load_both_call,
    parse_load_both,
    parse_presence,
    presence_calls,
    tag_route,
    user_state_read_keys,
    uses_legacy,
)
from sessionstreams.common.errors import DecodeError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.hashidx import LoadResult
from sessionstreams.common.logs import get_logger
from sessionstreams.common.models import (
    Event,
    Key,
    Session,
    SessionMeta,
    SessionStateDoc,
    TrackEvents,
    UserKey,
    decode_summary_map,
)
from sessionstreams.common.readpath.documents import (
    STORAGE_TYPE,
    attach_summaries,
    build_session,
    decode_events,
    decode_meta,
    decode_tracks,
    newest_first,
    pick_summary,
    track_names,
    window_events,
)
from sessionstreams.common.state import decode_hash
from sessionstreams.common.store import Store

log = get_logger("sessionstreams.read")

#: Called with (operation, route) when a read picked a layout (the Go per-layout counters).
RouteCounter = Callable[[str, str], None]


def _ns(after: GoTime | None) -> int | None:
    return None if after is None or after.is_zero else after.unix_ns


def _load_flags(exact: bool) -> str:
    """The load flags of a whole session read (``x``: the exact window)."""
    return "estuax" if exact else "estua"


def hash_reply(reply: Any) -> dict[str, bytes]:
    """A HGETALL reply as ``{field: bytes}`` (RESP2 flat lists included)."""
    if isinstance(reply, list):  # RESP2 flat list from execute_command without a callback
        reply = {reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}
    return decode_hash(reply)


def meta_from_doc(raw: bytes, key: Key) -> SessionMeta:
    """A legacy SessionState document as a meta (appName and userID come from the key).

    Raises:
        DecodeError: the document is not valid JSON of a SessionState.
    """
    try:
        doc = SessionStateDoc.from_json(raw)
    except DecodeError as exc:
        raise DecodeError(f"unmarshal legacy session state of {key}: {exc}", raw) from exc
    return SessionMeta(
        id=doc.id or key.session_id, app_name=key.app_name, user_id=key.user_id,
        state=doc.state, generation=doc.generation, created_at=doc.created_at,
        updated_at=doc.updated_at,
    )


def _unreadable(reply: Any, what: object) -> bool:
    """True (logged) when a pipelined reply is a wrong-type error: that session is left out
    of a listing, as the Go service does; any other error is raised."""
    if not isinstance(reply, Exception):
        return False
    if isinstance(reply, ResponseError) and "WRONGTYPE" in str(reply):
        log.warning("listing skips a session with a key of the wrong type", session=str(what),
                    error=str(reply))
        return True
    raise reply


def _hash_or_none(reply: Any, who: object) -> dict[str, bytes] | None:
    """A HGETALL reply, or None when the key has the wrong type (its sessions are skipped)."""
    return None if _unreadable(reply, who) else hash_reply(reply)


def _raised(replies: list[Any]) -> list[Any]:
    """``replies``, raising the first error among them (state every session shares)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class SessionReader:
    """Reads sessions with the compat fallback; shared by the producer and the workers.

    Args:
        store: the assembled store.
        count: optional callback of the Go per-layout counters.
    """

    def __init__(self, store: Store, count: RouteCounter | None = None) -> None:
        self.store = store
        self.settings = store.settings
        self.keys = store.keys
        self._count = count

    async def _pipeline(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        return await self.store.scripts.run_pipeline(self.store.client, calls)

    @property
    def _legacy_mode(self) -> bool:
        return uses_legacy(self.settings.compat_mode)

    # -- where a session lives --------------------------------------------------------------
    async def route_of(self, session_or_key: Session | Key) -> str:
        """The layout of an existing session (``hashidx`` or ``zset``): the session's tag when
        usable, else where it lives (one HEXISTS in LEGACY/TRANSITION); a session found
        nowhere is routed to HashIdx, whose scripts answer ``session_gone``."""
        mode = self.settings.compat_mode
        if isinstance(session_or_key, Session):
            route = tag_route(mode, session_or_key.service_meta.get(STORAGE_TYPE))
            if route is not None:
                return route
            key = session_or_key.key
        else:
            key = session_or_key
        if not uses_legacy(mode):
            return HASHIDX
        found = await self.store.client.hexists(self.keys.legacy_sessions(key), key.session_id)
        return ZSET if found else HASHIDX

    # -- one session --------------------------------------------------------------------
    async def get_session(
        self, key: Key, limit: int, after: GoTime | None, *, exact: bool = False
    ) -> Session | None:
        """One session with its newest ``limit`` events at or after ``after``; None if absent.

        Without ``exact`` the reference filtering applies (the window starts at its first user
        message; the newest earlier user message is prepended when the window has none).
        """
        if self._legacy_mode:
            route, loaded = await self._load_either(key, limit, after, exact)
        else:
            route, loaded = HASHIDX, await self._load_hashidx(key, limit, after, exact)
        if loaded is None or loaded.meta is None:
            return None
        meta = meta_from_doc(loaded.meta, key) if route == ZSET else decode_meta(loaded.meta, key)
        events = await self._window(route, key, loaded, after, exact)
        session = build_session(key, meta, events, loaded.user_state, loaded.app_state,
                                storage=route)
        attach_summaries(session, loaded.summary)
        names = track_names(meta.state or {}, loaded.track_names)
        if names:
            engine = self.store.engines[route]
            call = engine.load_tracks_call(key, names, limit, _ns(after))
            (reply,) = await self._pipeline([call])
            session.tracks = decode_tracks(names, reply, key)
        return session

    async def get_events(
        self, key: Key, limit: int, after: GoTime | None
    ) -> list[Event] | None:
        """The newest ``limit`` events at or after ``after`` exactly (no user-message
        filtering), without state, summaries or tracks; None if the session is absent."""
        if self._legacy_mode:
            session = await self.get_session(key, limit, after, exact=True)
            return None if session is None else session.events
        documents = await self._event_documents(key, limit, after)
        return None if documents is None else decode_events(documents, key)

    async def event_documents(
        self, key: Key, limit: int, after: GoTime | None
    ) -> list[bytes] | None:
        """The stored JSON of the events :meth:`get_events` returns (Go's encoding); None if
        the session is absent. On a HashIdx-only deployment the documents are returned as
        stored, an undecodable one too; with legacy data to consult they are the decoded
        events encoded again (an undecodable one is left out)."""
        if self._legacy_mode:
            events = await self.get_events(key, limit, after)
            return None if events is None else [e.to_json() for e in events]
        return await self._event_documents(key, limit, after)

    async def _event_documents(
        self, key: Key, limit: int, after: GoTime | None
    ) -> list[bytes] | None:
        """One script reading the meta's existence and the event window (HashIdx)."""
        engine = self.store.hashidx
        if engine.single_node:
            loaded = await engine.load(key, limit, _ns(after), "ex")
            return loaded.events if loaded.meta is not None else None
        call = engine.load_call(key, limit, _ns(after), "ex")
        raw = await self.store.scripts.call(self.store.client, *call[1:])
        return list(raw[4]) if raw[0] else None

    async def _load_hashidx(
        self, key: Key, limit: int, after: GoTime | None, exact: bool
    ) -> LoadResult:
        engine = self.store.hashidx
        flags = _load_flags(exact)
        if engine.single_node:
            return await engine.load(key, limit, _ns(after), flags)
        call = engine.load_call(key, limit, _ns(after), flags)
        app_call = ("cmd", "HGETALL", self.keys.app_state(key.app_name))
        raw_load, raw_app = await self._pipeline([call, app_call])
        loaded = engine.parse_load(raw_load)
        loaded.app_state = hash_reply(raw_app)
        return loaded

    async def _load_either(
        self, key: Key, limit: int, after: GoTime | None, exact: bool
    ) -> tuple[str, LoadResult | None]:
        """Both layouts: one script on a single node (or, for a remembered HashIdx window, one
        transaction that also checks the legacy layout), one pipeline on Cluster."""
        engine = self.store.hashidx
        if engine.single_node:
            after_ns = _ns(after)
            window = engine.reads_window(limit, after_ns)
            if window:
                quick = await engine.quick_load(key, limit, _load_flags(exact) + "l")
                if quick is not None:
                    return HASHIDX, quick if quick.meta is not None else None
            call = load_both_call(self.keys, key, limit, after_ns, exact, ids=window)
            found, loaded, ids = parse_load_both(
                await self.store.scripts.call(self.store.client, *call[1:]))
            if window and found == HASHIDX:
                engine.windows.learned(key, limit, ids)
            elif window:  # absent, or in the legacy layout
                engine.windows.forget(key)
            return (found, loaded) if found is not None else (HASHIDX, None)
        legacy, hashidx = self.store.legacy, self.store.hashidx
        x = "x" if exact else ""
        raw_legacy, raw_hashidx, raw_user = await self._pipeline([
            legacy.load_call(key, limit, _ns(after), "estua" + x),
            hashidx.load_call(key, limit, _ns(after), "est" + x),
            ("cmd", "HGETALL", self.keys.user_state(key)),
        ])
        from_legacy = legacy.parse_load(raw_legacy)
        user_state = {**from_legacy.user_state, **hash_reply(raw_user)}
        if from_legacy.meta is not None:
            loaded, route = from_legacy, ZSET
        else:
            loaded, route = hashidx.parse_load(raw_hashidx), HASHIDX
        loaded.user_state, loaded.app_state = user_state, from_legacy.app_state
        return route, loaded

    async def _window(
        self, route: str, key: Key, loaded: LoadResult, after: GoTime | None, exact: bool
    ) -> list[Event]:
        """The events of a load, with the reference filtering unless ``exact``."""
        if exact:
            return decode_events(loaded.events, key)
        events, lookup = window_events(loaded, key, after)
        if not lookup:
            return events
        if route == ZSET:
            found = await self.store.legacy.find_user_before(key, loaded.events[0])
        else:
            found = await self.store.hashidx.find_user_before(key, events[0].id)
        return decode_events([found], key) + events if found else []

    # -- listings -----------------------------------------------------------------------
    async def list_sessions(
        self, user: UserKey, only_meta: bool, limit: int, after: GoTime | None
    ) -> list[Session]:
        """Every session of one user, unordered; LEGACY/TRANSITION add the legacy ones
        (which win on a duplicate id). One undecodable session hides only itself."""
        hashidx = await self._list_layout(HASHIDX, user, only_meta, limit, after)
        if not self._legacy_mode:
            return hashidx
        by_id = {s.id: s for s in hashidx}
        for session in await self._list_layout(ZSET, user, only_meta, limit, after):
            by_id[session.id] = session
        return list(by_id.values())

    async def _session_ids(self, route: str, user: UserKey) -> list[str]:
        """A user's session ids in one layout (the index, a SCAN, or the legacy hash)."""
        if route == ZSET:
            return list(await self.store.legacy.session_docs(user))
        if self.settings.enable_user_session_index:
            return await self.store.hashidx.session_ids_from_index(user)
        return await self.store.hashidx.scan_session_ids(user)

    async def _list_layout(
        self, route: str, user: UserKey, only_meta: bool, limit: int, after: GoTime | None
    ) -> list[Session]:
        if only_meta:
            return await self._list_metas(route, user)
        ids = await self._session_ids(route, user)
        if not ids:
            return []
        engine = self.store.engines[route]
        keys = [Key(user.app_name, user.user_id, sid) for sid in ids]
        flags = "t" if only_meta else "et"
        calls = [engine.load_call(k, limit, _ns(after), flags) for k in keys]
        calls += self.scope_calls(keys[0], refresh=route == HASHIDX)
        replies = await self.store.scripts.run_pipeline(self.store.client, calls,
                                                        raise_errors=False)
        app_state, user_state = self.parse_scopes(keys[0], _raised(replies[len(keys):]))
        sessions: list[Session] = []
        stale: list[str] = []
        names_of: dict[str, list[str]] = {}
        decode = meta_from_doc if route == ZSET else decode_meta
        for key, reply in zip(keys, replies[: len(keys)], strict=True):
            if _unreadable(reply, key):
                continue  # a key of this session has the wrong type: it hides only itself
            loaded = engine.parse_load(reply)
            if loaded.meta is None:
                stale.append(key.session_id)  # deleted or expired since the id was listed
                continue
            try:
                meta = decode(loaded.meta, key)
            except DecodeError:
                continue  # one bad document hides only itself (Go hides the whole list)
            events: list[Event] = []
            if not only_meta:
                events = await self._window(route, key, loaded, after, False)
                names_of[key.session_id] = track_names(meta.state or {}, loaded.track_names)
            sessions.append(build_session(key, meta, events, user_state, app_state,
                                          storage=route))
        if route == HASHIDX and self.settings.enable_user_session_index:
            await self.store.hashidx.prune_index(user, stale)
        await self._attach_tracks(route, sessions, names_of, limit, after)
        return sessions

    async def _list_metas(self, route: str, user: UserKey) -> list[Session]:
        """Sessions without events. With the session index, one round trip for up to
        :data:`INDEX_PAGE` sessions: a script reading the index and every meta (a user's
        HashIdx keys share one slot) beside the state scopes; a larger index is paged, then
        its metas read in one MGET. Legacy: the documents and the scopes in one pipeline."""
        scopes = self.scope_calls(user, refresh=route == HASHIDX)
        hashidx = self.store.hashidx
        raws: list[Any] = []
        if route == ZSET:
            first, *scope_replies = await self._pipeline(
                [("cmd", "HGETALL", self.keys.legacy_sessions(user)), *scopes])
            docs = hash_reply(first)
            ids, raws = list(docs), list(docs.values())
        elif self.settings.enable_user_session_index:
            first, *scope_replies = await self._pipeline([hashidx.list_metas_call(user), *scopes])
            listed = hashidx.parse_list_metas(first)
            if listed is not None:
                ids, raws = listed
            else:
                ids = await self._paged_index(user)
        else:
            ids, scope_replies = await asyncio.gather(
                hashidx.scan_session_ids(user), self._pipeline(scopes))
        if not ids:
            return []
        keys = [Key(user.app_name, user.user_id, sid) for sid in ids]
        if route == HASHIDX and len(raws) != len(ids):  # ids found without their metas
            raws = (await self._pipeline([("cmd", "MGET", *map(self.keys.meta, keys))]))[0]
        app_state, user_state = self.parse_scopes(user, scope_replies)
        decode = meta_from_doc if route == ZSET else decode_meta
        sessions: list[Session] = []
        stale: list[str] = []
        for key, raw in zip(keys, raws, strict=True):
            if raw is None:
                stale.append(key.session_id)  # deleted or expired since the id was listed
                continue
            try:
                meta = decode(raw, key)
            except DecodeError:
                continue  # one bad document hides only itself (Go hides the whole list)
            sessions.append(build_session(key, meta, [], user_state, app_state, storage=route))
        if route == HASHIDX and self.settings.enable_user_session_index:
            await hashidx.prune_index(user, stale)
        return sessions

    async def _paged_index(self, user: UserKey) -> list[str]:
        """Every id of a user's session index, read a page (HSCAN) at a time."""
        hashidx = self.store.hashidx
        cursor, found = 0, []
        while True:
            (reply,) = await self._pipeline([hashidx.index_page_call(user, cursor)])
            cursor, more = hashidx.parse_index_page(reply)
            found += more
            if not cursor:
                return list(dict.fromkeys(found))

    async def _attach_tracks(
        self, route: str, sessions: list[Session], names_of: dict[str, list[str]], limit: int,
        after: GoTime | None,
    ) -> None:
        todo = [s for s in sessions if names_of.get(s.id)]
        if not todo:
            return
        engine = self.store.engines[route]
        calls = [engine.load_tracks_call(s.key, names_of[s.id], limit, _ns(after)) for s in todo]
        replies = await self.store.scripts.run_pipeline(self.store.client, calls,
                                                        raise_errors=False)
        for session, reply in zip(todo, replies, strict=True):
            if not _unreadable(reply, session.key):
                session.tracks = decode_tracks(names_of[session.id], reply, session.key)

    async def list_app_sessions(self, app: str) -> list[Session]:
        """Every session of one app, all users (SCAN), meta and merged state, no events;
        newest ``updated_at`` first. LEGACY/TRANSITION add the legacy ones (which win)."""
        hashidx_keys = await self.store.hashidx.scan_app_keys(app)
        legacy_users = await self.store.legacy.scan_users(app) if self._legacy_mode else []
        users = sorted({k.user_id for k in hashidx_keys} | {u.user_id for u in legacy_users})
        calls: list[tuple[Any, ...]] = [("cmd", "GET", self.keys.meta(k)) for k in hashidx_keys]
        calls += [("cmd", "HGETALL", self.keys.legacy_sessions(u)) for u in legacy_users]
        mode = self.settings.compat_mode
        per_user = [user_state_read_keys(self.keys, mode, UserKey(app, u)) for u in users]
        calls += [("cmd", "HGETALL", k) for keys in per_user for k in keys]
        calls.append(("cmd", "HGETALL", self.keys.app_state(app)))
        replies = iter(await self.store.scripts.run_pipeline(self.store.client, calls,
                                                             raise_errors=False))
        metas = [next(replies) for _ in hashidx_keys]
        legacy_docs = [_hash_or_none(next(replies), u) for u in legacy_users]
        user_states: dict[str, dict[str, bytes] | None] = {}
        for u, keys in zip(users, per_user, strict=True):
            merged: dict[str, bytes] | None = {}
            for _ in keys:
                part = _hash_or_none(next(replies), u)
                merged = None if part is None or merged is None else {**merged, **part}
            user_states[u] = merged
        app_state = hash_reply(_raised([next(replies)])[0])
        found: dict[Key, Session] = {}

        def add(key: Key, raw: bytes, route: str) -> None:
            user_state = user_states[key.user_id]
            if user_state is None or _unreadable(raw, key):
                return  # a key of this session (or its user's state) has the wrong type
            try:
                meta = meta_from_doc(raw, key) if route == ZSET else decode_meta(raw, key)
            except DecodeError:
                return
            found[key] = build_session(key, meta, [], user_state, app_state, storage=route)

        for key, raw in zip(hashidx_keys, metas, strict=True):
            if raw is not None:
                add(key, raw, HASHIDX)
        for user, docs in zip(legacy_users, legacy_docs, strict=True):
            for sid, raw in (docs or {}).items():
                add(Key(app, user.user_id, sid), raw, ZSET)
        sessions = list(found.values())
        sessions.sort(key=newest_first, reverse=True)
        return sessions

    # -- tracks -------------------------------------------------------------------------
    async def track_events(
        self, key: Key, track: str, limit: int, after: GoTime | None
    ) -> TrackEvents:
        """Events of one track, oldest first; read even without a session (as the reference).

        In LEGACY/TRANSITION: the legacy layout if the session is there; HashIdx if it is
        there; else the legacy layout when it holds events; else HashIdx.
        """
        hashidx_call = self.store.hashidx.load_tracks_call(key, [track], limit, _ns(after))
        if not self._legacy_mode:
            (reply,) = await self._pipeline([hashidx_call])
            chosen = (decode_tracks([track], reply, key) or {}).get(track)
            return chosen if chosen is not None else TrackEvents(track=track, events=[])
        mode = self.settings.compat_mode
        calls = presence_calls(self.keys, key, mode)
        calls.append(self.store.legacy.load_tracks_call(key, [track], limit, _ns(after)))
        calls.append(hashidx_call)
        replies = await self._pipeline(calls)
        presence = parse_presence(mode, replies[:2])
        from_legacy = (decode_tracks([track], replies[2], key) or {}).get(track)
        from_hashidx = (decode_tracks([track], replies[3], key) or {}).get(track)
        if presence.zset or (not presence.hashidx and from_legacy is not None):
            chosen = from_legacy
        else:
            chosen = from_hashidx
        return chosen if chosen is not None else TrackEvents(track=track, events=[])

    # -- state scopes -------------------------------------------------------------------
    def scope_calls(self, key: Key | UserKey, *, refresh: bool) -> list[tuple[Any, ...]]:
        """Pipeline calls reading the app state and the mode's user-state keys, optionally
        refreshing their TTLs; parse the replies with :meth:`parse_scopes`."""
        s = self.settings
        app_key = self.keys.app_state(key.app_name)
        user_keys = user_state_read_keys(self.keys, s.compat_mode, key)
        calls: list[tuple[Any, ...]] = [("cmd", "HGETALL", app_key)]
        calls += [("cmd", "HGETALL", k) for k in user_keys]
        if refresh and s.app_state_ttl_s > 0:
            calls.append(("cmd", "EXPIRE", app_key, s.app_state_ttl_s))
        if refresh and s.user_state_ttl_s > 0:
            calls += [("cmd", "EXPIRE", k, s.user_state_ttl_s) for k in user_keys]
        return calls

    def parse_scopes(
        self, key: Key | UserKey, replies: list[Any]
    ) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """(app state, user state merged, the winning key last) from :meth:`scope_calls`."""
        count = len(user_state_read_keys(self.keys, self.settings.compat_mode, key))
        user: dict[str, bytes] = {}
        for reply in replies[1 : 1 + count]:
            user.update(hash_reply(reply))
        return hash_reply(replies[0]), user

    async def list_user_states(self, user: UserKey) -> dict[str, bytes]:
        """The user state: in LEGACY/TRANSITION the legacy fields overlaid by the HashIdx ones."""
        keys = user_state_read_keys(self.keys, self.settings.compat_mode, user)
        merged: dict[str, bytes] = {}
        for reply in await self._pipeline([("cmd", "HGETALL", k) for k in keys]):
            merged.update(hash_reply(reply))
        return merged

    async def list_app_states(self, app: str) -> dict[str, bytes]:
        """Every app-state field (empty when none)."""
        return decode_hash(await self.store.client.hgetall(self.keys.app_state(app)))

    # -- summaries ----------------------------------------------------------------------
    async def summary_text(self, session: Session, filter_key: str) -> str | None:
        """The stored summary text of ``filter_key`` (else the full-session one) by the
        reference pick rule, in the layout the session lives in; None when there is none.

        Raises:
            DecodeError: the stored summary map is not valid JSON.
        """
        route = await self.route_of(session)
        if self._count is not None:
            self._count("get_session_summary_text", route)
        raw = await self.store.engines[route].load_summaries(session.key)
        if raw is None:
            return None
        return pick_summary(decode_summary_map(raw) or {}, filter_key, session.created_at)
