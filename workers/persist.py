"""The consume loop of one shard: read, decode, apply, acknowledge, dead-letter.

Gap-free apply: an entry of session S is applied only after every lower-id entry of S in the
shard was applied, dropped with a recorded outcome, or dead-lettered. New entries enter the
pending list only through the lease-checked read script; after taking the shard and after any
error the consumer first pages through its pending list; a failed entry holds the later
entries of its session (in memory, unacknowledged) until it is applied or dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sessionstreams.common.compat import ROUTES
from sessionstreams.common.connection import TRANSIENT_ERRORS
from sessionstreams.common.entries import FIELD, decode_entry, decode_entry_header
from sessionstreams.common.errors import DecodeError
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.logs import get_logger, session_fields
from sessionstreams.common.models import Key
from sessionstreams.common.outcomes import Outcome
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import PERSIST_GROUP, ShardKeys
from sessionstreams.workers.apply import INFRASTRUCTURE, Applier, Item, LeaseLostError, State
from sessionstreams.workers.faults import Faults
from sessionstreams.workers.leases import Lease
from sessionstreams.workers.observe import NO_HOOKS, ConsumerHooks

log = get_logger("sessionstreams.worker")

GONE_RECORD_TTL_MS = 86_400_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ShardConsumer:
    """Consumes one shard while this worker holds its lease."""

    def __init__(
        self,
        *,
        shard_keys: ShardKeys,
        lease: Lease,
        client: Any,
        stream_client: Any,
        scripts: Scripts,
        keys: KeySpace,
        applier: Applier,
        settings: Settings,
        faults: Faults,
        worker_id: str,
        hooks: ConsumerHooks = NO_HOOKS,
    ) -> None:
        self.sk = shard_keys
        self.lease = lease
        self.client = client
        self.stream_client = stream_client
        self.scripts = scripts
        self.keys = keys
        self.applier = hooks.around(applier)  # tracing, metrics, log binding
        self.hooks = hooks
        self.settings = settings
        self.faults = faults
        self.consumer = str(shard_keys.shard)  # the same name for every owner: one PEL
        self.stop = asyncio.Event()
        self.held: dict[Key, list[Item]] = {}
        self.poison: list[Item] = []
        self.log = log.bind(shard=shard_keys.shard, worker=worker_id)
        self.applied = 0

    # -- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until told to stop or the lease is lost; finish the batch in hand."""
        cursor: str | None = "0"
        backoff = 0.05
        while not self.stop.is_set():
            try:
                cursor = await self._step(cursor)
                backoff = 0.05
            except LeaseLostError:
                self.log.warning("lease lost; dropping the batch in hand")
                return
            except (*INFRASTRUCTURE, OSError) as exc:
                self.log.warning("redis error; re-reading the pending list", error=str(exc))
                cursor = await self._restart(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:  # a bug, not bad data (each entry's failures are its own)
                self.log.exception("consumer step failed; re-reading the pending list")
                cursor = await self._restart(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _restart(self, backoff: float) -> str:
        """Forget what is in hand and start over from the pending list, after a pause."""
        self.held.clear()
        self.poison.clear()
        await asyncio.sleep(backoff)
        return "0"

    def _check_lease(self) -> None:
        if not self.lease.valid:
            raise LeaseLostError

    async def _step(self, cursor: str | None) -> str | None:
        """One pass: retry held sessions, read a batch, apply it. Returns the PEL cursor."""
        await self._retry_held()
        self._check_lease()
        await self.faults.hit("before_read")
        start = cursor if cursor is not None else ">"
        reply = await self.scripts.call(
            self.client, "stream_read", [self.sk.lease, self.sk.stream],
            [self.lease.token, self.consumer, self.settings.worker_batch_size, start,
             PERSIST_GROUP],
        )
        status = _text(reply[0])
        if status == "lost":
            raise LeaseLostError
        if status == "idle":
            await self._wait_for_data(_text(reply[1]))
            return None
        raw_entries = reply[1]
        if cursor is not None and not raw_entries:
            return None  # the pending list is exhausted: switch to new entries
        items = [self._item(raw) for raw in raw_entries]
        if cursor is not None:
            self.hooks.redelivered(len(items))
        await self._process(items)
        if cursor is not None:
            return items[-1].entry_id
        if len(items) < self.settings.worker_batch_size and self.settings.worker_linger_ms:
            # Caught up: let the next entries gather instead of applying them one by one as
            # they trickle in (a round per entry costs the most worker CPU per entry).
            await asyncio.sleep(self.settings.worker_linger_ms / 1000)
        return None

    async def _wait_for_data(self, last_id: str) -> None:
        timeout_s = 0.05 if self.held else self.settings.block_ms / 1000
        try:
            woke = await self.stream_client.xread(
                {self.sk.stream: last_id}, count=1, block=max(int(timeout_s * 1000), 1)
            )
            if woke and self.settings.worker_linger_ms:
                # Let a burst gather: fewer, larger batches cost less per entry.
                await asyncio.sleep(self.settings.worker_linger_ms / 1000)
        except TRANSIENT_ERRORS as exc:
            self.log.info("blocking read failed; polling again", error=str(exc))
            await asyncio.sleep(0.05)

    @staticmethod
    def _item(raw: Any) -> Item:
        entry_id = _text(raw[0])
        if raw[1] is None:  # deleted from the stream while pending: erased, nothing to apply
            return Item(entry_id=entry_id, raw=b"", entry=None, erased=True)
        fields = raw[1] or []
        data = b""
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == FIELD:
                data = fields[i + 1]
        try:
            return Item(entry_id=entry_id, raw=data, entry=decode_entry(data))
        except DecodeError:
            return Item(entry_id=entry_id, raw=data, entry=None,
                        header=decode_entry_header(data))

    # -- applying -----------------------------------------------------------------------
    async def _process(self, items: list[Item]) -> None:
        fresh: list[Item] = []
        for item in items:
            key = item.key
            if key is not None and key in self.held:
                if all(h.entry_id != item.entry_id for h in self.held[key]):
                    self.held[key].append(item)
            else:
                fresh.append(item)
        if fresh:
            await self.applier.apply(fresh, self._check_lease)
            await self.faults.hit("after_apply")
            await self._settle(fresh)

    async def _settle(self, items: list[Item]) -> None:
        done = [i.entry_id for i in items if i.state is State.DONE]
        for item in items:
            if item.state is State.FAILED:
                await self._failed(item)
            if item.state in (State.FAILED, State.HELD) and item.key is not None:
                queue = self.held.setdefault(item.key, [])
                if all(h.entry_id != item.entry_id for h in queue):
                    queue.append(item)
            elif item.state is State.FAILED:
                self.poison.append(item)
        if done:
            await self.scripts.call(self.client, "stream_ack", [self.sk.stream, self.sk.failures],
                                    done)
            self.applied += len(done)

    async def _failed(self, item: Item) -> bool:
        """Count a data failure; dead-letter the entry at the threshold (then True)."""
        item.failures = int(await self.client.hincrby(self.sk.failures, item.entry_id, 1))
        item.retry_at = time.monotonic() + min(0.05 * 2 ** item.failures, 2.0)
        self.hooks.failed(item)
        self.log.warning("entry failed", entry=item.entry_id, failures=item.failures,
                         error=item.error, **session_fields(item.entry))
        if item.failures >= self.settings.dead_letter_after_failures:
            await self._dead_letter(item)
            return True
        return False

    async def _dead_letter(self, item: Item) -> None:
        """Move the entry to the dead-letter stream with its session and request id (read
        from its header when it does not decode), and record the outcome for its writer."""
        e = item.entry
        header = item.header
        key, route, rid, ttl_ms = (
            (e.key, e.route, e.rid, e.ttl_ms) if e is not None
            else (header.key, header.route, header.rid, header.ttl_ms) if header is not None
            else (None, "", "", 0)
        )
        session = f"{key.app_name}/{key.user_id}/{key.session_id}" if key is not None else ""
        await self.scripts.call(
            self.client, "stream_dead_letter", [self.sk.stream, self.sk.failures, self.sk.dlq],
            [item.entry_id, item.raw, item.error, item.failures, session, rid],
        )
        if key is not None and rid:
            record = self.keys.record(key, route if route in ROUTES else "hashidx")
            await self.scripts.call(self.client, "record_outcome", [record],
                                    [rid, Outcome.DEAD_LETTERED.code,
                                     ttl_ms or GONE_RECORD_TTL_MS])
        item.state = State.DONE  # through, as far as its session is concerned
        self.hooks.dead_lettered(item)
        self.log.error("entry dead-lettered", entry=item.entry_id, error=item.error,
                       session=session or "?", rid=rid or "?")

    async def _retry_held(self) -> None:
        """Retry the head of every held session, one entry at a time, in order."""
        for item in list(self.poison):
            if time.monotonic() >= item.retry_at and await self._failed(item):
                self.poison.remove(item)
        now = time.monotonic()
        for key in list(self.held):
            queue = self.held[key]
            while queue and queue[0].retry_at <= now:
                head = queue[0]
                await self.applier.apply([head], self._check_lease)
                if head.state is State.DONE:
                    await self._settle_one(head)
                elif not await self._failed(head):
                    break
                queue.pop(0)
            if not queue:
                del self.held[key]

    async def _settle_one(self, item: Item) -> None:
        await self.scripts.call(self.client, "stream_ack", [self.sk.stream, self.sk.failures],
                                [item.entry_id])
        self.applied += 1
