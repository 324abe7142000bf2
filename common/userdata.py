"""A user's data, whole: export to JSON Lines, import, and erase, in both layouts.

Which keys are a user's (``KeySpace.user_patterns`` / ``KeySpace.user_owns``): every HashIdx
key of ``<app>:{<user>}`` (sessions, events, tracks, summaries, the session index, the user
state), every legacy key of ``{<app>}:<user>`` (the session, summary and user-state hashes, the
event and track sets of the user's sessions) and our bookkeeping keys of both layouts. The app
state (``appstate:{<app>}``) is shared by every user of the app and is never touched. Stream
entries (persist, summary and dead-letter streams) of the user are part of the user's data too.

The export is one JSON document per line:

- ``{"kind": "header", "format": "sessionstreams-user/1", "app", "user", "exported_at"}``
- ``{"kind": "session", "layout": "hashidx"|"zset", "id", "keys": [...]}`` per session;
- ``{"kind": "user", "keys": [...]}``: the keys of the user not tied to one session;
- ``{"kind": "in_flight", "stream", "id", "entry"}``: writes still in a stream (not imported);
- ``{"kind": "end", "sessions", "key_count", "in_flight"}``: counts, to check completeness.

A key record is ``{"key": name without the key prefix, "type", "ttl_ms" (-1: none), "value"}``
with the value by type: string → text; hash → ``[[field, value], ...]``; set →
``[member, ...]``; zset → ``[[member, score], ...]`` (the score as Redis prints it, which
round-trips the double exactly). Bytes that are not UTF-8 are written ``{"base64": ...}``, so
the Go JSON documents come back byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sessionstreams.common.entries import FIELD, decode_entry, decode_job
from sessionstreams.common.errors import DecodeError, InvalidArgumentError, SessionExistsError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.keys import validate_user_key
from sessionstreams.common.models import UserKey
from sessionstreams.common.shards import ShardKeys
from sessionstreams.common.store import Store

FORMAT = "sessionstreams-user/1"
#: Keys read or deleted per pipeline.
_BATCH = 200


def _enc(raw: bytes) -> Any:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}


def _dec(value: Any) -> bytes:
    if isinstance(value, dict):
        return base64.b64decode(value["base64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    raise DecodeError(f"not an exported value: {value!r}")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class EraseReport:
    """What an erase removed."""

    keys: int = 0
    stream_entries: int = 0
    passes: int = 0
    in_flight_waited: bool = False
    sessions: set[str] = field(default_factory=set)

    def summary(self) -> str:
        """One line for humans."""
        return (f"erased {self.keys} keys of {len(self.sessions)} sessions and "
                f"{self.stream_entries} stream entries in {self.passes} pass(es)")


@dataclass
class ImportReport:
    """What an import wrote."""

    keys: int = 0
    sessions: int = 0
    skipped_in_flight: int = 0


class UserData:
    """Export, import and erase one user's data.

    Args:
        store: the assembled store (its settings give the key prefix and the shard count).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys
        self.settings = store.settings

    # -- finding a user's keys and stream entries -----------------------------------------
    async def user_keys(self, user: UserKey) -> dict[str, tuple[str, str]]:
        """Every key holding the user's data, in both layouts (SCAN over every primary):
        name -> (layout, session id; empty for a per-user key)."""
        validate_user_key(user)
        legacy_ids = {_text(f) for f in await self.store.client.hkeys(
            self.keys.legacy_sessions(user))}
        found: dict[str, tuple[str, str]] = {}
        for pattern in self.keys.user_patterns(user):
            async for raw in self.store.client.scan_iter(match=pattern, count=500):
                name = _text(raw)
                where = self.keys.session_of(user, name, legacy_ids)
                if where[0]:
                    found[name] = where
        return dict(sorted(found.items()))

    def _streams(self) -> list[tuple[str, str]]:
        """(stream key, kind) of every shard's persist, summary and dead-letter stream."""
        n = self.settings.async_persister_num
        out: list[tuple[str, str]] = []
        for shard in range(n):
            sk = ShardKeys(self.settings.key_prefix, shard, n)
            out += [(sk.stream, "persist"), (sk.summary, "summary"), (sk.dlq, "dead_letter")]
        return out

    async def stream_entries(self, user: UserKey) -> list[tuple[str, str, str, Any]]:
        """(stream, kind, entry id, decoded entry) of every stream entry of the user."""
        found: list[tuple[str, str, str, Any]] = []
        for stream, kind in self._streams():
            async for entry_id, fields in self._xrange(stream):
                try:
                    data = fields.get(FIELD, b"")
                    entry: Any = decode_job(data) if kind == "summary" else decode_entry(data)
                except DecodeError:
                    continue
                if entry.app == user.app_name and entry.user == user.user_id:
                    found.append((stream, kind, entry_id, entry))
        return found

    async def _xrange(self, stream: str) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
        """Every entry of a stream, in pages."""
        start = "-"
        while True:
            page = await self.store.client.xrange(stream, min=start, count=_BATCH)
            for entry_id, fields in page:
                yield _text(entry_id), dict(fields or {})
            if len(page) < _BATCH:
                return
            start = "(" + _text(page[-1][0])

    # -- export -------------------------------------------------------------------------
    async def export(self, user: UserKey) -> AsyncIterator[dict[str, Any]]:
        """The user's data as export records (see the module docstring), header first."""
        owned = await self.user_keys(user)
        yield {"kind": "header", "format": FORMAT, "app": user.app_name, "user": user.user_id,
               "exported_at": GoTime.now().to_text()}
        groups: dict[tuple[str, str], list[str]] = {}
        for name, (layout, sid) in owned.items():
            groups.setdefault((layout, sid if sid else ""), []).append(name)
        total = 0
        sessions = sorted(k for k in groups if k[1])
        per_user = sorted(k for k in groups if not k[1])
        for layout, sid in [*sessions, *per_user]:
            members = groups[(layout, sid)]
            if not members:
                continue
            records = [r for r in await self._dump(members) if r is not None]
            total += len(records)
            if sid:
                yield {"kind": "session", "layout": layout, "id": sid, "keys": records}
            else:
                yield {"kind": "user", "layout": layout, "keys": records}
        in_flight = await self.stream_entries(user)
        for stream, kind, entry_id, entry in in_flight:
            yield {"kind": "in_flight", "stream": self._strip(stream), "stream_kind": kind,
                   "id": entry_id, "entry": _entry_view(entry)}
        yield {"kind": "end", "sessions": len(sessions), "key_count": total,
               "in_flight": len(in_flight)}

    def _strip(self, name: str) -> str:
        head = f"{self.settings.key_prefix}:" if self.settings.key_prefix else ""
        return name[len(head):] if head and name.startswith(head) else name

    async def _dump(self, names: list[str]) -> list[dict[str, Any] | None]:
        """One record per key (None for a key deleted meanwhile)."""
        out: list[dict[str, Any] | None] = []
        for start in range(0, len(names), _BATCH):
            chunk = names[start:start + _BATCH]
            calls: list[tuple[Any, ...]] = []
            for name in chunk:
                calls += [("cmd", "TYPE", name), ("cmd", "PTTL", name)]
            meta = await self._pipeline(calls)
            kinds = [_text(meta[2 * i]) for i in range(len(chunk))]
            reads: list[tuple[Any, ...]] = []
            for name, kind in zip(chunk, kinds, strict=True):
                command = _READ.get(kind, ("EXISTS",))
                reads.append(("cmd", command[0], name, *command[1:]))
            values = await self._pipeline(reads)
            for i, name in enumerate(chunk):
                kind = kinds[i]
                if kind == "none":
                    out.append(None)
                    continue
                out.append({"key": self._strip(name), "type": kind,
                            "ttl_ms": int(meta[2 * i + 1]), "value": _value(kind, values[i])})
        return out

    # -- import -------------------------------------------------------------------------
    async def load(self, records: Iterable[dict[str, Any]], *, replace: bool = False
                   ) -> ImportReport:
        """Write the keys of export records back (under this store's key prefix).

        Raises:
            SessionExistsError: a key already exists (and ``replace`` is False); nothing of
                that record is written.
            InvalidArgumentError: a record is not an export record.
        """
        report = ImportReport()
        head = f"{self.settings.key_prefix}:" if self.settings.key_prefix else ""
        for record in records:
            kind = record.get("kind")
            if kind in ("header", "end"):
                continue
            if kind == "in_flight":
                report.skipped_in_flight += 1
                continue
            if kind not in ("session", "user"):
                raise InvalidArgumentError(f"not an export record: kind {kind!r}")
            keyed = [(head + k["key"], k) for k in record["keys"]]
            if not replace:
                exists = await self._pipeline([("cmd", "EXISTS", n) for n, _ in keyed])
                taken = [n for (n, _), e in zip(keyed, exists, strict=True) if int(e)]
                if taken:
                    raise SessionExistsError(f"keys exist already: {', '.join(taken[:3])}"
                                             f"{' ...' if len(taken) > 3 else ''}")
            calls: list[tuple[Any, ...]] = []
            for name, k in keyed:
                calls.append(("cmd", "DEL", name))
                calls += _write_calls(name, k)
            await self._pipeline(calls)
            report.keys += len(keyed)
            report.sessions += kind == "session"
        return report

    # -- erase --------------------------------------------------------------------------
    async def erase(
        self,
        user: UserKey,
        *,
        settle_s: float | None = None,
        batch: int = _BATCH,
        on_step: Callable[[str], None] | None = None,
    ) -> EraseReport:
        """Delete every key and stream entry of the user (app state is left alone).

        Entries of the user still pending in a persist group may be in a worker's hands: after
        deleting them, this waits (up to ``settle_s``, default ``2 * lease_ttl_s``) until the
        workers acknowledged them, then sweeps again, so nothing they applied meanwhile
        survives. Safe to rerun after an interruption: every step is idempotent.

        Args:
            user: whose data.
            settle_s: how long to wait for workers to acknowledge the deleted entries.
            batch: keys deleted per pipeline.
            on_step: called after each step (``streams``, then ``keys`` after each batch),
                e.g. for progress.
        """
        validate_user_key(user)
        report = EraseReport()
        step = on_step or (lambda _: None)
        pending = await self._erase_pass(user, report, batch, step)
        if pending:
            report.in_flight_waited = True
            await self._wait_acknowledged(pending, settle_s)
            await self._erase_pass(user, report, batch, step)
        return report

    async def _erase_pass(
        self, user: UserKey, report: EraseReport, batch: int, step: Callable[[str], None]
    ) -> list[tuple[str, str]]:
        """One sweep; returns the (stream, id) of deleted persist entries that were pending."""
        report.passes += 1
        entries = await self.stream_entries(user)
        by_stream: dict[str, list[str]] = {}
        for stream, _, entry_id, entry in entries:
            by_stream.setdefault(stream, []).append(entry_id)
            report.sessions.add(entry.sid)
        pending: list[tuple[str, str]] = []
        for stream, ids in by_stream.items():
            if stream.endswith(":stream"):
                pending += [(stream, i) for i in await self._pending(stream, ids)]
            await self.store.client.xdel(stream, *ids)
            report.stream_entries += len(ids)
        step("streams")
        owned = await self.user_keys(user)
        names = list(owned)
        report.sessions.update(sid for _, sid in owned.values() if sid)
        for start in range(0, len(names), batch):
            replies = await self._pipeline(
                [("cmd", "DEL", n) for n in names[start:start + batch]])
            report.keys += sum(int(r) for r in replies)
            step("keys")
        return pending

    async def _pending(self, stream: str, ids: list[str]) -> list[str]:
        """Which of ``ids`` are pending in the stream's persist group."""
        wanted = set(ids)
        try:
            rows = await self.store.client.xpending_range(stream, "persist", min="-", max="+",
                                                          count=100_000)
        except Exception:  # no group yet: nothing was delivered
            return []
        return [_text(r["message_id"]) for r in rows if _text(r["message_id"]) in wanted]

    async def _wait_acknowledged(self, pending: list[tuple[str, str]],
                                 settle_s: float | None) -> None:
        deadline = time.monotonic() + (2 * self.settings.lease_ttl_s if settle_s is None
                                       else settle_s)
        delay = 0.02
        while time.monotonic() < deadline:
            left = [p for p in pending if await self._pending(p[0], [p[1]])]
            if not left:
                return
            pending = left
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _pipeline(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        if not calls:
            return []
        return await self.store.scripts.run_pipeline(self.store.client, calls)


#: The read command (and its arguments after the key) of each type a user's key may have.
_READ: dict[str, tuple[Any, ...]] = {
    "string": ("GET",),
    "hash": ("HGETALL",),
    "set": ("SMEMBERS",),
    "zset": ("ZRANGE", 0, -1, "WITHSCORES"),
}


def _pairs(reply: Any) -> list[tuple[bytes, bytes]]:
    if isinstance(reply, dict):
        return list(reply.items())
    return [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]


def _value(kind: str, reply: Any) -> Any:
    if kind == "string":
        return _enc(reply)
    if kind == "hash":
        return [[_enc(f), _enc(v)] for f, v in sorted(_pairs(reply))]
    if kind == "set":
        return sorted(_enc(m) for m in reply)
    if kind == "zset":
        return [[_enc(m), _text(s)] for m, s in _pairs(reply)]
    raise DecodeError(f"unexpected Redis type {kind} among a user's keys")


def _write_calls(name: str, record: dict[str, Any]) -> list[tuple[Any, ...]]:
    kind, value = record["type"], record["value"]
    if kind == "string":
        calls: list[tuple[Any, ...]] = [("cmd", "SET", name, _dec(value))]
    elif kind == "hash":
        flat = [x for f, v in value for x in (_dec(f), _dec(v))]
        calls = [("cmd", "HSET", name, *flat)]
    elif kind == "set":
        calls = [("cmd", "SADD", name, *[_dec(m) for m in value])]
    elif kind == "zset":
        flat = [x for m, s in value for x in (s, _dec(m))]
        calls = [("cmd", "ZADD", name, *flat)]
    else:
        raise InvalidArgumentError(f"unsupported key type {kind!r} in the export")
    if int(record.get("ttl_ms", -1)) > 0:
        calls.append(("cmd", "PEXPIRE", name, int(record["ttl_ms"])))
    return calls


def _entry_view(entry: Any) -> Any:
    """A stream entry as JSON-friendly values (bytes as text, or base64 when not UTF-8)."""
    return _plain(msgspec.to_builtins(entry, builtin_types=(bytes,)))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return _enc(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
