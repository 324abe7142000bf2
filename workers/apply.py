"""Applying a batch of stream entries: grouped by session, one script call per session run.

A session's entries are cut into runs (consecutive events form one run; a track event or a
state patch is a run of its own) and applied run by run, so per-session order holds. The
first run of every session goes out in one pipeline, then the second, and so on: at most
one apply call per session per pipeline.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError

from sessionstreams.common.connection import TRANSIENT_ERRORS
from sessionstreams.common.entries import EntryHeader, StreamEntry
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.logs import get_logger
from sessionstreams.common.models import Key
from sessionstreams.common.outcomes import FINAL_STATUSES
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.store import Store
from sessionstreams.workers.faults import Faults

#: Statuses that are a final outcome (the request record holds it).
FINAL = FINAL_STATUSES

log = get_logger("sessionstreams.worker")

#: Errors of Redis itself, not of an entry: the batch is re-read later, never dead-lettered
#: (an entry failing for want of memory would be lost to the DLQ for no fault of its own).
INFRASTRUCTURE = (*TRANSIENT_ERRORS, RedisOutOfMemoryError)


class State(enum.Enum):
    """Where an item stands after an apply pass."""

    DONE = "done"  # final outcome reached: acknowledge
    FAILED = "failed"  # a data failure: count it, hold the session
    HELD = "held"  # not attempted: an earlier entry of its session is not through


@dataclass
class Item:
    """One stream entry in the worker's hands."""

    entry_id: str
    raw: bytes
    entry: StreamEntry | None  # None: undecodable (poison)
    header: EntryHeader | None = None  # what an undecodable entry still tells
    state: State = State.HELD
    error: str = ""
    failures: int = 0
    retry_at: float = field(default=0.0)
    outcome: str = ""  # the final status once DONE (applied, duplicate, session_gone, ...)
    erased: bool = False  # deleted from the stream while pending (a user's data erased)

    @property
    def key(self) -> Key | None:
        """The session of the entry (None when not even its header reads)."""
        if self.entry is not None:
            return self.entry.key
        return self.header.key if self.header is not None else None


def entry_problem(item: Item, routes: Collection[str]) -> str | None:
    """Why an entry cannot be applied at all (then it fails until dead-lettered), or None."""
    e = item.entry
    if e is None:
        return "undecodable stream entry"
    if e.route not in routes:
        return f"invalid:unknown route {e.route!r}"
    payload = {"event": e.event, "track": e.track, "state": e.state}.get(e.kind)
    if payload is None:
        return f"invalid:{e.kind} entry without its payload"
    return None


class LeaseLostError(Exception):
    """The worker's lease on the shard ended; the batch in hand must be dropped."""


def _opts(entry: StreamEntry) -> dict[str, Any]:
    return {"ttl_ms": entry.ttl_ms, "storage_limit": entry.storage_limit,
            "user_state_ttl_ms": entry.user_state_ttl_ms, "incarnation": entry.incarnation}


def _held(run: list[Item], late_user_state: bool) -> set[str]:
    """Request ids of the run's entries with state written after the script (app state; user
    state when ``late_user_state``): the script records them as held, so their writers see
    them applied once this worker wrote that state and acknowledged them."""
    held: set[str] = set()
    for item in run:
        entry = item.entry
        assert entry is not None
        assert entry.event is not None
        if entry.app_pairs or (late_user_state and entry.event.user_pairs):
            held.add(entry.rid)
    return held


def _runs(items: list[Item]) -> list[list[Item]]:
    runs: list[list[Item]] = []
    for item in items:
        assert item.entry is not None
        if runs and item.entry.kind == "event" and runs[-1][0].entry.kind == "event":  # type: ignore[union-attr]
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


class Applier:
    """Applies batches for one worker (shared by all its shards)."""

    def __init__(
        self,
        client: Any,
        scripts: Scripts,
        keys: KeySpace,
        engines: dict[str, Any],  # route -> HashIdxEngine or the legacy engine
        faults: Faults,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.keys = keys
        self.engines = engines
        self.faults = faults

    @classmethod
    def for_store(cls, store: Store, faults: Faults) -> Applier:
        """An applier with both engines (entries carry the route of their session)."""
        return cls(store.client, store.scripts, store.keys, dict(store.engines.items()), faults)

    async def apply(self, items: list[Item], check_lease: Callable[[], None]) -> None:
        """Apply ``items`` (already in stream order); set each item's state.

        Raises:
            LeaseLostError: from ``check_lease``, before any apply call past the deadline.
            redis ConnectionError / TimeoutError: the batch must be re-read from the PEL.
        """
        sessions: dict[Key | None, list[Item]] = {}
        for item in items:
            if item.erased:  # deleted from the stream while pending: nothing to apply
                item.state, item.outcome = State.DONE, "erased"
                continue
            item.state, item.error = State.HELD, ""
            problem = entry_problem(item, self.engines)
            if problem is not None:
                item.state, item.error = State.FAILED, problem
            sessions.setdefault(item.key, []).append(item)
        queues: dict[Key | None, list[list[Item]]] = {}
        for key, group in sessions.items():
            # An entry that cannot be applied stops its session here: what follows it stays
            # HELD until it is dead-lettered (gap-free order).
            usable = []
            for item in group:
                if item.state is State.FAILED:
                    break
                usable.append(item)
            if key is not None and usable:
                queues[key] = _runs(usable)
        while queues:
            keys = list(queues)
            half = (len(keys) + 1) // 2
            for part, chunk in enumerate((keys[:half], keys[half:])):
                if chunk:
                    check_lease()
                    await self._round([queues[k][0] for k in chunk])
                if part == 0:
                    await self.faults.hit("mid_batch")
            # A session goes on only while everything of it went through; the rest of a
            # stopped session stays HELD (neither applied nor acknowledged).
            survivors: dict[Key | None, list[list[Item]]] = {}
            for k, runs in queues.items():
                done = runs.pop(0)
                if runs and all(i.state is State.DONE for i in done):
                    survivors[k] = runs
            queues = survivors

    async def _write_app_state(self, runs: list[list[Item]]) -> None:
        """App state lives in another slot: written after the session script, for the entries
        it applied (or had applied). A refused entry changes nothing; a crash before this
        write leaves the entry unacknowledged, and its redelivery (``duplicate``) writes it."""
        calls: list[tuple[Any, ...]] = []
        for run in runs:
            for item in run:
                e = item.entry
                if (e is not None and e.app_pairs and item.state is State.DONE
                        and item.outcome in ("applied", "duplicate")):
                    args: list[Any] = [e.app_state_ttl_ms]
                    for name, value in e.app_pairs:
                        args += [name, value]
                    calls.append(("script", "hash_set", [self.keys.app_state(e.app)], args))
        if calls:
            await self.faults.hit("before_app_state")
            for result in await self.scripts.run_pipeline(self.client, calls):
                if isinstance(result, bytes):  # the key's type changed since it was checked
                    log.error("app state not written", error=result.decode(errors="replace"))

    async def _check_other_slots(self, run: list[Item]) -> str | None:
        """Before the script: the keys of other slots the run writes after it (app state,
        user state of the other layout) must be usable; else the run's ``invalid:`` status."""
        entry = run[0].entry
        assert entry is not None
        engine = self.engines[entry.route]
        problem: str | None = await engine.prepare_append(
            entry.key, [i.entry.event for i in run])  # type: ignore[union-attr]
        if problem is None and any(i.entry.app_pairs for i in run):  # type: ignore[union-attr]
            problem = await self.engines["hashidx"].hash_problem([self.keys.app_state(entry.app)])
        return problem

    async def _round(self, batch: list[list[Item]]) -> None:
        """One pipeline: the next run of each session."""
        calls: list[tuple[Any, ...]] = []
        piped: list[list[Item]] = []
        direct: list[list[Item]] = []
        any_held = False
        for run in batch:
            entry = run[0].entry
            assert entry is not None
            if entry.kind != "event":
                direct.append(run)
                continue
            try:
                problem = await self._check_other_slots(run)
                if problem is None:
                    events = [i.entry.event for i in run]  # type: ignore[union-attr]
                    engine = self.engines[entry.route]
                    held = _held(run, engine.user_state_after_script(entry.key))
                    any_held = any_held or bool(held)
                    call = engine.append_call(entry.key, events, **_opts(entry), held=held)
            except INFRASTRUCTURE:
                raise
            except Exception as exc:  # whatever is wrong with it is this run's failure
                self._settle(run, exc)
                continue
            if problem is not None:
                self._settle(run, [problem] * len(run))
                continue
            calls.append(call)
            piped.append(run)
        if calls:
            results = await self.scripts.run_pipeline(self.client, calls, raise_errors=False)
            if any_held:
                await self.faults.hit("before_other_slots")
            for run, result in zip(piped, results, strict=True):
                if isinstance(result, list):
                    result = await self._finish(run, result)
                self._settle(run, result)
            await self._write_app_state(piped)
        for run in direct:
            try:
                status = await self._apply_single(run[0])
            except INFRASTRUCTURE:
                raise
            except Exception as exc:  # any other error is this entry's failure
                self._settle(run, exc)
            else:
                self._settle(run, [status])

    async def _finish(self, run: list[Item], result: list[Any]) -> Any:
        """The engine's step after the script (other slots, migrated sessions); an error
        other than Redis's is the run's failure (retried, then dead-lettered)."""
        entry = run[0].entry
        assert entry is not None
        try:
            return await self.engines[entry.route].finish_append(
                entry.key, [i.entry.event for i in run],  # type: ignore[union-attr]
                [s.decode() if isinstance(s, bytes) else str(s) for s in result],
                **_opts(entry),
            )
        except INFRASTRUCTURE:
            raise
        except Exception as exc:
            return exc

    async def _apply_single(self, item: Item) -> Any:
        e = item.entry
        assert e is not None
        engine = self.engines[e.route]
        if e.kind == "track" and e.track is not None:
            t = e.track
            return await engine.append_track(
                e.key, rid=t.rid, track=t.track, track_json=t.track_json, ts_ns=t.ts_ns,
                track_ttl_s=t.track_ttl_s, persist=t.persist, producer_ts=e.producer_ts,
                session_ttl_ms=e.ttl_ms, incarnation=e.incarnation,
            )
        if e.kind == "state" and e.state is not None:
            return await engine.update_state(
                e.key, rid=e.state.rid, patch_json=e.state.patch_json,
                producer_ts=e.producer_ts, ttl_ms=e.ttl_ms, incarnation=e.incarnation,
            )
        return f"invalid:entry kind {e.kind} without its payload"

    @staticmethod
    def _settle(run: list[Item], result: Any) -> None:
        if isinstance(result, INFRASTRUCTURE):
            raise result
        if isinstance(result, Exception):
            run[0].state, run[0].error = State.FAILED, f"{type(result).__name__}: {result}"
            return
        statuses = [s.decode() if isinstance(s, bytes) else str(s) for s in result]
        for item, status in zip(run, statuses, strict=True):
            if status in FINAL:
                item.state, item.outcome = State.DONE, status
                continue
            if len(run) > 1:
                # A multi-entry call fails as a whole before writing: retry one by one to
                # find (and count against) the entry that is at fault.
                item.state, item.error = State.HELD, status
            else:
                item.state, item.error = State.FAILED, status
            return

