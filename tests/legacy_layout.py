"""Test helper: write sessions in the legacy ZSet layout exactly as the Go service does.

Reference §3.2 (keys and types), §4.5.Z (create: HSET of the SessionState JSON, EXPIRE of the
user's HASH), §4.8 (append: updatedAt = now, delta merged, ZADD of the full event JSON scored
by its timestamp in ns), §4.11 (tracks), §7.3 (summary map in the per-user HASH). Documents
are built with sessionstreams.common.models, whose codecs produce Go's bytes.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from sessionstreams.common.gotime import GoTime
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.models import (
    Event,
    Key,
    SessionStateDoc,
    Summary,
    TrackEvent,
    UserKey,
    encode_summary_map,
)


class GoLegacyWriter:
    """Writes legacy-layout data directly (what a Go node in LEGACY/TRANSITION mode leaves)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.keys = KeySpace(prefix)

    async def create(
        self,
        key: Key,
        state: dict[str, bytes | None] | None = None,
        *,
        generation: str | None = None,
        created: GoTime | None = None,
        ttl_s: int = 0,
    ) -> SessionStateDoc:
        """A SessionState in the user's ``sess`` HASH (Go overwrites without a check)."""
        now = created or GoTime.now()
        doc = SessionStateDoc(
            id=key.session_id, state=dict(state or {}),
            generation=str(uuid.uuid4()) if generation is None else generation,
            created_at=now, updated_at=now,
        )
        await self.client.hset(self.keys.legacy_sessions(key), key.session_id, doc.to_json())
        if ttl_s:
            await self.client.expire(self.keys.legacy_sessions(key), ttl_s)
        return doc

    async def doc(self, key: Key) -> SessionStateDoc | None:
        """The stored SessionState, decoded."""
        raw = await self.client.hget(self.keys.legacy_sessions(key), key.session_id)
        return None if raw is None else SessionStateDoc.from_json(raw)

    async def _save(self, key: Key, doc: SessionStateDoc) -> None:
        await self.client.hset(self.keys.legacy_sessions(key), key.session_id, doc.to_json())

    async def append(self, key: Key, event: Event, *, at: GoTime | None = None) -> None:
        """Go's ZSet AppendEvent: delta into the state, updatedAt = now, ZADD if storable."""
        doc = await self.doc(key)
        assert doc is not None, f"no legacy session {key}"
        state = dict(doc.state or {})
        state.update(event.state_delta or {})
        doc = msgspec.structs.replace(doc, state=state, updated_at=at or GoTime.now())
        await self._save(key, doc)
        if event.is_storable():
            await self.client.zadd(
                self.keys.legacy_events(key), {event.to_json(): event.timestamp.unix_ns}
            )

    async def track(self, key: Key, event: TrackEvent) -> None:
        """Go's ZSet AppendTrackEvent: name merged into state tracks, ZADD, SADD."""
        doc = await self.doc(key)
        assert doc is not None, f"no legacy session {key}"
        state = dict(doc.state or {})
        names = msgspec.json.decode(state["tracks"]) if state.get("tracks") else []
        if event.track not in names:
            names.append(event.track)
        state["tracks"] = msgspec.json.encode(names)
        await self._save(key, msgspec.structs.replace(doc, state=state, updated_at=GoTime.now()))
        await self.client.zadd(
            self.keys.legacy_track(key, event.track), {event.to_json(): event.timestamp.unix_ns}
        )
        await self.client.sadd(self.keys.legacy_track_names(key), event.track)

    async def summaries(self, key: Key, summaries: dict[str, Summary | None]) -> None:
        """The session's summary map in the user's ``sesssum`` HASH."""
        await self.client.hset(
            self.keys.legacy_summaries(key), key.session_id, encode_summary_map(summaries)
        )

    async def user_state(self, user: UserKey | Key, pairs: dict[str, bytes]) -> None:
        """Fields of the old user-state HASH (raw values)."""
        await self.client.hset(self.keys.legacy_user_state(user), mapping=pairs)

    async def events(self, key: Key) -> list[Event]:
        """The stored events, decoded, in score order (what a Go reader sees)."""
        raws = await self.client.zrange(self.keys.legacy_events(key), 0, -1)
        return [Event.from_json(r) for r in raws]
