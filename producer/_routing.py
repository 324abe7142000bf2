"""Write routing of SessionService across the two layouts (reference §5,
sessionstreams.common.compat).

Creation, deletion, trimming and the user-state operations, per compat mode. The rules
themselves (which engine, which keys) live in :mod:`sessionstreams.common.compat`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sessionstreams.common.compat import (
    HASHIDX,
    ZSET,
    create_route,
    tag_route,
    user_state_delete_keys,
    user_state_read_keys,
    user_state_write_keys,
    uses_legacy,
)
from sessionstreams.common.errors import SessionNotFoundError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Key,
    Session,
    SessionIndexEntry,
    SessionMeta,
    SessionStateDoc,
    UserKey,
)
from sessionstreams.common.readpath import STORAGE_TYPE, build_session, track_names
from sessionstreams.common.state import TEMP_PREFIX, StateMap, split_scopes
from sessionstreams.common.tracing import annotate
from sessionstreams.producer import _reads

if TYPE_CHECKING:
    from sessionstreams.producer.service import SessionService

#: Lifetime of the create lock (a crashed holder delays other creators of the id this long).
_CREATE_LOCK_MS = 5000


async def write_route(svc: SessionService, session_or_key: Session | Key) -> str:
    """The route of a write to an existing session (reference §5 matrix): the session's tag
    when usable, else where the session lives; ``svc._engines[route]`` is its engine.

    Without a usable tag, LEGACY and TRANSITION modes look for the legacy copy (one HEXISTS);
    a session found nowhere is routed to HashIdx, whose script answers ``session_gone``.
    """
    mode = svc.settings.compat_mode
    if isinstance(session_or_key, Session):
        route = tag_route(mode, session_or_key.service_meta.get(STORAGE_TYPE))
        if route is not None:
            return route
        key = session_or_key.key
    else:
        key = session_or_key
    if not uses_legacy(mode):
        return HASHIDX
    found = await svc.client.hexists(svc.keys.legacy_sessions(key), key.session_id)
    return ZSET if found else HASHIDX


async def create_session(
    svc: SessionService, key: Key, values: StateMap, given_id: bool
) -> Session:
    """Create in the mode's target engine; an existing session (legacy first) is returned.

    In LEGACY/TRANSITION a given id is created under a short lock, so nodes of both modes
    creating one id at once end with one session (the check and the create of two layouts
    cannot be one script: they live in different slots).
    """
    if not (given_id and uses_legacy(svc.settings.compat_mode)):
        return await _create(svc, key, values, given_id)
    lock_key = svc.keys.create_lock(key)
    token = await _lock(svc, lock_key)
    try:
        existing = await svc.get_session(key)
        if existing is not None:
            annotate(existing=True)
            return existing
        return await _create(svc, key, values, given_id)
    finally:
        if token:
            await svc.scripts.call(svc.client, "lease_release", [lock_key], [token])


async def _lock(svc: SessionService, lock_key: str) -> str:
    """Take the create lock; '' when its holder did not release it in time (then proceed)."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + _CREATE_LOCK_MS / 1000
    delay = 0.002
    while not await svc.client.set(lock_key, token, nx=True, px=_CREATE_LOCK_MS):
        if time.monotonic() >= deadline:
            return ""
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return token


async def _create(svc: SessionService, key: Key, values: StateMap, given_id: bool) -> Session:
    mode = svc.settings.compat_mode
    scoped = split_scopes(values)
    now = GoTime.now()
    meta = SessionMeta(
        id=key.session_id, app_name=key.app_name, user_id=key.user_id,
        state=scoped.session, generation=str(uuid.uuid4()), created_at=now, updated_at=now,
    )
    route = create_route(mode)
    if route == ZSET:
        doc = SessionStateDoc(id=meta.id, state=meta.state, generation=meta.generation,
                              created_at=now, updated_at=now)
        created = await svc._engines.legacy.create(key, doc.to_json(), svc.settings.session_ttl_ms)
    else:
        index = (SessionIndexEntry(created_at=now).to_json()
                 if svc.settings.enable_user_session_index else None)
        created = await svc._engines.hashidx.create(
            key, meta.to_json(), svc.settings.session_ttl_ms, index
        )
    if not created:
        existing = await svc.get_session(key)
        if existing is not None:
            annotate(existing=True)
            return existing
        raise SessionNotFoundError(f"session {key} vanished while being created")
    await svc._write_scopes(key, scoped.app, scoped.user)
    # A compat-mode HashIdx create also asks whether a legacy copy appeared meanwhile (a
    # TRANSITION node creating the same id): readers prefer that copy, so it is returned.
    probe = route == HASHIDX and given_id and uses_legacy(mode)
    calls = _reads.scope_calls(svc, key, refresh=True)
    if probe:
        calls.append(("cmd", "HEXISTS", svc.keys.legacy_sessions(key), key.session_id))
    replies = await svc.scripts.run_pipeline(svc.client, calls)
    app_state, user_state = _reads.parse_scopes(svc, key, replies)
    if probe and replies[-1]:
        existing = await svc.get_session(key)
        if existing is not None:
            return existing
    session = build_session(key, meta, [], user_state, app_state, storage=route)
    session.state.update({k: v for k, v in values.items() if k.startswith(TEMP_PREFIX)})
    return session


async def delete_session(svc: SessionService, key: Key) -> None:
    """Delete the HashIdx copy, then (LEGACY/TRANSITION) the legacy copy; both always run."""
    steps = [_delete_hashidx]
    if uses_legacy(svc.settings.compat_mode):
        steps.append(_delete_legacy)
    first: Exception | None = None
    for step in steps:
        try:
            await step(svc, key)
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first


async def _delete_hashidx(svc: SessionService, key: Key) -> None:
    engine = svc._engines.hashidx
    meta_raw, stored = await engine.track_names_for_delete(key)
    names = _names(stored, meta_raw, SessionMeta)
    await engine.delete(key, names)


async def _delete_legacy(svc: SessionService, key: Key) -> None:
    engine = svc._engines.legacy
    doc_raw, stored = await engine.read_for_delete(key)
    await engine.delete(key, _names(stored, doc_raw, SessionStateDoc))


def _names(stored: Sequence[bytes], raw: bytes | None, doc_type: Any) -> list[str]:
    """Track names: the stored name SET plus the document's ``tracks`` (if it decodes)."""
    names = {n.decode("utf-8", "replace") for n in stored}
    if raw is not None:
        with contextlib.suppress(Exception):  # a corrupt document still gets deleted
            names.update(track_names(doc_type.from_json(raw).state or {}))
    return sorted(names)


async def trim(svc: SessionService, key: Key, count: int, rid: str) -> tuple[str, list[bytes]]:
    """Trim where the session lives; ``session_gone`` (nothing trimmed) when it is nowhere."""
    route = await write_route(svc, key)
    if route == HASHIDX and not await svc.client.exists(svc.keys.meta(key)):
        return "session_gone", []
    engine = svc._engines[route]
    return await engine.trim(key, rid=rid, count=count, ttl_ms=svc.settings.session_ttl_ms)


# -- user state ---------------------------------------------------------------------------
async def write_user_state(
    svc: SessionService, user: UserKey | Key, pairs: list[tuple[str, bytes]]
) -> None:
    """Set user-state fields in the mode's keys, HashIdx first (TRANSITION: then legacy)."""
    ttl_ms = svc.settings.user_state_ttl_s * 1000
    for hash_key in user_state_write_keys(svc.keys, svc.settings.compat_mode, user):
        await svc._engines.hashidx.set_hash(hash_key, pairs, ttl_ms)


async def list_user_states(svc: SessionService, user: UserKey) -> dict[str, bytes]:
    """The user state: in LEGACY/TRANSITION the legacy fields overlaid by the HashIdx ones."""
    calls = [("cmd", "HGETALL", k)
             for k in user_state_read_keys(svc.keys, svc.settings.compat_mode, user)]
    merged: dict[str, bytes] = {}
    for reply in await svc.scripts.run_pipeline(svc.client, calls):
        merged.update(_reads.hash_reply(reply))
    return merged


async def delete_user_state(svc: SessionService, user: UserKey, field: str) -> None:
    """Delete one field from every user-state key the mode reads."""
    calls = [("cmd", "HDEL", k, field)
             for k in user_state_delete_keys(svc.keys, svc.settings.compat_mode, user)]
    await svc.scripts.run_pipeline(svc.client, calls)
