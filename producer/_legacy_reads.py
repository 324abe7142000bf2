"""Read orchestration in LEGACY and TRANSITION modes: both layouts, the legacy copy first.

Reference §5: a session present in the legacy layout is read from there (tag ``zset``), else
from HashIdx (tag ``hashidx``). Each read is one pipeline covering both layouts, so a HashIdx
session costs no extra round trip for the existence check. The user state merged into every
session is the legacy user state overlaid by the HashIdx one (see README, compat modes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessionstreams.common.compat import (
    HASHIDX,
    ZSET,
    load_both_call,
    parse_load_both,
    parse_presence,
    presence_calls,
    user_state_read_keys,
)
from sessionstreams.common.errors import DecodeError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.hashidx import LoadResult
from sessionstreams.common.models import (
    Key,
    Session,
    SessionMeta,
    SessionStateDoc,
    TrackEvents,
    UserKey,
)
from sessionstreams.common.readpath import (
    attach_summaries,
    build_session,
    decode_events,
    decode_meta,
    decode_tracks,
    track_names,
    window_events,
)
from sessionstreams.producer import _reads

if TYPE_CHECKING:
    from sessionstreams.producer.service import SessionService


def _ns(after: GoTime | None) -> int | None:
    return None if after is None or after.is_zero else after.unix_ns


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


async def get_session(
    svc: SessionService, key: Key, limit: int, after: GoTime | None, *, exact: bool = False
) -> Session | None:
    """Read a session from the legacy layout if it is there, else from HashIdx.

    One script on a single node; on Cluster one pipeline of the two layouts' load scripts.
    """
    if svc.engine.single_node:
        call = load_both_call(svc.keys, key, limit, _ns(after), exact)
        found, loaded = parse_load_both(await svc.scripts.call(svc.client, *call[1:]))
        if found is None or loaded.meta is None:
            return None
        route: str = found
    else:
        route, loaded = await _load_pipelined(svc, key, limit, after, exact)
        if loaded.meta is None:
            return None
    meta = meta_from_doc(loaded.meta, key) if route == ZSET else decode_meta(loaded.meta, key)
    events = await _window(svc, route, key, loaded, after, exact)
    session = build_session(key, meta, events, loaded.user_state, loaded.app_state,
                            storage=route)
    attach_summaries(session, loaded.summary)
    names = track_names(meta.state or {}, loaded.track_names)
    if names:
        engine = svc._engines.legacy if route == ZSET else svc._engines.hashidx
        call = engine.load_tracks_call(key, names, limit, _ns(after))
        (reply,) = await svc.scripts.run_pipeline(svc.client, [call])
        session.tracks = decode_tracks(names, reply, key)
    return session


async def _load_pipelined(
    svc: SessionService, key: Key, limit: int, after: GoTime | None, exact: bool
) -> tuple[str, LoadResult]:
    """Both layouts' loads in one pipeline (Cluster); the legacy one wins when present."""
    legacy, hashidx = svc._engines.legacy, svc._engines.hashidx
    x = "x" if exact else ""
    calls = [
        legacy.load_call(key, limit, _ns(after), "estua" + x),
        hashidx.load_call(key, limit, _ns(after), "est" + x),
        ("cmd", "HGETALL", svc.keys.user_state(key)),
    ]
    raw_legacy, raw_hashidx, raw_user = await svc.scripts.run_pipeline(svc.client, calls)
    from_legacy = legacy.parse_load(raw_legacy)
    user_state = {**from_legacy.user_state, **_reads.hash_reply(raw_user)}
    if from_legacy.meta is not None:
        loaded, route = from_legacy, ZSET
    else:
        loaded, route = hashidx.parse_load(raw_hashidx), HASHIDX
    loaded.user_state, loaded.app_state = user_state, from_legacy.app_state
    return route, loaded


async def _window(
    svc: SessionService, route: str, key: Key, loaded: LoadResult, after: GoTime | None,
    exact: bool,
) -> list[Any]:
    """The events of a load, with the reference filtering unless ``exact``."""
    if exact:
        return decode_events(loaded.events, key)
    events, lookup = window_events(loaded, key, after)
    if not lookup:
        return events
    if route == ZSET:
        found = await svc._engines.legacy.find_user_before(key, loaded.events[0])
    else:
        found = await svc._engines.hashidx.find_user_before(key, events[0].id)
    return decode_events([found], key) + events if found else []


async def list_sessions(
    svc: SessionService, user: UserKey, only_meta: bool, limit: int, after: GoTime | None
) -> list[Session]:
    """HashIdx sessions plus legacy ones; the legacy copy wins on a duplicate id."""
    hashidx = await _reads.list_hashidx_sessions(svc, user, only_meta, limit, after)
    by_id = {s.id: s for s in hashidx}
    for session in await _list_legacy(svc, user, only_meta, limit, after):
        by_id[session.id] = session
    return list(by_id.values())


async def _list_legacy(
    svc: SessionService, user: UserKey, only_meta: bool, limit: int, after: GoTime | None
) -> list[Session]:
    legacy = svc._engines.legacy
    docs = await legacy.session_docs(user)
    if not docs:
        return []
    keys = [Key(user.app_name, user.user_id, sid) for sid in docs]
    flags = "t" if only_meta else "et"
    calls = [legacy.load_call(k, limit, _ns(after), flags) for k in keys]
    calls += _reads.scope_calls(svc, keys[0], refresh=False)
    replies = await svc.scripts.run_pipeline(svc.client, calls)
    app_state, user_state = _reads.parse_scopes(svc, keys[0], replies[len(keys):])
    sessions: list[Session] = []
    names_of: dict[str, list[str]] = {}
    for key, reply in zip(keys, replies[: len(keys)], strict=True):
        loaded = legacy.parse_load(reply)
        if loaded.meta is None:
            continue  # deleted since the HGETALL
        try:
            meta = meta_from_doc(loaded.meta, key)
        except DecodeError:
            continue  # one bad document hides only itself (Go hides the whole list)
        events: list[Any] = []
        if not only_meta:
            events = await _window(svc, ZSET, key, loaded, after, False)
            names_of[key.session_id] = track_names(meta.state or {}, loaded.track_names)
        sessions.append(build_session(key, meta, events, user_state, app_state, storage=ZSET))
    todo = [s for s in sessions if names_of.get(s.id)]
    if todo:
        track_calls = [legacy.load_tracks_call(s.key, names_of[s.id], limit, _ns(after))
                       for s in todo]
        for session, reply in zip(
            todo, await svc.scripts.run_pipeline(svc.client, track_calls), strict=True
        ):
            session.tracks = decode_tracks(names_of[session.id], reply, session.key)
    return sessions


async def track_events(
    svc: SessionService, key: Key, track: str, limit: int, after: GoTime | None
) -> TrackEvents:
    """Legacy if the session is there; HashIdx if it is there; else legacy when it holds
    events; else HashIdx (read even without a session, as the reference)."""
    mode = svc.settings.compat_mode
    calls = presence_calls(svc.keys, key, mode)
    calls.append(svc._engines.legacy.load_tracks_call(key, [track], limit, _ns(after)))
    calls.append(svc._engines.hashidx.load_tracks_call(key, [track], limit, _ns(after)))
    replies = await svc.scripts.run_pipeline(svc.client, calls)
    presence = parse_presence(mode, replies[:2])
    from_legacy = (decode_tracks([track], replies[2], key) or {}).get(track)
    from_hashidx = (decode_tracks([track], replies[3], key) or {}).get(track)
    if presence.zset or (not presence.hashidx and from_legacy is not None):
        chosen = from_legacy
    else:
        chosen = from_hashidx
    return chosen if chosen is not None else TrackEvents(track=track, events=[])


async def list_app_sessions(svc: SessionService, app: str) -> list[Session]:
    """Every session of one app in both layouts (SCAN), meta and state only; legacy wins."""
    hashidx_keys = await svc.engine.scan_app_keys(app)
    legacy_users = await svc._engines.legacy.scan_users(app)
    users = sorted({k.user_id for k in hashidx_keys} | {u.user_id for u in legacy_users})
    calls: list[tuple[Any, ...]] = [("cmd", "GET", svc.keys.meta(k)) for k in hashidx_keys]
    calls += [("cmd", "HGETALL", svc.keys.legacy_sessions(u)) for u in legacy_users]
    mode = svc.settings.compat_mode
    per_user = [user_state_read_keys(svc.keys, mode, UserKey(app, u)) for u in users]
    calls += [("cmd", "HGETALL", k) for keys in per_user for k in keys]
    calls.append(("cmd", "HGETALL", svc.keys.app_state(app)))
    replies = iter(await svc.scripts.run_pipeline(svc.client, calls))
    metas = [next(replies) for _ in hashidx_keys]
    legacy_docs = [_reads.hash_reply(next(replies)) for _ in legacy_users]
    user_states: dict[str, dict[str, bytes]] = {}
    for u, keys in zip(users, per_user, strict=True):
        merged: dict[str, bytes] = {}
        for _ in keys:
            merged.update(_reads.hash_reply(next(replies)))
        user_states[u] = merged
    app_state = _reads.hash_reply(next(replies))
    found: dict[Key, Session] = {}
    for key, raw in zip(hashidx_keys, metas, strict=True):
        if raw is not None:
            _add(found, key, raw, decode_meta, HASHIDX, user_states, app_state)
    for user, docs in zip(legacy_users, legacy_docs, strict=True):
        for sid, raw in docs.items():
            key = Key(app, user.user_id, sid)
            _add(found, key, raw, meta_from_doc, ZSET, user_states, app_state)
    sessions = list(found.values())
    sessions.sort(key=lambda s: (s.updated_at, s.id), reverse=True)
    return sessions


def _add(
    found: dict[Key, Session], key: Key, raw: bytes, decode: Any, route: str,
    user_states: dict[str, dict[str, bytes]], app_state: dict[str, bytes],
) -> None:
    try:
        meta = decode(raw, key)
    except DecodeError:
        return
    found[key] = build_session(key, meta, [], user_states[key.user_id], app_state, storage=route)
