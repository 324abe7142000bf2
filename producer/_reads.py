"""Read orchestration of SessionService: which commands, pipelined how."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessionstreams.common.compat import user_state_read_keys, uses_legacy
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.hashidx import HashIdxEngine
from sessionstreams.common.models import Key, Session, SessionMeta, TrackEvents, UserKey
from sessionstreams.common.readpath import (
    attach_summaries,
    build_session,
    decode_events,
    decode_meta,
    decode_tracks,
    track_names,
    window_events,
)
from sessionstreams.common.state import decode_hash
from sessionstreams.producer import _legacy_reads

if TYPE_CHECKING:
    from sessionstreams.producer.service import SessionService

__all__ = ["decode_events", "track_names"]


def _ns(after: GoTime | None) -> int | None:
    return None if after is None or after.is_zero else after.unix_ns


def session_from_meta(
    key: Key, meta: SessionMeta, user_state: dict[str, bytes], app_state: dict[str, bytes]
) -> Session:
    """A Session built from its meta alone (no events)."""
    return build_session(key, meta, [], user_state, app_state)


async def load_scopes(
    svc: SessionService, key: Key, *, refresh: bool
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """App and user state of the session's app and user; optionally refresh their TTLs."""
    calls = scope_calls(svc, key, refresh=refresh)
    return parse_scopes(svc, key, await svc.scripts.run_pipeline(svc.client, calls))


def scope_calls(svc: SessionService, key: Key, *, refresh: bool) -> list[tuple[Any, ...]]:
    """Pipeline calls reading app state and the mode's user-state keys
    (sessionstreams.common.compat)."""
    app_key = svc.keys.app_state(key.app_name)
    user_keys = user_state_read_keys(svc.keys, svc.settings.compat_mode, key)
    calls: list[tuple[Any, ...]] = [("cmd", "HGETALL", app_key)]
    calls += [("cmd", "HGETALL", k) for k in user_keys]
    s = svc.settings
    if refresh and s.app_state_ttl_s > 0:
        calls.append(("cmd", "EXPIRE", app_key, s.app_state_ttl_s))
    if refresh and s.user_state_ttl_s > 0:
        calls += [("cmd", "EXPIRE", k, s.user_state_ttl_s) for k in user_keys]
    return calls


def parse_scopes(
    svc: SessionService, key: Key, replies: list[Any]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(app state, user state merged, the winning key last) from :func:`scope_calls` replies."""
    count = len(user_state_read_keys(svc.keys, svc.settings.compat_mode, key))
    user: dict[str, bytes] = {}
    for reply in replies[1 : 1 + count]:
        user.update(_hash(reply))
    return _hash(replies[0]), user


def _hash(reply: Any) -> dict[str, bytes]:
    if isinstance(reply, list):  # RESP2 flat list from execute_command without a callback
        reply = {reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}
    return decode_hash(reply)


hash_reply = _hash


async def get_session(
    svc: SessionService, key: Key, limit: int, after: GoTime | None, *, exact: bool = False
) -> Session | None:
    """Load one HashIdx session: one pipeline, plus one call per extra need (tracks).

    ``exact`` returns the stored window as it is (no reference user-message filtering).
    LEGACY and TRANSITION modes read both layouts (:mod:`sessionstreams.producer._legacy_reads`).
    """
    if uses_legacy(svc.settings.compat_mode):
        return await _legacy_reads.get_session(svc, key, limit, after, exact=exact)
    engine: HashIdxEngine = svc.engine
    call = engine.load_call(key, limit, _ns(after), "estuax" if exact else "estua")
    if engine.single_node:
        loaded = engine.parse_load(await svc.scripts.call(svc.client, *call[1:]))
        app_state = loaded.app_state
    else:
        app_call = ("cmd", "HGETALL", svc.keys.app_state(key.app_name))
        raw_load, raw_app = await svc.scripts.run_pipeline(svc.client, [call, app_call])
        loaded, app_state = engine.parse_load(raw_load), _hash(raw_app)
    if loaded.meta is None:
        return None
    meta = decode_meta(loaded.meta, key)
    if exact:
        events = decode_events(loaded.events, key)
    else:
        events, lookup = window_events(loaded, key, after)
        if lookup:
            found = await engine.find_user_before(key, events[0].id)
            events = decode_events([found], key) + events if found else []
    session = build_session(key, meta, events, loaded.user_state, app_state)
    attach_summaries(session, loaded.summary)
    names = track_names(meta.state or {}, loaded.track_names)
    if names:
        (reply,) = await svc.scripts.run_pipeline(
            svc.client, [engine.load_tracks_call(key, names, limit, _ns(after))]
        )
        session.tracks = decode_tracks(names, reply, key)
    return session


async def list_sessions(
    svc: SessionService, user: UserKey, only_meta: bool, limit: int, after: GoTime | None
) -> list[Session]:
    """Every session of one user; LEGACY/TRANSITION add the legacy ones (which win)."""
    if uses_legacy(svc.settings.compat_mode):
        return await _legacy_reads.list_sessions(svc, user, only_meta, limit, after)
    return await list_hashidx_sessions(svc, user, only_meta, limit, after)


async def list_hashidx_sessions(
    svc: SessionService, user: UserKey, only_meta: bool, limit: int, after: GoTime | None
) -> list[Session]:
    """Every HashIdx session of one user (index or SCAN), loaded in pipelines."""
    engine = svc.engine
    if svc.settings.enable_user_session_index:
        ids = await engine.session_ids_from_index(user)
    else:
        ids = await engine.scan_session_ids(user)
    if not ids:
        return []
    keys = [Key(user.app_name, user.user_id, sid) for sid in ids]
    flags = "t" if only_meta else "et"
    calls = [engine.load_call(k, limit, _ns(after), flags) for k in keys]
    replies = await svc.scripts.run_pipeline(svc.client, calls)
    app_state, user_state = await load_scopes(svc, keys[0], refresh=True)
    sessions: list[Session] = []
    stale: list[str] = []
    names_of: dict[str, list[str]] = {}
    for key, reply in zip(keys, replies, strict=True):
        loaded = engine.parse_load(reply)
        if loaded.meta is None:
            stale.append(key.session_id)
            continue
        try:
            meta = decode_meta(loaded.meta, key)
        except Exception:
            continue
        events: list[Any] = []
        if not only_meta:
            events, lookup = window_events(loaded, key, after)
            if lookup:
                found = await engine.find_user_before(key, events[0].id)
                events = decode_events([found], key) + events if found else []
            names_of[key.session_id] = track_names(meta.state or {}, loaded.track_names)
        sessions.append(build_session(key, meta, events, user_state, app_state))
    if svc.settings.enable_user_session_index:
        await engine.prune_index(user, stale)
    await _attach_tracks(svc, sessions, names_of, limit, after)
    return sessions


async def _attach_tracks(
    svc: SessionService,
    sessions: list[Session],
    names_of: dict[str, list[str]],
    limit: int,
    after: GoTime | None,
) -> None:
    todo = [s for s in sessions if names_of.get(s.id)]
    if not todo:
        return
    calls = [svc.engine.load_tracks_call(s.key, names_of[s.id], limit, _ns(after)) for s in todo]
    replies = await svc.scripts.run_pipeline(svc.client, calls)
    for session, reply in zip(todo, replies, strict=True):
        session.tracks = decode_tracks(names_of[session.id], reply, session.key)


async def list_app_sessions(svc: SessionService, app: str) -> list[Session]:
    """Every session of one app (SCAN); LEGACY/TRANSITION add the legacy ones (which win)."""
    if uses_legacy(svc.settings.compat_mode):
        return await _legacy_reads.list_app_sessions(svc, app)
    return await list_hashidx_app_sessions(svc, app)


async def list_hashidx_app_sessions(svc: SessionService, app: str) -> list[Session]:
    """Every HashIdx session of one app (SCAN), with meta and merged state, no events."""
    keys = await svc.engine.scan_app_keys(app)
    if not keys:
        return []
    users = sorted({k.user_id for k in keys})
    calls: list[tuple[Any, ...]] = [("cmd", "GET", svc.keys.meta(k)) for k in keys]
    calls += [("cmd", "HGETALL", svc.keys.user_state(UserKey(app, u))) for u in users]
    calls.append(("cmd", "HGETALL", svc.keys.app_state(app)))
    replies = await svc.scripts.run_pipeline(svc.client, calls)
    metas, rest = replies[: len(keys)], replies[len(keys):]
    user_states = {u: _hash(r) for u, r in zip(users, rest[:-1], strict=True)}
    app_state = _hash(rest[-1])
    sessions: list[Session] = []
    for key, raw in zip(keys, metas, strict=True):
        if raw is None:
            continue
        try:
            meta = decode_meta(raw, key)
        except Exception:
            continue
        sessions.append(build_session(key, meta, [], user_states[key.user_id], app_state))
    sessions.sort(key=lambda s: (s.updated_at, s.id), reverse=True)
    return sessions


async def track_events(
    svc: SessionService, key: Key, track: str, limit: int, after: GoTime | None
) -> TrackEvents:
    """Events of one track of one session (reference §5 rule in LEGACY/TRANSITION)."""
    if uses_legacy(svc.settings.compat_mode):
        return await _legacy_reads.track_events(svc, key, track, limit, after)
    (reply,) = await svc.scripts.run_pipeline(
        svc.client, [svc.engine.load_tracks_call(key, [track], limit, _ns(after))]
    )
    tracks = decode_tracks([track], reply, key) or {}
    bundle = tracks.get(track)
    return bundle if bundle is not None else TrackEvents(track=track, events=[])
