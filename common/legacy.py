"""The legacy ZSet storage engine: the Go service's old layout, one typed wrapper per script.

Every key of a legacy session shares the ``{app}`` hash tag (``sess:{app}:<user>`` holds all
of a user's sessions), so each write is one script on one slot; the app state shares that
slot too. The write methods take exactly the arguments of
:class:`~sessionstreams.common.hashidx.HashIdxEngine`'s and return the same statuses, so a caller
picks an
engine by route (:func:`sessionstreams.common.compat.Engines.engine_for`) and calls either the same
way.

Two cases reach the HashIdx engine from here:

- user-state pairs of event deltas go to the HashIdx user-state key first (another slot:
  written idempotently before the script, like app state); the legacy user-state key is
  written inside the script only when ``dual_user_state`` (TRANSITION mode);
- a session moved by ``sessionstreams migrate`` answers ``migrated``: the write is applied
  to the HashIdx copy, with the same incarnation (``migrate`` keeps ``generation``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sessionstreams.common.errors import CorruptDataError
from sessionstreams.common.hashidx import (
    GONE_RECORD_TTL_MS,
    SUMMARY_CAS_ATTEMPTS,
    AppendEntry,
    HashIdxEngine,
    LoadResult,
    _read_for_delete,
    merge_summary,
)
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.models import Key, Summary, UserKey
from sessionstreams.common.scripts import Arg, Scripts

MIGRATED = "migrated"


def _status(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LegacyEngine:
    """Storage operations on the legacy ZSet layout for one client and key prefix.

    Args:
        client: the redis-py asyncio client (standalone, Sentinel primary or Cluster).
        keys: key names for the configured prefix.
        scripts: the service's scripts.
        hashidx: the HashIdx engine (user state of deltas, migrated sessions).
        dual_user_state: also write delta user state to the legacy user-state key
            (TRANSITION mode, where update_user_state writes both keys).
    """

    def __init__(
        self,
        client: Any,
        keys: KeySpace,
        scripts: Scripts,
        *,
        hashidx: HashIdxEngine,
        dual_user_state: bool = False,
    ) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.hashidx = hashidx
        self.dual_user_state = dual_user_state

    # -- create / delete ----------------------------------------------------------------
    async def create(self, key: Key, doc_json: bytes, ttl_ms: int) -> bool:
        """Create the session field; False when it already exists (nothing overwritten)."""
        result = await self.scripts.call(
            self.client,
            "legacy_create",
            [self.keys.legacy_sessions(key), self.keys.legacy_info(key)],
            [key.session_id, doc_json, ttl_ms],
        )
        if isinstance(result, bytes):
            raise CorruptDataError(f"create session {key}: {_status(result)}")
        return bool(result)

    async def read_for_delete(self, key: Key) -> tuple[bytes | None, list[bytes]]:
        """The session document and the stored track-name SET, read together (a key of the
        wrong type reads as missing)."""
        return await _read_for_delete(
            self.client, ("HGET", self.keys.legacy_sessions(key), key.session_id),
            ("SMEMBERS", self.keys.legacy_track_names(key)))

    async def delete(self, key: Key, tracks: Iterable[str]) -> int:
        """Delete the session's fields, keys, track keys and our bookkeeping (``ss:``)."""
        k = self.keys
        doomed = [k.legacy_events(key), k.legacy_track_names(key), k.legacy_applied(key),
                  k.legacy_info(key), k.legacy_summary_runs(key)]
        doomed += [k.legacy_track(key, t) for t in tracks]
        result = await self.scripts.call(
            self.client,
            "legacy_delete",
            [k.legacy_sessions(key), k.legacy_summaries(key), *doomed],
            [key.session_id],
        )
        if isinstance(result, bytes):
            raise CorruptDataError(f"delete session {key}: {_status(result)}")
        return int(result)

    # -- reads --------------------------------------------------------------------------
    def load_call(self, key: Key, limit: int, after_ns: int | None, flags: str) -> tuple[Any, ...]:
        """A pipeline call tuple reading one session (flags as ``legacy_load.lua``)."""
        k = self.keys
        keys = [
            k.legacy_sessions(key),
            k.legacy_events(key),
            k.legacy_summaries(key),
            k.legacy_user_state(key),
            k.legacy_track_names(key),
            k.app_state(key.app_name),
        ]
        args: list[Arg] = [
            key.session_id, max(limit, 0), "" if after_ns is None else str(after_ns), flags
        ]
        return ("script", "legacy_load", keys, args)

    @staticmethod
    def parse_load(raw: Sequence[Any]) -> LoadResult:
        """Turn a legacy_load reply into a LoadResult (``meta`` holds the SessionState)."""
        return HashIdxEngine.parse_load(raw)

    async def find_user_before(self, key: Key, first_event_json: bytes) -> bytes | None:
        """The newest user message stored before the given event member (or None)."""
        result = await self.scripts.call(
            self.client, "legacy_find_user", [self.keys.legacy_events(key)], [first_event_json]
        )
        return result or None

    def load_tracks_call(
        self, key: Key, names: Sequence[str], limit: int, after_ns: int | None
    ) -> tuple[Any, ...]:
        """A pipeline call tuple reading the events of ``names`` (one list per name)."""
        keys = [self.keys.legacy_track(key, name) for name in names]
        args: list[Arg] = [max(limit, 0), "" if after_ns is None else str(after_ns)]
        return ("script", "legacy_load_tracks", keys, args)

    async def session_docs(self, user: UserKey) -> dict[str, bytes]:
        """Every session document of one user (one HGETALL, as the Go service lists)."""
        raw = await self.client.hgetall(self.keys.legacy_sessions(user))
        return {k.decode("utf-8", "replace"): v for k, v in raw.items()}

    async def scan_users(self, app: str) -> list[UserKey]:
        """Every user of one app holding legacy sessions (SCAN, glob-escaped)."""
        found: dict[UserKey, None] = {}
        pattern = self.keys.legacy_sessions_pattern(app)
        async for raw in self.client.scan_iter(match=pattern, count=500):
            user = self.keys.parse_legacy_sessions_key(app, raw.decode("utf-8", "replace"))
            if user is not None:
                found.setdefault(user, None)
        return list(found)

    # -- writes -------------------------------------------------------------------------
    def append_call(
        self,
        key: Key,
        entries: Sequence[AppendEntry],
        *,
        ttl_ms: int,
        storage_limit: int,
        user_state_ttl_ms: int,
        incarnation: str = "",
        held: Collection[str] = (),
        stale_after: str = "",
    ) -> tuple[Any, ...]:
        """A pipeline call tuple applying ``entries`` to one session (``held``,
        ``stale_after``: as for :meth:`HashIdxEngine.append_call`).

        Run :meth:`prepare_append` before and :meth:`finish_append` after it
        (:meth:`append` does all three).
        """
        k = self.keys
        args: list[Arg] = [
            key.session_id,
            ttl_ms,
            storage_limit,
            incarnation,
            user_state_ttl_ms,
            ttl_ms or GONE_RECORD_TTL_MS,
            "1" if self.dual_user_state else "0",
            stale_after,
            len(entries),
        ]
        for entry in entries:
            args.extend(entry.argv(entry.rid in held))
        keys = [
            k.legacy_sessions(key),
            k.legacy_events(key),
            k.legacy_applied(key),
            k.legacy_info(key),
            k.legacy_user_state(key),
            k.legacy_summaries(key),  # the summary TTL follows the session's (difference 4)
            k.legacy_summary_runs(key),
        ]
        return ("script", "legacy_append", keys, args)

    async def prepare_append(self, key: Key, entries: Sequence[AppendEntry]) -> str | None:
        """Check the HashIdx user-state key (another slot) the entries' user-state pairs go
        to after the script: None when usable, else the ``invalid:`` status of every entry."""
        if not any(entry.user_pairs for entry in entries):
            return None
        return await self.hashidx.hash_problem([self.keys.user_state(key)])

    def user_state_after_script(self, key: Key) -> bool:
        """True: :meth:`finish_append` writes user-state pairs to the HashIdx key."""
        return True

    async def finish_append(
        self, key: Key, entries: Sequence[AppendEntry], statuses: list[str], **opts: Any
    ) -> list[str]:
        """Apply the entries answered ``migrated`` to the HashIdx copy of the session, then
        write the user-state pairs of the entries applied here (or already applied) to the
        HashIdx user-state key: after the script, so a refused append changes nothing."""
        out = list(statuses)
        moved = [i for i, status in enumerate(statuses) if status == MIGRATED]
        if moved:
            redone = await self.hashidx.append(key, [entries[i] for i in moved], **opts)
            for i, status in zip(moved, redone, strict=True):
                out[i] = status
        pairs = [pair for i, (entry, status) in enumerate(zip(entries, statuses, strict=True))
                 if i not in moved and status in ("applied", "duplicate")
                 for pair in entry.user_pairs]
        if pairs:
            await self.hashidx.set_hash(self.keys.user_state(key), pairs,
                                        opts["user_state_ttl_ms"])
        return out

    async def append(self, key: Key, entries: Sequence[AppendEntry], **opts: Any) -> list[str]:
        """Apply ``entries`` to one session; one status per entry (as HashIdxEngine.append)."""
        problem = await self.prepare_append(key, entries)
        if problem is not None:
            return [problem] * len(entries)
        _, name, keys, args = self.append_call(key, entries, **opts)
        result = await self.scripts.call(self.client, name, keys, args)
        return await self.finish_append(key, entries, [_status(s) for s in result], **opts)

    async def append_track(
        self,
        key: Key,
        *,
        rid: str,
        track: str,
        track_json: bytes,
        ts_ns: int,
        track_ttl_s: int,
        persist: bool,
        producer_ts: str,
        session_ttl_ms: int,
        incarnation: str = "",
    ) -> str:
        """Append one track event; returns its status."""
        k = self.keys
        result = _status(await self.scripts.call(
            self.client,
            "legacy_track",
            [
                k.legacy_sessions(key),
                k.legacy_track(key, track),
                k.legacy_track_names(key),
                k.legacy_applied(key),
                k.legacy_info(key),
            ],
            [
                key.session_id, rid, track_json, str(ts_ns), track_ttl_s,
                "1" if persist else "0", track, producer_ts, session_ttl_ms, incarnation,
                session_ttl_ms or GONE_RECORD_TTL_MS,
            ],
        ))
        if result != MIGRATED:
            return result
        return await self.hashidx.append_track(
            key, rid=rid, track=track, track_json=track_json, ts_ns=ts_ns,
            track_ttl_s=track_ttl_s, persist=persist, producer_ts=producer_ts,
            session_ttl_ms=session_ttl_ms, incarnation=incarnation,
        )

    async def update_state(
        self,
        key: Key,
        *,
        rid: str,
        patch_json: bytes,
        producer_ts: str,
        ttl_ms: int,
        incarnation: str = "",
    ) -> str:
        """Merge a base64 state patch into the session document; returns its status."""
        k = self.keys
        result = _status(await self.scripts.call(
            self.client,
            "legacy_update_state",
            [k.legacy_sessions(key), k.legacy_applied(key), k.legacy_info(key),
             k.legacy_summaries(key), k.legacy_summary_runs(key)],
            [key.session_id, rid, patch_json, producer_ts, ttl_ms, incarnation,
             ttl_ms or GONE_RECORD_TTL_MS],
        ))
        if result != MIGRATED:
            return result
        return await self.hashidx.update_state(
            key, rid=rid, patch_json=patch_json, producer_ts=producer_ts, ttl_ms=ttl_ms,
            incarnation=incarnation,
        )

    async def trim(self, key: Key, *, rid: str, count: int, ttl_ms: int) -> tuple[str, list[bytes]]:
        """Remove the newest ``count`` conversations; returns status and deleted events."""
        k = self.keys
        result = await self.scripts.call(
            self.client,
            "legacy_trim",
            [k.legacy_events(key), k.legacy_sessions(key), k.legacy_summaries(key),
             k.legacy_applied(key), k.legacy_info(key)],
            [key.session_id, rid, count, ttl_ms],
        )
        status = _status(result[0])
        if status == MIGRATED:
            return await self.hashidx.trim(key, rid=rid, count=count, ttl_ms=ttl_ms)
        return status, list(result[1:])

    # -- summaries ----------------------------------------------------------------------
    async def load_summaries(self, key: Key) -> bytes | None:
        """The stored summary map of one session (raw JSON), or None."""
        raw: bytes | None = await self.client.hget(
            self.keys.legacy_summaries(key), key.session_id
        )
        return raw

    async def set_summary(
        self, key: Key, *, filter_key: str, summary: Summary, ttl_ms: int, cut: str = ""
    ) -> str:
        """Store ``summary`` under ``filter_key`` unless the stored one is newer.

        "Newer" compares parsed ``updated_at`` times (not strings); an entry without one is
        replaced. The map is written as Go writes it, with a compare-and-set script; the
        summary HASH follows the session HASH's TTL (at least ``ttl_ms``).

        Args:
            cut: the summary job's cut (a persist stream id); a summary is stored at most
                once per cut and filter key (``covered`` afterwards). ``""``: not checked.

        Returns:
            ``applied``, ``stale`` (the stored summary is newer), ``covered``,
            ``session_gone``, or ``invalid:<why>``.
        """
        hash_key = self.keys.legacy_summaries(key)
        for _ in range(SUMMARY_CAS_ATTEMPTS):
            current = await self.client.hget(hash_key, key.session_id)
            merged = merge_summary(current, filter_key, summary)
            if merged is None:
                return "stale"
            status = _status(await self.scripts.call(
                self.client,
                "legacy_summary_cas",
                [hash_key, self.keys.legacy_sessions(key), self.keys.legacy_summary_runs(key)],
                [key.session_id, "1" if current is not None else "0", current or b"",
                 merged, ttl_ms, filter_key, cut],
            ))
            if status != "retry":
                return status
        return "invalid:summary map kept changing; try again"
