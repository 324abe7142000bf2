"""Async persistence on the producer side: entries onto shard streams, receipts, waits.

Every write that changes an existing session becomes one stream entry on the session's shard,
put there by one check-and-XADD script (shard count, entry format, pause, backlog cap). The
producer remembers its own pending receipts so that reads in this process see its writes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sessionstreams.common.connection import BACKOFF_CAP_S
from sessionstreams.common.durable import call_and_wait
from sessionstreams.common.entries import StreamEntry, encode_entry
from sessionstreams.common.errors import (
    BackpressureError,
    ConfigError,
    DeadLetteredError,
    PersistLostError,
    PersistTimeoutError,
    PersistUncertainError,
    SessionNotFoundError,
    StoreTimeoutError,
)
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.models import Key, UserKey
from sessionstreams.common.outcomes import RECORD_CAP, Outcome, is_held
from sessionstreams.common.receipt import Receipt
from sessionstreams.common.scripts import Arg, Scripts
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import (
    ENTRY_FORMAT,
    PERSIST_GROUP,
    ShardKeys,
    check_conf,
    shard_of,
    stream_id,
)
from sessionstreams.common.tracing import current_traceparent

#: Most entries one grouped stream_add carries (a larger queue leaves in several calls).
GROUP_MAX = 256
#: A wait looks for lost entries after this long, then at this interval.
LOSS_CHECK_S = 0.25
#: An entry is lost when it was missing from its stream, with no outcome, on two checks this
#: far apart (a dead letter is acknowledged a moment before its outcome is recorded).
LOSS_CONFIRM_S = 0.4
#: Receipts one loss check looks at (the oldest waiting; a big flush is checked in turns).
LOSS_CHECK_MAX = 100


class _Queued(NamedTuple):
    """Entries waiting for their shard's call in flight, and their writer's future."""

    encoded: list[bytes]
    waiter: asyncio.Future[list[Any]]


def outcome_error(receipt: Receipt, outcome: str) -> Exception | None:
    """The exception a waiter raises for a final outcome, or None when it succeeded."""
    if outcome == Outcome.APPLIED:
        return None
    if outcome == Outcome.DEAD_LETTERED:
        return DeadLetteredError(f"write {receipt.rid} of {receipt.key} was dead-lettered")
    if outcome in (Outcome.SESSION_GONE, Outcome.SUPERSEDED):
        return SessionNotFoundError(
            f"write {receipt.rid} dropped: session {receipt.key} was deleted or re-created"
        )
    return DeadLetteredError(f"write {receipt.rid} of {receipt.key} failed: {outcome}")


class StreamWriter:
    """Puts entries on shard streams and tracks this process's pending receipts."""

    def __init__(self, client: Any, keys: KeySpace, scripts: Scripts, settings: Settings) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.settings = settings
        self.shards = settings.async_persister_num
        self._shard_keys = [
            ShardKeys(settings.key_prefix, i, self.shards) for i in range(self.shards)
        ]
        self._pending: dict[Key, dict[str, Receipt]] = {}
        self._conf_checked = False
        self._conf_lock = asyncio.Lock()
        # Group sends: while a shard has a stream_add in flight, later entries for the shard
        # queue here and go out together in the next call (see _send).
        self._in_flight = [False] * self.shards
        self._queued: list[deque[_Queued]] = [deque() for _ in range(self.shards)]
        self._senders: set[asyncio.Task[None]] = set()  # strong references while they run
        # What one stream_add may take: every attempt's socket timeout, the backoff between
        # them, the backpressure wait and a durable WAIT. A queued write waits no longer.
        s = settings
        self._call_budget_s = (s.socket_timeout_s * (s.client_retries + 1)
                               + BACKOFF_CAP_S * s.client_retries + s.backpressure_wait_s
                               + (s.durable_wait_timeout_s if s.durable_min_replicas else 0.0))
        # rid -> when its entry was first found missing from its stream with no outcome.
        self._missing: dict[str, float] = {}

    async def check_conf(self) -> None:
        """Refuse a shard count or entry format other than the one in force (once).

        Concurrent first writers wait for one check and then go on in the order they came
        (the lock is fair), so their entries reach the streams in the order of their calls.
        """
        if self._conf_checked:
            return
        async with self._conf_lock:
            if not self._conf_checked:
                await check_conf(self.client, self.scripts, self.settings.key_prefix,
                                 self.shards)
                self._conf_checked = True

    # -- writing ------------------------------------------------------------------------
    async def submit(self, key: Key, entries: Sequence[StreamEntry]) -> list[Receipt]:
        """Append ``entries`` (all of one session, in order) to the session's shard stream.

        Raises:
            BackpressureError: the backlog stayed over its cap for ``backpressure_wait_s``.
            ConfigError: the shard runs with another shard count or entry format.
            PersistUncertainError: fewer than ``durable_min_replicas`` replicas confirmed.
        """
        if not self._conf_checked:  # checked once per process
            await self.check_conf()
        if self.settings.enable_tracing:
            entries = _with_traceparent(entries)
        shard = shard_of(key, self.shards)
        reply = await self._send(shard, list(map(encode_entry, entries)))
        pending = self._pending.setdefault(key, {})
        receipts = []
        for eid, e in zip(reply[1:], entries, strict=True):
            r = Receipt(key, shard, _text(eid), e.rid)
            pending[r.rid] = r
            receipts.append(r)
        return receipts

    async def _send(self, shard: int, encoded: list[bytes]) -> list[Any]:
        """Add ``encoded`` (in order) to ``shard``'s stream; returns ``[b"ok", id...]``.

        With no call in flight on the shard the entries go out at once. Otherwise they wait
        for it and leave with everything queued meanwhile, in one call: concurrent writers
        share round trips and script calls instead of each paying for its own. Entries keep
        the order of the calls, so a session's writes reach the stream in the order they were
        made; each caller returns once its own entries are in the stream.
        """
        if self._in_flight[shard]:
            return await self._wait_queued(shard, encoded)
        self._in_flight[shard] = True
        try:
            return await self._send_now(shard, encoded)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self._fail_queued(shard, exc)
            raise
        finally:
            if self._queued[shard]:
                task = asyncio.get_running_loop().create_task(self._send_queued(shard))
                self._senders.add(task)
                task.add_done_callback(self._senders.discard)
            else:
                self._in_flight[shard] = False

    async def _wait_queued(self, shard: int, encoded: list[bytes]) -> list[Any]:
        """Wait behind the shard's call in flight, at most what a call of one's own may
        take: Redis may hang, and the wait must not add a second call's time to the first."""
        waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        item = _Queued(encoded, waiter)
        self._queued[shard].append(item)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), self._call_budget_s)
        except TimeoutError:
            waiter.cancel()
            if item in self._queued[shard]:
                self._queued[shard].remove(item)
                raise StoreTimeoutError(
                    f"shard {shard}: the call ahead did not finish within "
                    f"{self._call_budget_s:.1f}s; these entries were not sent") from None
            raise StoreTimeoutError(
                f"shard {shard}: no answer within {self._call_budget_s:.1f}s; the entries may "
                "still have been added (resend the same events: an event id is stored once)"
            ) from None

    def _fail_queued(self, shard: int, exc: BaseException) -> None:
        """The call ahead failed on the connection: the writers queued behind it fail with it
        at once (their entries were not sent) instead of each paying another timeout."""
        queue = self._queued[shard]
        while queue:
            item = queue.popleft()
            if not item.waiter.done():
                item.waiter.set_exception(exc)

    async def _send_queued(self, shard: int) -> None:
        """Send what queued behind a call, in calls of at most ``GROUP_MAX`` entries."""
        queue = self._queued[shard]
        try:
            while queue:
                group: list[_Queued] = []
                size = 0
                while queue and (not group or size + len(queue[0].encoded) <= GROUP_MAX):
                    item = queue.popleft()
                    group.append(item)
                    size += len(item.encoded)
                try:
                    reply = await self._send_now(
                        shard, [e for item in group for e in item.encoded])
                except Exception as exc:  # every writer of the group gets the failure
                    for item in group:
                        if not item.waiter.done():
                            item.waiter.set_exception(exc)
                    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                        self._fail_queued(shard, exc)
                    continue
                except BaseException:  # cancelled (loop shutdown): so are the writers
                    for item in group:
                        item.waiter.cancel()
                    raise
                start = 1
                for item in group:
                    end = start + len(item.encoded)
                    if not item.waiter.done():
                        item.waiter.set_result([reply[0], *reply[start:end]])
                    start = end
        finally:
            for item in queue:  # only left when this task was cancelled (loop shutdown)
                if not item.waiter.done():
                    item.waiter.cancel()
            queue.clear()
            self._in_flight[shard] = False

    async def _send_now(self, shard: int, encoded: list[bytes]) -> list[Any]:
        """One stream_add of ``encoded`` on ``shard``; a refusal for backpressure is retried."""
        sk = self._shard_keys[shard]
        reply = await self._add(sk, encoded)
        if reply[0] != b"ok":
            reply = await self._add_with_backpressure(sk, encoded, reply)
        return reply

    async def _add_with_backpressure(
        self, sk: ShardKeys, encoded: list[bytes], reply: list[Any]
    ) -> list[Any]:
        """Retry an add refused for a pause or the backlog cap until ``backpressure_wait_s``."""
        deadline = time.monotonic() + self.settings.backpressure_wait_s
        delay = 0.005
        while True:
            status = _text(reply[0])
            if status == "ok":
                return list(reply)
            if status == "config":
                raise ConfigError(
                    f"shard {sk.shard} is configured for {_text(reply[1])} shards and entry "
                    f"format {_text(reply[2])}; this producer uses {self.shards} and "
                    f"{ENTRY_FORMAT} (async_persister_num must match the workers')"
                )
            if time.monotonic() + delay > deadline:
                what = "paused for a resize" if status == "paused" else "over its backlog cap"
                raise BackpressureError(
                    f"shard {sk.shard} is {what} ({self.settings.stream_backlog_max} entries); "
                    f"waited {self.settings.backpressure_wait_s}s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
            reply = await self._add(sk, encoded)

    async def _add(self, sk: ShardKeys, encoded: list[bytes]) -> list[Any]:
        """One stream_add call (loading the script when missing), with WAIT when durable."""
        args: list[Arg] = [self.shards, ENTRY_FORMAT, self.settings.stream_backlog_max, *encoded]
        n = self.settings.durable_min_replicas
        if n <= 0:
            reply: list[Any] = await self.scripts.call(
                self.client, "stream_add", [sk.stream, sk.conf], args
            )
            return reply
        # WAIT counts the writes of its own connection: it runs right after the script, on
        # the same connection of the shard's node (sessionstreams.common.durable).
        reply, acked = await call_and_wait(
            self.client, self.scripts, "stream_add", [sk.stream, sk.conf], args,
            replicas=n, timeout_ms=int(self.settings.durable_wait_timeout_s * 1000),
        )
        if _text(reply[0]) == "ok" and int(acked) < n:
            raise PersistUncertainError(
                f"only {acked} of {n} replicas confirmed entries {reply[1:]} of shard {sk.shard}"
            )
        return list(reply)

    # -- waiting ------------------------------------------------------------------------
    def pending_keys(self, user: UserKey) -> list[Key]:
        """Sessions of ``user`` with pending receipts in this process."""
        owner = (user.app_name, user.user_id)
        return [k for k in self._pending if (k.app_name, k.user_id) == owner]

    def forget_session(self, key: Key) -> None:
        """Stop tracking a deleted session's receipts (its writes will be dropped)."""
        self._pending.pop(key, None)

    def pending_for(self, key: Key) -> list[Receipt]:
        """This process's receipts of ``key`` not yet seen persisted."""
        return list(self._pending.get(key, {}).values())

    async def wait_session(self, key: Key, timeout: float) -> None:
        """Wait for every pending receipt of one session (read-your-writes)."""
        receipts = self.pending_for(key)
        if receipts:
            await self.wait(receipts, timeout, raise_failures=False)

    async def flush(self, timeout: float | None) -> None:
        """Wait for every pending receipt of this process."""
        receipts = [r for per_key in self._pending.values() for r in per_key.values()]
        if receipts:
            await self.wait(receipts, timeout if timeout is not None else 3600.0)

    async def wait(
        self, receipts: Sequence[Receipt], timeout: float, *, raise_failures: bool = True
    ) -> dict[str, str]:
        """Wait until each receipt reached an outcome; raise for a failed one (if asked).

        Returns:
            rid -> outcome for every receipt.
        """
        deadline = time.monotonic() + timeout
        next_loss_check = time.monotonic() + LOSS_CHECK_S
        todo = {r.rid: r for r in receipts}
        done: dict[str, str] = {}
        delay = 0.001
        while todo:
            try:  # a poll never outlasts the deadline (Redis may be slow or paused)
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                    found = await self._outcomes(list(todo.values()))
            except TimeoutError:
                found = {}
                if time.monotonic() < deadline:
                    raise  # a command's own timeout (StoreTimeoutError is raised above us)
            for rid, outcome in found.items():
                receipt = todo.pop(rid)
                done[rid] = outcome
                self._forget(receipt)
                error = outcome_error(receipt, outcome)
                if error is not None and raise_failures:
                    raise error
            if not todo:
                break
            if time.monotonic() >= next_loss_check:
                next_loss_check = time.monotonic() + LOSS_CHECK_S
                await self._report_lost(todo, deadline)
            if time.monotonic() >= deadline:
                first = next(iter(todo.values()))
                raise PersistTimeoutError(
                    f"{len(todo)} write(s) not persisted within {timeout}s "
                    f"(e.g. {first.rid} on shard {first.shard}, entry {first.entry_id}); "
                    "are workers running?"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        return done

    async def _report_lost(self, todo: dict[str, Receipt], deadline: float) -> None:
        """Raise PersistLostError (once: they are forgotten) for receipts whose entry left its
        stream without reaching an outcome, seen on two checks LOSS_CONFIRM_S apart.

        An entry leaves its stream only after its outcome is recorded, unless Redis lost it.
        """
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                gone = await self._gone_without_outcome(
                    list(itertools.islice(todo.values(), LOSS_CHECK_MAX)))
        except TimeoutError:
            return
        now = time.monotonic()
        gone_rids = {r.rid for r in gone}
        for rid in [rid for rid in self._missing if rid in todo and rid not in gone_rids]:
            del self._missing[rid]
        lost = [r for r in gone if now - self._missing.setdefault(r.rid, now) >= LOSS_CONFIRM_S]
        if not lost:
            return
        for receipt in lost:
            todo.pop(receipt.rid, None)
            self._missing.pop(receipt.rid, None)
            self._forget(receipt)
        first = lost[0]
        raise PersistLostError(
            f"{len(lost)} acknowledged write(s) lost by Redis before they were applied (e.g. "
            f"{first.rid} of {first.key} on shard {first.shard}, entry {first.entry_id}): "
            "gone from the stream with no outcome (a restart without persistence or a "
            "failover before replication); they will not be applied",
            tuple(lost),
        )

    async def _gone_without_outcome(self, receipts: Sequence[Receipt]) -> list[Receipt]:
        """Receipts whose entry is not in its stream and whose write has no outcome."""
        calls = [("cmd", "XRANGE", self._shard_keys[r.shard].stream, r.entry_id, r.entry_id)
                 for r in receipts if 0 <= r.shard < self.shards]
        found = await self.scripts.run_pipeline(self.client, calls)
        absent = [r for r, reply in zip(receipts, found, strict=True) if not reply]
        if not absent:
            return []
        outcomes = await self._outcomes(absent)  # asked after the stream: no race with a trim
        return [r for r in absent if r.rid not in outcomes]

    async def _outcomes(self, receipts: Sequence[Receipt]) -> dict[str, str]:
        by_key: dict[Key, list[Receipt]] = {}
        for r in receipts:
            by_key.setdefault(r.key, []).append(r)
        calls: list[tuple[Any, ...]] = []
        order: list[list[Receipt]] = []
        for key, group in by_key.items():
            rids = [r.rid for r in group]
            for record in (self.keys.applied(key), self.keys.legacy_applied(key)):
                calls.append(("cmd", "ZMSCORE", record, *rids))
                order.append(group)
        replies = await self.scripts.run_pipeline(self.client, calls)
        out: dict[str, str] = {}
        held: dict[str, Receipt] = {}
        for group, scores in zip(order, replies, strict=True):
            for receipt, score in zip(group, scores, strict=True):
                if score is None or receipt.rid in out:
                    continue
                if is_held(score):
                    held[receipt.rid] = receipt
                else:
                    out[receipt.rid] = Outcome.from_score(score).value
        missing = [r for r in receipts if r.rid not in out and r.rid not in held]
        if missing:
            out.update(await self._evicted(missing))
        if held:  # applied; its app state is written once the worker acknowledged the entry
            out.update(await self._acknowledged(list(held.values())))
        return out

    async def _evicted(self, receipts: Sequence[Receipt]) -> dict[str, str]:
        """Outcomes that left a full request record (more than its cap of newer writes).

        Such a write reached its outcome when its stream entry was delivered and is no longer
        pending (workers acknowledge only after the outcome is recorded); it is reported
        ``applied``, the outcome of every write but a dropped or dead-lettered one.
        """
        keys = list({r.key: None for r in receipts})
        calls: list[tuple[Any, ...]] = []
        for key in keys:
            calls.append(("cmd", "ZCARD", self.keys.applied(key)))
            calls.append(("cmd", "ZCARD", self.keys.legacy_applied(key)))
        cards = await self.scripts.run_pipeline(self.client, calls)
        full_keys = {
            key for i, key in enumerate(keys)
            if max(int(cards[2 * i]), int(cards[2 * i + 1])) >= RECORD_CAP
        }
        return await self._acknowledged([r for r in receipts if r.key in full_keys])

    async def _acknowledged(self, receipts: Sequence[Receipt]) -> dict[str, str]:
        """``applied`` for each receipt whose stream entry was delivered and acknowledged."""
        out: dict[str, str] = {}
        horizons: dict[int, tuple[tuple[int, int], tuple[int, int] | None]] = {}
        for receipt in receipts:
            if receipt.shard not in horizons:
                horizons[receipt.shard] = await _horizon(
                    self.client, self._shard_keys[receipt.shard].stream)
            delivered, oldest_pending = horizons[receipt.shard]
            entry = stream_id(receipt.entry_id)
            if entry <= delivered and (oldest_pending is None or entry < oldest_pending):
                out[receipt.rid] = "applied"
        return out

    def _forget(self, receipt: Receipt) -> None:
        self._missing.pop(receipt.rid, None)
        per_key = self._pending.get(receipt.key)
        if per_key is not None:
            per_key.pop(receipt.rid, None)
            if not per_key:
                del self._pending[receipt.key]


def _with_traceparent(entries: Sequence[StreamEntry]) -> Sequence[StreamEntry]:
    """The entries carrying the current span's W3C traceparent, for the worker to continue."""
    traceparent = current_traceparent()
    if not traceparent:
        return entries
    return [msgspec.structs.replace(e, traceparent=traceparent) for e in entries]


async def _horizon(
    client: Any, stream: str
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The persist group's last-delivered id and its oldest pending id (None: none pending).

    An entry at or before the first and before the second was delivered and acknowledged.
    """
    delivered = (0, 0)
    for g in await client.xinfo_groups(stream):
        if _text(g.get("name", b"")) == PERSIST_GROUP:
            delivered = stream_id(_text(g.get("last-delivered-id", b"0-0")))
    summary = await client.xpending(stream, PERSIST_GROUP)
    low = summary.get("min") if summary.get("pending") else None
    return delivered, (stream_id(_text(low)) if low else None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
