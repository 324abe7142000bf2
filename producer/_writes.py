"""SessionWriter: the direct writes of SessionService across the two layouts.

Creation, deletion, trimming and the state-scope writes, per compat mode (reference §5 matrix).
Which layout a write goes to comes from the read path (``SessionReader.route_of``); the rules
themselves (which engine, which keys) live in :mod:`sessionstreams.common.compat`. Appends are
built by the service and applied by ``store.engines[route].append`` (or streamed).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sessionstreams.common.compat import (
    HASHIDX,
    ZSET,
    create_route,
    user_state_delete_keys,
    user_state_read_keys,
    user_state_write_keys,
    uses_legacy,
)
from sessionstreams.common.deletion import delete_session
from sessionstreams.common.errors import SessionExistsError, SessionNotFoundError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Key,
    Session,
    SessionIndexEntry,
    SessionMeta,
    SessionStateDoc,
    UserKey,
)
from sessionstreams.common.readpath import SessionReader, build_session, hash_reply
from sessionstreams.common.state import TEMP_PREFIX, StateMap, split_scopes
from sessionstreams.common.store import Store
from sessionstreams.common.tracing import annotate

#: Reads a session as the caller's get_session does (hooks, read-your-writes).
LoadSession = Callable[[Key], Awaitable[Session | None]]

#: Lifetime of the create lock (a crashed holder delays other creators of the id this long).
_CREATE_LOCK_MS = 5000


class SessionWriter:
    """Direct writes: create, delete, trim, app and user state.

    Args:
        store: the assembled store.
        reader: the read path (where a session lives, the state scopes).
        load: reads an existing session the way the service's ``get_session`` does; a create
            that finds (or loses the race to) an existing session returns what it gives.
    """

    def __init__(self, store: Store, reader: SessionReader, load: LoadSession) -> None:
        self.store = store
        self.settings = store.settings
        self.keys = store.keys
        self.reader = reader
        self._load = load

    async def _pipeline(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        return await self.store.scripts.run_pipeline(self.store.client, calls)

    # -- create -------------------------------------------------------------------------
    async def create(
        self, key: Key, values: StateMap, given_id: bool, *, exclusive: bool = False
    ) -> Session:
        """Create in the mode's target engine; an existing session (legacy first) is returned,
        or with ``exclusive`` refused with SessionExistsError.

        In LEGACY/TRANSITION a given id is created under a short lock, so nodes of both modes
        creating one id at once end with one session (the check and the create of two
        layouts cannot be one script: they live in different slots).
        """
        if not (given_id and uses_legacy(self.settings.compat_mode)):
            return await self._create(key, values, given_id, exclusive)
        lock_key = self.keys.create_lock(key)
        token = await self._lock(lock_key)
        try:
            existing = await self._load(key)
            if existing is not None:
                return _existing(existing, exclusive)
            return await self._create(key, values, given_id, exclusive)
        finally:
            if token:
                await self.store.scripts.call(
                    self.store.client, "lease_release", [lock_key], [token])

    async def _lock(self, lock_key: str) -> str:
        """Take the create lock; '' when its holder did not release it in time (then go on)."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + _CREATE_LOCK_MS / 1000
        delay = 0.002
        while not await self.store.client.set(lock_key, token, nx=True, px=_CREATE_LOCK_MS):
            if time.monotonic() >= deadline:
                return ""
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return token

    async def _create(
        self, key: Key, values: StateMap, given_id: bool, exclusive: bool
    ) -> Session:
        mode = self.settings.compat_mode
        scoped = split_scopes(values)
        now = GoTime.now()
        meta = SessionMeta(
            id=key.session_id, app_name=key.app_name, user_id=key.user_id,
            state=scoped.session, generation=str(uuid.uuid4()), created_at=now, updated_at=now,
        )
        route = create_route(mode)
        # A compat-mode HashIdx create also asks whether a legacy copy appeared meanwhile (a
        # TRANSITION node creating the same id): readers prefer that copy, so it is returned.
        probe = route == HASHIDX and given_id and uses_legacy(mode)
        if route == HASHIDX and not (scoped.app or scoped.user or probe):
            return await self._create_at_once(key, meta, values, exclusive)
        ttl_ms = self.settings.session_ttl_ms
        if route == ZSET:
            doc = SessionStateDoc(id=meta.id, state=meta.state, generation=meta.generation,
                                  created_at=now, updated_at=now)
            created = await self.store.legacy.create(key, doc.to_json(), ttl_ms)
        else:
            index = (SessionIndexEntry(created_at=now).to_json()
                     if self.settings.enable_user_session_index else None)
            created = await self.store.hashidx.create(key, meta.to_json(), ttl_ms, index)
        if not created:
            return await self._lost_race(key, exclusive)
        await self.write_scopes(key, scoped.app, scoped.user)
        calls = self.reader.scope_calls(key, refresh=True)
        if probe:
            calls.append(("cmd", "HEXISTS", self.keys.legacy_sessions(key), key.session_id))
        replies = await self._pipeline(calls)
        app_state, user_state = self.reader.parse_scopes(key, replies)
        if probe and replies[-1]:
            existing = await self._load(key)
            if existing is not None:
                return _existing(existing, exclusive)
        session = build_session(key, meta, [], user_state, app_state, storage=route)
        session.state.update({k: v for k, v in values.items() if k.startswith(TEMP_PREFIX)})
        return session

    async def _lost_race(self, key: Key, exclusive: bool) -> Session:
        """A create that found the id taken: the stored session, or SessionExistsError."""
        if exclusive:
            raise SessionExistsError(f"session {key} already exists")
        existing = await self._load(key)
        if existing is not None:
            return _existing(existing, exclusive)
        raise SessionNotFoundError(f"session {key} vanished while being created")

    async def _create_at_once(
        self, key: Key, meta: SessionMeta, values: StateMap, exclusive: bool
    ) -> Session:
        """A HashIdx create without app/user-state writes in one round trip: the script
        creates the meta (and index entry) and reads the scopes back; scope keys of other
        slots (the legacy user state, the app state on Cluster) are pipelined beside it."""
        s = self.settings
        engine = self.store.hashidx
        index = (SessionIndexEntry(created_at=meta.created_at).to_json()
                 if s.enable_user_session_index else None)
        calls = [engine.create_read_call(
            key, meta.to_json(), s.session_ttl_ms, index,
            user_state_ttl_s=s.user_state_ttl_s, app_state_ttl_s=s.app_state_ttl_s)]
        own = self.keys.user_state(key)
        others = [k for k in user_state_read_keys(self.keys, s.compat_mode, key) if k != own]
        ttls = [(k, s.user_state_ttl_s) for k in others]
        if not engine.single_node:
            others.append(self.keys.app_state(key.app_name))
            ttls.append((others[-1], s.app_state_ttl_s))
        calls += [("cmd", "HGETALL", k) for k in others]
        calls += [("cmd", "EXPIRE", k, ttl) for k, ttl in ttls if ttl > 0]
        replies = await self._pipeline(calls)
        created, user_state, app_state = engine.parse_create_read(key, replies[0])
        if not created:
            return await self._lost_race(key, exclusive)
        read = [hash_reply(r) for r in replies[1 : 1 + len(others)]]
        if not engine.single_node:
            app_state = read.pop()
        for older in reversed(read):  # the session's own user-state key wins
            user_state = {**older, **user_state}
        session = build_session(key, meta, [], user_state, app_state, storage=HASHIDX)
        session.state.update({k: v for k, v in values.items() if k.startswith(TEMP_PREFIX)})
        return session

    # -- delete and trim ----------------------------------------------------------------
    async def delete(self, key: Key) -> None:
        """Delete the HashIdx copy, then (LEGACY/TRANSITION) the legacy copy; both always run."""
        await delete_session(self.store, key)

    async def trim(self, key: Key, count: int, rid: str) -> tuple[str, list[bytes]]:
        """Trim where the session lives; ``session_gone`` (nothing trimmed) when it is nowhere."""
        route = await self.reader.route_of(key)
        if route == HASHIDX and not await self.store.client.exists(self.keys.meta(key)):
            return "session_gone", []
        return await self.store.engines[route].trim(
            key, rid=rid, count=count, ttl_ms=self.settings.session_ttl_ms)

    # -- app and user state -------------------------------------------------------------
    async def write_scopes(
        self, key: Key, app: list[tuple[str, bytes]], user: list[tuple[str, bytes]]
    ) -> None:
        """App-state then user-state fields of a create (other slots than the session's,
        written once the session exists; the HSETs are idempotent)."""
        if app:
            await self.write_app_state(key.app_name, app)
        if user:
            await self.write_user_state(key, user)

    async def check_app_state(self, app: str) -> None:
        """Refuse (before any write) an app-state key that holds another Redis type.

        Raises:
            CorruptDataError: naming the key.
        """
        await self.store.hashidx.check_hashes([self.keys.app_state(app)])

    async def write_app_state(self, app: str, pairs: list[tuple[str, bytes]]) -> None:
        """Set app-state fields; refreshes the app-state TTL."""
        await self.store.hashidx.set_hash(
            self.keys.app_state(app), pairs, self.settings.app_state_ttl_s * 1000)

    async def write_user_state(
        self, user: UserKey | Key, pairs: list[tuple[str, bytes]]
    ) -> None:
        """Set user-state fields in the mode's keys, HashIdx first (TRANSITION: then legacy)."""
        ttl_ms = self.settings.user_state_ttl_s * 1000
        for hash_key in user_state_write_keys(self.keys, self.settings.compat_mode, user):
            await self.store.hashidx.set_hash(hash_key, pairs, ttl_ms)

    async def delete_user_state(self, user: UserKey, field: str) -> None:
        """Delete one field from every user-state key the mode reads."""
        keys = user_state_delete_keys(self.keys, self.settings.compat_mode, user)
        await self._pipeline([("cmd", "HDEL", k, field) for k in keys])


def _existing(session: Session, exclusive: bool) -> Session:
    """The session a create found; SessionExistsError when the create had to be new."""
    if exclusive:
        raise SessionExistsError(f"session {session.key} already exists")
    annotate(existing=True)
    return session
