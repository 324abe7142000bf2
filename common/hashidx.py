"""The HashIdx storage engine: one typed wrapper per Lua script, plus the few plain reads.

Every multi-key write is one script whose keys share the ``{user}`` hash tag. The engine
speaks in raw stored documents (bytes); decoding and filtering live in
:mod:`sessionstreams.common.readpath`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import msgspec
from redis.asyncio import RedisCluster

from sessionstreams.common.errors import CorruptDataError
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.models import (
    Key,
    Summary,
    UserKey,
    decode_summary_map,
    encode_summary_map,
)
from sessionstreams.common.quickread import (
    EXEC,
    MULTI,
    WindowCache,
    has_user_message,
    pack,
    run_transaction,
)
from sessionstreams.common.scripts import Arg, Scripts

#: TTL of an outcome recorded for a session that does not exist (and has no TTL of its own).
GONE_RECORD_TTL_MS = 86_400_000
#: HSCAN COUNT of a session index page: a user's sessions are listed in one or a few pages.
INDEX_PAGE = 1000
#: Attempts of a summary compare-and-set before giving up (each one is a fresh read).
SUMMARY_CAS_ATTEMPTS = 16


def merge_summary(current: bytes | None, filter_key: str, summary: Summary) -> bytes | None:
    """The stored map with ``summary`` set under ``filter_key``, encoded as Go encodes it;
    None when the stored entry is newer (parsed ``updated_at``; an entry without one is
    replaced).

    Raises:
        DecodeError: the stored map is not a summary map.
    """
    merged: dict[str, Summary | None] = dict((decode_summary_map(current) if current else None)
                                             or {})
    old = merged.get(filter_key)
    if old is not None and not old.updated_at.is_zero and old.updated_at > summary.updated_at:
        return None
    merged[filter_key] = summary
    return encode_summary_map(merged)


class AppendEntry(msgspec.Struct, frozen=True, array_like=True):
    """One append request, ready for the apply script (also the stream payload)."""

    rid: str
    event_id: str
    event_json: bytes  # b"" when the event is not stored (only its state delta applies)
    ts_ns: int
    is_user: bool
    producer_ts: str  # Go time text of the producer's clock; "" = none
    session_delta: bytes  # JSON object {key: base64 | null}; b"" = none
    user_pairs: tuple[tuple[str, bytes], ...] = ()

    def argv(self, held: bool = False) -> list[Arg]:
        """The entry's ARGV slice for the append scripts; ``held``: its app state is written
        after the script, so the script records it as applied-held (see common.outcomes)."""
        out: list[Arg] = [
            self.rid,
            self.event_id,
            self.event_json,
            str(self.ts_ns),
            ("u" if self.is_user else "") + ("a" if held else ""),
            self.producer_ts,
            self.session_delta,
            len(self.user_pairs),
        ]
        for field, value in self.user_pairs:
            out.append(field)
            out.append(value)
        return out


def _append_key_count(entries: Sequence[AppendEntry], ttl_ms: int, storage_limit: int) -> int:
    """How many of the append script's keys a call touches (the script's contract: the info
    hash only with bounded storage or a TTL, the user state only for pairs, the summary keys
    only with a TTL); the others are left off, each a string less for Lua to take in."""
    if ttl_ms > 0:
        return 8
    for entry in entries:
        if entry.user_pairs:
            return 6
    return 5 if storage_limit > 0 else 4


class LoadResult(msgspec.Struct):
    """What hashidx_load returns for one session."""

    meta: bytes | None
    summary: bytes | None
    user_state: dict[str, bytes]
    track_names: list[str]
    events: list[bytes]
    prepend: bytes | None
    app_state: dict[str, bytes]


async def _read_for_delete(
    client: Any, doc: tuple[str, ...], names: tuple[str, ...]
) -> tuple[bytes | None, list[bytes]]:
    """A session document and its track-name SET; wrong-type replies read as missing."""
    pipe = client.pipeline(transaction=False)
    pipe.execute_command(*doc)
    pipe.execute_command(*names)
    raw, members = await pipe.execute(raise_on_error=False)
    for reply in (raw, members):
        if isinstance(reply, Exception) and "WRONGTYPE" not in str(reply):
            raise reply
    return (raw if isinstance(raw, bytes) else None,
            sorted(members) if isinstance(members, set | list) else [])


def _pairs_to_dict(flat: Sequence[bytes]) -> dict[str, bytes]:
    return {flat[i].decode("utf-8", "replace"): flat[i + 1] for i in range(0, len(flat), 2)}


def _status(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class HashIdxEngine:
    """Storage operations on the HashIdx layout for one client and key prefix."""

    def __init__(self, client: Any, keys: KeySpace, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        # On one node a script may read a key of another slot: the app state then comes
        # back with the session read, saving a pipelined command.
        self.single_node = not isinstance(client, RedisCluster)
        self._append_keys: dict[Key, list[str]] = {}
        self._load_keys: dict[tuple[Key, bool], list[str]] = {}
        #: Window ids of recent reads and appends (see :mod:`~sessionstreams.common.quickread`).
        self.windows = WindowCache()

    # -- create / delete ----------------------------------------------------------------
    async def create(
        self, key: Key, meta_json: bytes, ttl_ms: int, index_entry: bytes | None
    ) -> bool:
        """Create the meta (and index entry); False when the session already exists."""
        result = await self.scripts.call(
            self.client,
            "hashidx_create",
            [self.keys.meta(key), self.keys.session_index(key)],
            [meta_json, key.session_id, ttl_ms, index_entry or b"", "1" if index_entry else "0"],
        )
        if isinstance(result, bytes):
            raise CorruptDataError(f"create session {key}: {_status(result)}")
        return bool(result)

    def create_read_call(
        self, key: Key, meta_json: bytes, ttl_ms: int, index_entry: bytes | None, *,
        user_state_ttl_s: int, app_state_ttl_s: int,
    ) -> tuple[Any, ...]:
        """A pipeline call creating the session and reading back its user state (and, on a
        single node, the app state), refreshing their TTLs; see :meth:`parse_create_read`."""
        k = self.keys
        keys = [k.meta(key), k.session_index(key), k.user_state(key)]
        if self.single_node:
            keys.append(k.app_state(key.app_name))
        args: list[Arg] = [meta_json, key.session_id, ttl_ms, index_entry or b"",
                           "1" if index_entry else "0", "1", user_state_ttl_s, app_state_ttl_s]
        return ("script", "hashidx_create", keys, args)

    @staticmethod
    def parse_create_read(
        key: Key, raw: Any
    ) -> tuple[bool, dict[str, bytes], dict[str, bytes]]:
        """(created, user state, app state) from a :meth:`create_read_call` reply.

        Raises:
            CorruptDataError: a key of the session has the wrong Redis type.
        """
        if isinstance(raw, bytes):
            raise CorruptDataError(f"create session {key}: {_status(raw)}")
        if not isinstance(raw, list):
            return False, {}, {}
        return True, _pairs_to_dict(raw[1]), _pairs_to_dict(raw[2])

    async def track_names_for_delete(self, key: Key) -> tuple[bytes | None, list[bytes]]:
        """The meta document and the stored track-name SET, read together (a key of the
        wrong type reads as missing: the session is deleted all the same)."""
        return await _read_for_delete(self.client, ("GET", self.keys.meta(key)),
                                      ("SMEMBERS", self.keys.track_names(key)))

    async def delete(self, key: Key, tracks: Iterable[str]) -> int:
        """Delete the session's keys, its track keys and its index entry."""
        k = self.keys
        doomed = [
            k.meta(key),
            k.event_data(key),
            k.event_index(key),
            k.summary(key),
            k.track_names(key),
            k.applied(key),
            k.info(key),
            k.summary_runs(key),
        ]
        for track in tracks:
            doomed.append(k.track_data(key, track))
            doomed.append(k.track_index(key, track))
        result = await self.scripts.call(
            self.client, "hashidx_delete", [k.session_index(key), *doomed], [key.session_id]
        )
        return int(result)

    # -- reads --------------------------------------------------------------------------
    def load_call(self, key: Key, limit: int, after_ns: int | None, flags: str) -> tuple[Any, ...]:
        """A pipeline call tuple for :meth:`Scripts.run_pipeline` reading one session.

        Flag ``a`` (app state) is only honoured on a single node; see :attr:`single_node`.
        Flag ``i`` adds the window's ids to the reply (see :meth:`load`).
        """
        with_app = "a" in flags
        if with_app and not self.single_node:
            flags = flags.replace("a", "")
            with_app = False
        return (
            "script",
            "hashidx_load",
            self._session_keys(key, with_app),
            [max(limit, 0), "" if after_ns is None else str(after_ns), flags],
        )

    def _session_keys(self, key: Key, with_app: bool) -> list[str]:
        """The load script's keys of ``key`` (cached for hot sessions)."""
        keys = self._load_keys.get((key, with_app))
        if keys is None:
            if len(self._load_keys) > 4096:  # a small cache of hot sessions' key names
                self._load_keys.clear()
            k = self.keys
            keys = [
                k.meta(key),
                k.event_data(key),
                k.event_index(key),
                k.summary(key),
                k.user_state(key),
                k.track_names(key),
            ]
            if with_app:
                keys.append(k.app_state(key.app_name))
            self._load_keys[(key, with_app)] = keys
        return keys

    async def load(self, key: Key, limit: int, after_ns: int | None, flags: str) -> LoadResult:
        """One session read as :meth:`load_call` describes, on a single node.

        The newest ``limit`` events without a lower time bound are read, when this engine
        remembers their ids, by one transaction of plain commands (:meth:`quick_load`);
        otherwise by the script, which then returns the ids to remember.
        """
        if self.reads_window(limit, after_ns):
            quick = await self.quick_load(key, limit, flags)
            if quick is not None:
                return quick
            flags += "i"
        _, name, keys, args = self.load_call(key, limit, after_ns, flags)
        raw = await self.scripts.call(self.client, name, keys, args)
        loaded = self.parse_load(raw)
        if "i" in flags:
            if loaded.meta is None:
                self.windows.forget(key)
            else:
                self.windows.learned(key, limit, raw[7])
        return loaded

    @staticmethod
    def reads_window(limit: int, after_ns: int | None) -> bool:
        """Whether a read is of the newest ``limit`` events without a lower time bound, the
        reads a remembered window (:meth:`quick_load`) can serve."""
        return limit > 0 and after_ns is None

    async def quick_load(self, key: Key, limit: int, flags: str) -> LoadResult | None:
        """The script's reply as one ``MULTI``/``EXEC`` of plain commands, when the window's
        ids are remembered and still current; None: read with the script.

        Flag ``l`` (legacy data to consult, as ``compat_load`` does): the transaction also
        checks that the legacy layout holds no such session (else None) and reads the legacy
        user state, merged under the HashIdx one.
        """
        window = self.windows.window_for(key, limit)
        if window is None:
            return None
        ids = window.ids
        head = window.heads.get(flags)
        if head is None:
            head = window.heads[flags] = self._quick_head(key, limit, flags)
        if ids and not window.tail:
            window.tail = pack([("HMGET", self.keys.event_data(key), *ids)])
        packed, count = head
        reply = await run_transaction(self.client, MULTI + packed + window.tail + EXEC,
                                      count + (1 if ids else 0))
        if reply is None:  # refused or failed: the script answers, later reads back off
            self.windows.missed(key)
            return None
        replies = iter(reply)
        old_user: list[bytes] = []
        if "l" in flags:
            if next(replies):  # the session is (also) in the legacy layout, which wins
                self.windows.missed(key)
                return None
            old_user = next(replies)
        meta = next(replies)
        summary = next(replies) if "s" in flags else None
        ustate = next(replies) if "u" in flags else []
        names = next(replies) if "t" in flags else []
        astate = next(replies) if "a" in flags else []
        current = next(replies)
        values = next(replies) if ids else []
        if meta is None:
            self.windows.forget(key)
            return LoadResult(None, None, {}, [], [], None, {})
        if tuple(current) != ids:
            self.windows.missed(key)
            return None
        events = [v for v in values if v is not None]
        if events and "x" not in flags and not has_user_message(events):
            return None  # the script looks up the newest earlier user message
        self.windows.hit(key)
        user_state = _pairs_to_dict(ustate)
        if old_user:
            user_state = {**_pairs_to_dict(old_user), **user_state}
        return LoadResult(meta=meta, summary=summary, user_state=user_state,
                          track_names=[n.decode("utf-8", "replace") for n in names],
                          events=events, prepend=None, app_state=_pairs_to_dict(astate))

    def _quick_head(self, key: Key, limit: int, flags: str) -> tuple[bytes, int]:
        """The packed reads of :meth:`quick_load` before the ``HMGET``, and their count."""
        meta_key, _, idx_key, summary_key, ustate_key, names_key, *app = \
            self._session_keys(key, "a" in flags)
        wanted: list[tuple[Any, ...]] = []
        if "l" in flags:
            wanted += [("HEXISTS", self.keys.legacy_sessions(key), key.session_id),
                       ("HGETALL", self.keys.legacy_user_state(key))]
        wanted.append(("GET", meta_key))
        for flag, command in (("s", ("GET", summary_key)), ("u", ("HGETALL", ustate_key)),
                              ("t", ("SMEMBERS", names_key)), ("a", ("HGETALL", *app))):
            if flag in flags:
                wanted.append(command)
        wanted.append(("ZRANGE", idx_key, -limit, -1))
        return pack(wanted), len(wanted)

    @staticmethod
    def parse_load(raw: Sequence[Any]) -> LoadResult:
        """Turn a hashidx_load reply into a LoadResult."""
        meta, summary, ustate, names, events, prepend, astate = raw[:7]
        return LoadResult(
            meta=meta or None,
            summary=summary or None,
            user_state=_pairs_to_dict(ustate),
            track_names=[n.decode("utf-8", "replace") for n in names],
            events=list(events),
            prepend=prepend or None,
            app_state=_pairs_to_dict(astate),
        )

    async def find_user_before(self, key: Key, first_event_id: str) -> bytes | None:
        """The newest user message stored before ``first_event_id`` (or None)."""
        result = await self.scripts.call(
            self.client,
            "hashidx_find_user",
            [self.keys.event_data(key), self.keys.event_index(key)],
            [first_event_id],
        )
        return result or None

    def load_tracks_call(
        self, key: Key, names: Sequence[str], limit: int, after_ns: int | None
    ) -> tuple[Any, ...]:
        """A pipeline call tuple reading the events of ``names`` (one list per name)."""
        keys: list[str] = []
        for name in names:
            keys.append(self.keys.track_data(key, name))
            keys.append(self.keys.track_index(key, name))
        args: list[Arg] = [max(limit, 0), "" if after_ns is None else str(after_ns)]
        return ("script", "hashidx_load_tracks", keys, args)

    def index_page_call(self, user: UserKey, cursor: int = 0) -> tuple[Any, ...]:
        """A pipeline call reading one page of the user's session index (HSCAN); parse the
        reply with :meth:`parse_index_page`."""
        return ("cmd", "HSCAN", self.keys.session_index(user), cursor, "COUNT", INDEX_PAGE)

    def list_metas_call(self, user: UserKey) -> tuple[Any, ...]:
        """A pipeline call reading a user's indexed session ids with their metas (up to
        :data:`INDEX_PAGE` sessions); parse the reply with :meth:`parse_list_metas`."""
        head = self.keys.meta(Key(user.app_name, user.user_id, ""))
        return ("script", "hashidx_list_metas", [self.keys.session_index(user)],
                [head, INDEX_PAGE])

    @staticmethod
    def parse_list_metas(reply: Any) -> tuple[list[str], list[bytes | None]] | None:
        """(session ids, their metas or None) of a :meth:`list_metas_call` reply; None when
        the index holds more than a page (read it with :meth:`index_page_call`)."""
        if reply is None:
            return None
        ids = [sid.decode("utf-8", "replace") for sid in reply[0::2]]
        return ids, [meta or None for meta in reply[1::2]]

    @staticmethod
    def parse_index_page(reply: Any) -> tuple[int, list[str]]:
        """(next cursor, session ids) of an :meth:`index_page_call` reply (0: no more)."""
        cursor, fields = reply
        names = list(fields) if isinstance(fields, dict) else fields[0::2]  # dict or flat list
        return int(cursor), [n.decode("utf-8", "replace") for n in names]

    async def session_ids_from_index(self, user: UserKey) -> list[str]:
        """Every session id in the user's session index (HSCAN, no SCAN)."""
        ids: dict[str, None] = {}
        async for field, _ in self.client.hscan_iter(self.keys.session_index(user),
                                                     count=INDEX_PAGE):
            ids.setdefault(field.decode(), None)
        return list(ids)

    async def prune_index(self, user: UserKey, stale: Sequence[str]) -> None:
        """Remove index entries whose session is gone."""
        if stale:
            await self.client.hdel(self.keys.session_index(user), *stale)

    async def scan_session_ids(self, user: UserKey) -> list[str]:
        """Session ids of one user found by SCAN over meta keys (deduplicated)."""
        seen: dict[str, None] = {}
        head_len = len(self.keys.meta(Key(user.app_name, user.user_id, "x"))) - 1
        async for raw in self.client.scan_iter(match=self.keys.meta_pattern(user), count=100):
            seen.setdefault(raw.decode()[head_len:], None)
        return list(seen)

    async def scan_app_keys(self, app: str) -> list[Key]:
        """Every HashIdx session of one app found by SCAN (cost: the whole keyspace)."""
        found: dict[Key, None] = {}
        async for raw in self.client.scan_iter(match=self.keys.app_meta_pattern(app), count=500):
            key = self.keys.parse_meta_key(app, raw.decode())
            if key is not None:
                found.setdefault(key, None)
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
        """A pipeline call tuple applying ``entries`` to one session; the entries whose rid
        is in ``held`` have their app state written after it (recorded as held). With
        ``stale_after`` (Go time text) every entry is refused ``stale`` when the stored
        ``updatedAt`` is later."""
        k = self.keys
        args: list[Arg] = [
            ttl_ms,
            storage_limit,
            incarnation,
            user_state_ttl_ms,
            ttl_ms or GONE_RECORD_TTL_MS,
            stale_after,
            len(entries),
        ]
        for entry in entries:
            args.extend(entry.argv(entry.rid in held))
        keys = self._append_keys.get(key)
        if keys is None:
            if len(self._append_keys) > 4096:  # a small cache of hot sessions' key names
                self._append_keys.clear()
            keys = self._append_keys[key] = [
                k.meta(key),
                k.event_data(key),
                k.event_index(key),
                k.applied(key),
                k.info(key),
                k.user_state(key),
                k.summary(key),  # the summary TTL follows the session's (DESIGN §4, diff. 4)
                k.summary_runs(key),
            ]
        used = keys[:_append_key_count(entries, ttl_ms, storage_limit)]
        return ("script", "hashidx_append", used, args)

    def other_slot_user_state(self, key: Key) -> str | None:
        """The user-state key of another slot that appends also write (None here; the
        TRANSITION engine writes the legacy key, the legacy engine the HashIdx one)."""
        return None

    def user_state_after_script(self, key: Key) -> bool:
        """True when :meth:`finish_append` writes user-state pairs after the script."""
        return self.other_slot_user_state(key) is not None

    async def prepare_append(self, key: Key, entries: Sequence[AppendEntry]) -> str | None:
        """Check, before the script, the keys of other slots the entries write after it.

        Returns None when they are usable, else the ``invalid:`` status every entry gets
        (nothing written). Callers that pipeline :meth:`append_call` run this first and
        :meth:`finish_append` on the statuses; :meth:`append` does all three.
        """
        other = self.other_slot_user_state(key)
        if other is None or not any(entry.user_pairs for entry in entries):
            return None
        return await self.hash_problem([other])

    async def finish_append(
        self, key: Key, entries: Sequence[AppendEntry], statuses: list[str], **opts: Any
    ) -> list[str]:
        """Write the user-state pairs of the entries the script applied (or had applied) to
        the other slot's key; ``opts`` as :meth:`append`. Written after the script, a refused
        append changes nothing there; a redelivered entry (``duplicate``) writes them again."""
        other = self.other_slot_user_state(key)
        if other is not None:
            pairs = [pair for entry, status in zip(entries, statuses, strict=True)
                     if status in ("applied", "duplicate") for pair in entry.user_pairs]
            if pairs:
                await self.set_hash(other, pairs, opts["user_state_ttl_ms"])
        return statuses

    async def append(self, key: Key, entries: Sequence[AppendEntry], **opts: Any) -> list[str]:
        """Apply ``entries`` to one session; one status per entry.

        ``opts``: ``ttl_ms``, ``storage_limit``, ``user_state_ttl_ms``, ``incarnation``
        (see :meth:`append_call`).
        """
        other_slot = self.other_slot_user_state(key) is not None
        if other_slot:
            problem = await self.prepare_append(key, entries)
            if problem is not None:
                return [problem] * len(entries)
        _, name, keys, args = self.append_call(key, entries, **opts)
        statuses = [_status(s) for s in await self.scripts.call(self.client, name, keys, args)]
        self.windows.appended(
            key, (e.event_id for e, status in zip(entries, statuses, strict=True)
                  if status == "applied" and e.event_json),
            keep=opts["storage_limit"])
        if not other_slot:  # no other slot to write
            return statuses
        return await self.finish_append(key, entries, statuses, **opts)

    async def hash_problem(self, hash_keys: Sequence[str]) -> str | None:
        """None when each key is missing or a HASH, else an ``invalid:`` status naming it."""
        pipe = self.client.pipeline(transaction=False)
        for hash_key in hash_keys:
            pipe.type(hash_key)
        for hash_key, kind in zip(hash_keys, await pipe.execute(), strict=True):
            name = _status(kind)
            if name not in ("none", "hash"):
                return f"invalid:wrong Redis type {name} at {hash_key}"
        return None

    async def check_hashes(self, hash_keys: Sequence[str]) -> None:
        """Raise CorruptDataError when a key holds another Redis type than HASH."""
        problem = await self.hash_problem(hash_keys)
        if problem is not None:
            raise CorruptDataError(problem.removeprefix("invalid:"))

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
        result = await self.scripts.call(
            self.client,
            "hashidx_track",
            [
                k.meta(key),
                k.track_data(key, track),
                k.track_index(key, track),
                k.track_names(key),
                k.applied(key),
            ],
            [
                rid,
                track_json,
                str(ts_ns),
                track_ttl_s,
                "1" if persist else "0",
                track,
                producer_ts,
                session_ttl_ms,
                incarnation,
                session_ttl_ms or GONE_RECORD_TTL_MS,
            ],
        )
        return _status(result)

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
        """Merge a base64 state patch into the meta; returns its status."""
        result = await self.scripts.call(
            self.client,
            "hashidx_update_state",
            [self.keys.meta(key), self.keys.applied(key), self.keys.summary(key),
             self.keys.summary_runs(key)],
            [rid, patch_json, producer_ts, ttl_ms, incarnation, ttl_ms or GONE_RECORD_TTL_MS],
        )
        return _status(result)

    async def trim(self, key: Key, *, rid: str, count: int, ttl_ms: int) -> tuple[str, list[bytes]]:
        """Remove the newest ``count`` conversations; returns status and deleted events."""
        k = self.keys
        result = await self.scripts.call(
            self.client,
            "hashidx_trim",
            [k.event_data(key), k.event_index(key), k.applied(key)],
            [rid, count, ttl_ms],
        )
        return _status(result[0]), list(result[1:])

    async def set_hash(
        self, hash_key: str, pairs: Sequence[tuple[str, bytes]], ttl_ms: int
    ) -> None:
        """HSET ``pairs`` and refresh the TTL in one script (app or user state)."""
        args: list[Arg] = [ttl_ms]
        for field, value in pairs:
            args.append(field)
            args.append(value)
        result = await self.scripts.call(self.client, "hash_set", [hash_key], args)
        if isinstance(result, bytes):
            raise CorruptDataError(f"{hash_key}: {_status(result)}")

    # -- summaries ----------------------------------------------------------------------
    async def load_summaries(self, key: Key) -> bytes | None:
        """The stored summary map of one session (raw JSON), or None."""
        raw: bytes | None = await self.client.get(self.keys.summary(key))
        return raw or None

    async def set_summary(
        self, key: Key, *, filter_key: str, summary: Summary, ttl_ms: int = 0, cut: str = ""
    ) -> str:
        """Store ``summary`` under ``filter_key`` unless the stored one is newer.

        As :meth:`~sessionstreams.common.legacy.LegacyEngine.set_summary`; the summary key
        takes the meta's remaining TTL (``ttl_ms`` is not needed: the meta carries the session TTL).
        """
        sum_key = self.keys.summary(key)
        for _ in range(SUMMARY_CAS_ATTEMPTS):
            current = await self.client.get(sum_key)
            merged = merge_summary(current, filter_key, summary)
            if merged is None:
                return "stale"
            status = _status(await self.scripts.call(
                self.client,
                "hashidx_summary_cas",
                [sum_key, self.keys.meta(key), self.keys.summary_runs(key)],
                ["1" if current is not None else "0", current or b"", merged, filter_key, cut],
            ))
            if status != "retry":
                return status
        return "invalid:summary map kept changing; try again"
