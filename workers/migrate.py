"""``sessionstreams migrate``: copy legacy (ZSet layout) sessions into HashIdx.

So that CompatMode NONE can be reached without waiting for the legacy data to expire. Per
session, in this order (each numbered step is one script or one read pipeline):

1. **export** (reads, legacy ``{app}`` slot): the SessionState, summary map, request record,
   event and track ZSETs. Their content is the session's *fingerprint*.
2. **begin** (HashIdx ``{user}`` slot): refuse (``conflict``) when a HashIdx copy exists that
   an earlier import did not write and that holds events or tracks; else clear any partial
   copy and mark the import as started.
3. **chunks**: events (HASH + time index, scores made strictly increasing so the legacy order
   survives, duplicate event ids collapsed to the first) and track events, 500 per script.
4. **finish**: the meta (same ``generation``, createdAt, updatedAt, state), summary map, track
   names, the legacy request record, the index entry (when the index is enabled) - the meta
   last, so the copy is complete once it exists.
5. **verify** (reads): meta, event and track counts, summary equal to what was exported.
6. **retire** (legacy slot): only if the fingerprint is unchanged, delete the legacy copy and
   leave ``migrated = generation`` in ``ss:info``: writes still routed to the legacy layout
   (agents holding ``zset``-tagged sessions, stream entries in flight) then apply to the
   HashIdx copy. If a write landed since the export, nothing is deleted and the session is
   exported again (up to 5 times, then reported ``busy``).

After a user's sessions, the old user-state key is copied field by field into the HashIdx one
where the field is missing (HashIdx values are never older: every mode writes them), then
deleted if unchanged and the user holds no legacy session any more.

A crash (or an injected fault) after step 1-4 leaves the legacy copy intact and visible (LEGACY
and TRANSITION read it first) beside an incomplete or unverified HashIdx copy that readers
ignore; a rerun clears and rewrites it. After step 5 both copies are complete; a rerun redoes
the session. Step 6 is one script: before it nothing is deleted, after it the session lives in
HashIdx only. A session deleted meanwhile is not resurrected: retire answers ``gone`` and the
import is removed. Reruns are therefore safe at any point, and cheap: migrated sessions are no
longer in the legacy layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sessionstreams.common.errors import DecodeError
from sessionstreams.common.keys import validate_app, validate_user_key
from sessionstreams.common.models import (
    Event,
    Key,
    SessionIndexEntry,
    SessionMeta,
    SessionStateDoc,
    UserKey,
)
from sessionstreams.common.readpath import track_names
from sessionstreams.common.store import Store
from sessionstreams.workers._tooling import FaultHook, Progress, reach

_CHUNK = 500
_READ_CHUNK = 1000
_ATTEMPTS = 5
#: HLEN commands per pipeline when counting the sessions to migrate.
_COUNT_BATCH = 1000

Member = tuple[bytes, float]


class _Head(msgspec.Struct):
    """The fields of a SessionState the import needs raw (incarnation)."""

    generation: str = ""
    created_at: str = msgspec.field(default="", name="createdAt")


class _EventId(msgspec.Struct):
    id: str = ""


@dataclass
class MigrateReport:
    """What a migration did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    users: int = 0
    sessions: int = 0
    migrated: int = 0
    events: int = 0
    track_events: int = 0
    summaries: int = 0
    gone: int = 0
    collapsed_events: int = 0
    user_states: int = 0
    conflicts: list[Key] = field(default_factory=list)
    busy: list[Key] = field(default_factory=list)
    failed: list[tuple[Key, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every session found was migrated (or vanished meanwhile)."""
        return not (self.conflicts or self.busy or self.failed)

    def summary(self) -> str:
        """A few lines for humans."""
        verb = "would migrate" if self.dry_run else "migrated"
        done = self.sessions if self.dry_run else self.migrated
        lines = [
            f"migrate: {self.users} users, {self.sessions} legacy sessions found, {verb} {done} "
            f"({self.events} events, {self.track_events} track events, {self.summaries} "
            f"summary maps; {self.user_states} user states copied)",
        ]
        if self.collapsed_events:
            lines.append(f"  {self.collapsed_events} events with a repeated id kept once")
        for title, keys in (("conflict (HashIdx copy exists)", self.conflicts),
                            ("busy (kept changing)", self.busy)):
            lines += [f"  {title}: {k.app_name}/{k.user_id}/{k.session_id}" for k in keys]
        lines += [f"  failed: {k.app_name}/{k.user_id}/{k.session_id}: {why}"
                  for k, why in self.failed]
        return "\n".join(lines)


@dataclass
class _Snapshot:
    key: Key
    doc_raw: bytes
    meta: SessionMeta
    incarnation: str
    summary: bytes | None
    events: list[Member]
    tracks: dict[str, list[Member]]
    applied: list[Member]
    hashidx_names: list[str]


class Migrator:
    """Copies one app's legacy sessions into HashIdx (see the module docstring).

    Args:
        store: the assembled store (its settings give the TTLs, key prefix and index flag,
            as the services use them).
        fault: called at ``imported`` (steps 1-5 done) and ``retired`` (step 6 done).
    """

    def __init__(self, store: Store, *, fault: FaultHook | None = None) -> None:
        self.store = store
        self.client = store.client
        self.settings = store.settings
        self.keys = store.keys
        self.scripts = store.scripts
        self.fault = fault

    async def run(
        self, app: str, user: str | None = None, *, dry_run: bool = False,
        progress: Progress | None = None,
    ) -> MigrateReport:
        """Migrate every legacy session of ``app`` (or of one user)."""
        validate_app(app)
        users = [UserKey(app, user)] if user is not None else await self._users(app)
        for u in users:
            validate_user_key(u)
        report = MigrateReport(dry_run=dry_run, users=len(users))
        if progress is not None:
            progress.total = await self.count(users)
        for u in users:
            sids = sorted(s.decode("utf-8", "replace")
                          for s in await self.client.hkeys(self.keys.legacy_sessions(u)))
            for sid in sids:
                await self._session(Key(app, u.user_id, sid), report, dry_run)
                if progress is not None:
                    progress.advance()
            if not dry_run:
                report.user_states += await self._user_state(u)
        return report

    async def count(self, users: list[UserKey]) -> int:
        """How many legacy sessions ``users`` have (the progress total, known up front)."""
        total = 0
        for start in range(0, len(users), _COUNT_BATCH):
            pipe = self.client.pipeline(transaction=False)
            for u in users[start : start + _COUNT_BATCH]:
                pipe.hlen(self.keys.legacy_sessions(u))
            total += sum(int(n) for n in await pipe.execute())
        return total

    async def _users(self, app: str) -> list[UserKey]:
        """Users with legacy sessions or an old user-state key (left by an interrupted run)."""
        k = self.keys
        found: set[UserKey] = set()
        for pattern, parse in ((k.legacy_sessions_pattern(app), k.parse_legacy_sessions_key),
                               (k.legacy_user_state_pattern(app),
                                k.parse_legacy_user_state_key)):
            async for raw in self.client.scan_iter(match=pattern, count=500):
                u = parse(app, raw.decode("utf-8", "replace"))
                if u is not None:
                    found.add(u)
        return sorted(found, key=lambda u: u.user_id)

    # -- one session ------------------------------------------------------------------
    async def _session(self, key: Key, report: MigrateReport, dry_run: bool) -> None:
        for _ in range(_ATTEMPTS):
            try:
                snap = await self._export(key)
            except DecodeError as exc:
                report.sessions += 1
                report.failed.append((key, f"undecodable session document: {exc}"))
                return
            if snap is None:
                return  # deleted (or migrated by another run) since it was listed
            if dry_run:
                report.sessions += 1
                self._count(report, snap)
                return
            if await self._begin(snap) == "conflict":
                report.sessions += 1
                report.conflicts.append(key)
                return
            await self._copy(snap)
            problem = await self._verify(snap)
            if problem:
                report.sessions += 1
                report.failed.append((key, problem))
                return
            await reach(self.fault, "imported", key)
            status = await self._retire(snap)
            if status == "retired":
                report.sessions += 1
                report.migrated += 1
                self._count(report, snap)
                await reach(self.fault, "retired", key)
                return
            if status == "gone":
                await self._drop_import(snap)
                report.gone += 1
                return
        report.sessions += 1
        report.busy.append(key)

    @staticmethod
    def _count(report: MigrateReport, snap: _Snapshot) -> None:
        unique = len(_unique_events(snap.events))
        report.events += unique
        report.collapsed_events += len(snap.events) - unique
        report.track_events += sum(len(m) for m in snap.tracks.values())
        report.summaries += snap.summary is not None

    async def _export(self, key: Key) -> _Snapshot | None:
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(k.legacy_sessions(key), key.session_id)
        pipe.hget(k.legacy_summaries(key), key.session_id)
        pipe.smembers(k.legacy_track_names(key))
        pipe.zrange(k.legacy_applied(key), 0, -1, withscores=True)
        pipe.smembers(k.track_names(key))
        doc_raw, summary, legacy_names, applied, hashidx_names = await pipe.execute()
        if doc_raw is None:
            return None
        try:
            head = msgspec.json.decode(doc_raw, type=_Head)
        except msgspec.DecodeError as exc:
            raise DecodeError(str(exc), doc_raw) from exc
        doc = SessionStateDoc.from_json(doc_raw)
        meta = SessionMeta(
            id=key.session_id, app_name=key.app_name, user_id=key.user_id, state=doc.state,
            generation=doc.generation, created_at=doc.created_at, updated_at=doc.updated_at,
        )
        names = track_names(doc.state or {}, (n.decode("utf-8", "replace") for n in legacy_names))
        tracks = {name: await self._members(k.legacy_track(key, name)) for name in names}
        return _Snapshot(
            key=key, doc_raw=doc_raw, meta=meta, incarnation=head.generation or head.created_at,
            summary=summary, events=await self._members(k.legacy_events(key)), tracks=tracks,
            applied=list(applied),
            hashidx_names=sorted(n.decode("utf-8", "replace") for n in hashidx_names),
        )

    async def _members(self, zkey: str) -> list[Member]:
        out: list[Member] = []
        while True:
            chunk = await self.client.zrange(
                zkey, len(out), len(out) + _READ_CHUNK - 1, withscores=True
            )
            out.extend(chunk)
            if len(chunk) < _READ_CHUNK:
                return out

    async def _begin(self, snap: _Snapshot) -> str:
        k, key = self.keys, snap.key
        doomed = [k.event_data(key), k.event_index(key), k.summary(key), k.applied(key)]
        for name in sorted(set(snap.tracks) | set(snap.hashidx_names)):
            doomed += [k.track_data(key, name), k.track_index(key, name)]
        result = await self.scripts.call(
            self.client, "hashidx_import_begin",
            [k.meta(key), k.event_index(key), k.track_names(key), k.info(key), *doomed],
            [snap.incarnation],
        )
        return result.decode() if isinstance(result, bytes) else str(result)

    async def _copy(self, snap: _Snapshot) -> None:
        k, key, s = self.keys, snap.key, self.settings
        ttl_ms, track_ttl_ms = s.session_ttl_ms, s.track_ttl_s * 1000
        events = _unique_events(snap.events)
        scores = _increasing([score for _, _, score in events])
        triples = [(eid, json, score)
                   for (eid, json, _), score in zip(events, scores, strict=True)]
        await self._chunks(k.event_data(key), k.event_index(key), ttl_ms, triples, "")
        for name, members in snap.tracks.items():
            scores = _increasing([score for _, score in members])
            rows = [(str(i + 1), json, score)
                    for i, ((json, _), score) in enumerate(zip(members, scores, strict=True))]
            await self._chunks(k.track_data(key, name), k.track_index(key, name), track_ttl_ms,
                               rows, str(len(rows)) if rows else "")
        index = (SessionIndexEntry(created_at=snap.meta.created_at).to_json()
                 if s.enable_user_session_index else b"")
        args: list[Any] = [
            snap.meta.to_json(), snap.summary or b"", ttl_ms, track_ttl_ms, key.session_id,
            index, _newest_user(events), snap.incarnation, len(snap.tracks), *snap.tracks,
        ]
        for rid, score in snap.applied:
            args += [int(score), rid]
        await self.scripts.call(
            self.client, "hashidx_import_finish",
            [k.meta(key), k.summary(key), k.track_names(key), k.info(key), k.applied(key),
             k.session_index(key)],
            args,
        )

    async def _chunks(
        self, data_key: str, idx_key: str, ttl_ms: int, rows: list[tuple[str, bytes, float]],
        seq: str,
    ) -> None:
        for start in range(0, max(len(rows), 1), _CHUNK):
            args: list[Any] = [ttl_ms, seq]
            for field_name, json, score in rows[start : start + _CHUNK]:
                args += [field_name, json, repr(score)]
            if len(args) > 2 or seq:
                await self.scripts.call(self.client, "hashidx_import_chunk",
                                        [data_key, idx_key], args)

    async def _verify(self, snap: _Snapshot) -> str:
        k, key = self.keys, snap.key
        pipe = self.client.pipeline(transaction=False)
        pipe.get(k.meta(key))
        pipe.hlen(k.event_data(key))
        pipe.zcard(k.event_index(key))
        pipe.get(k.summary(key))
        for name in snap.tracks:
            pipe.zcard(k.track_index(key, name))
            pipe.hlen(k.track_data(key, name))
        meta, hlen, zcard, summary, *track_counts = await pipe.execute()
        expected = len(_unique_events(snap.events))
        if meta != snap.meta.to_json():
            return "verify: the HashIdx meta differs from the one written"
        if hlen != expected or zcard != expected:
            return f"verify: {expected} events exported, {hlen}/{zcard} stored"
        if summary != snap.summary:
            return "verify: the summary map differs"
        for i, (name, members) in enumerate(snap.tracks.items()):
            idx, data = track_counts[2 * i], track_counts[2 * i + 1]
            if idx != len(members) or data != len(members) + (1 if members else 0):
                return f"verify: track {name}: {len(members)} exported, {idx} stored"
        return ""

    async def _retire(self, snap: _Snapshot) -> str:
        k, key = self.keys, snap.key
        top = snap.applied[-1][0] if snap.applied else b""
        names = list(snap.tracks)
        result = await self.scripts.call(
            self.client, "legacy_retire",
            [k.legacy_sessions(key), k.legacy_summaries(key), k.legacy_events(key),
             k.legacy_track_names(key), k.legacy_applied(key), k.legacy_info(key),
             *[k.legacy_track(key, n) for n in names]],
            [key.session_id, snap.doc_raw, "1" if snap.summary is not None else "0",
             snap.summary or b"", len(snap.events), len(snap.applied), top, snap.incarnation,
             self.settings.session_ttl_ms, *[len(snap.tracks[n]) for n in names]],
        )
        return result.decode() if isinstance(result, bytes) else str(result)

    async def _drop_import(self, snap: _Snapshot) -> None:
        k, key = self.keys, snap.key
        if await self.client.hget(k.info(key), "imported") == snap.incarnation.encode():
            await self.store.hashidx.delete(key, sorted(set(snap.tracks) | set(snap.hashidx_names)))

    # -- user state -------------------------------------------------------------------
    async def _user_state(self, user: UserKey) -> int:
        """Copy the old user-state fields HashIdx lacks; delete the old key if unchanged."""
        old_key, new_key = self.keys.legacy_user_state(user), self.keys.user_state(user)
        ttl_s = self.settings.user_state_ttl_s
        for _ in range(_ATTEMPTS):
            pairs = await self.client.hgetall(old_key)
            if not pairs:
                return 0
            pipe = self.client.pipeline(transaction=False)
            for f, v in pairs.items():
                pipe.hsetnx(new_key, f, v)
            if ttl_s > 0:
                pipe.expire(new_key, ttl_s)
            await pipe.execute()
            flat = [x for pair in pairs.items() for x in pair]
            status = await self.scripts.call(
                self.client, "legacy_retire_user_state",
                [old_key, self.keys.legacy_sessions(user)], flat,
            )
            if status != b"changed":
                return 1
        return 1


def _unique_events(members: list[Member]) -> list[tuple[str, bytes, float]]:
    """(event id, JSON, score) per stored event in legacy order; a repeated id kept once."""
    seen: dict[str, tuple[bytes, float]] = {}
    for json, score in members:
        try:
            eid = msgspec.json.decode(json, type=_EventId).id
        except msgspec.DecodeError:
            continue  # unreadable by the Go service too: not copied
        seen.setdefault(eid, (json, score))
    return [(eid, json, score) for eid, (json, score) in seen.items()]


def _increasing(scores: list[float]) -> list[float]:
    """Scores made strictly increasing (the next double up on a tie), order unchanged."""
    out: list[float] = []
    for score in scores:
        out.append(score if not out or score > out[-1] else math.nextafter(out[-1], math.inf))
    return out


def _newest_user(events: list[tuple[str, bytes, float]]) -> str:
    for eid, json, _ in reversed(events):
        if b'"role":"user"' in json:
            try:
                if Event.from_json(json).is_user_message():
                    return eid
            except DecodeError:
                continue
    return ""
