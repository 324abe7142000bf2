"""Summary workers: the summary stream of every held shard, consumed next to its persist stream.

Each persist shard has a summary stream in the same hash tag. While a worker holds a shard's
lease it runs a :class:`SummaryConsumer` beside the shard's persist consumer (same lease, same
stop event): read jobs through the lease-checked ``stream_read`` script, group ``summary`` (the
pending list first, after taking the shard and after an error), coalesce the jobs of one
session and filter key, run them (:mod:`sessionstreams.workers.summary_jobs`), acknowledge them
when a run
handled their cut. A job in hand when the lease is lost or the worker stops stays pending for
the next owner; the summarizer may then run again, but at most one summary is stored per cut.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sessionstreams.common.connection import TRANSIENT_ERRORS
from sessionstreams.common.entries import CUT_FIELD, FIELD, decode_job
from sessionstreams.common.errors import ConnectionFailedError, DecodeError, StoreTimeoutError
from sessionstreams.common.logs import get_logger
from sessionstreams.common.shards import SUMMARY_GROUP, ShardKeys
from sessionstreams.workers.leases import Lease
from sessionstreams.workers.persist import ShardConsumer
from sessionstreams.workers.summary_jobs import JobGroup, SummaryJobs

log = get_logger("sessionstreams.summary")

#: Coalesced requests in hand per shard before reading pauses.
MAX_IN_HAND = 256
#: Errors after which a job stays pending and is simply tried again.
_TRANSIENT = (*TRANSIENT_ERRORS, ConnectionFailedError, StoreTimeoutError, OSError)


class LeaseLostError(Exception):
    """The shard's lease ended."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SummaryConsumer:
    """Consumes one shard's summary stream while this worker holds the shard's lease."""

    def __init__(
        self,
        *,
        jobs: SummaryJobs,
        shard_keys: ShardKeys,
        lease: Lease,
        stream_client: Any,
        stop: asyncio.Event,
        worker_id: str,
    ) -> None:
        self.jobs = jobs
        self.sk = shard_keys
        self.lease = lease
        self.stream_client = stream_client
        self.stop = stop
        self.consumer = str(shard_keys.shard)  # the same name for every owner: one PEL
        self.tasks: dict[asyncio.Task[None], JobGroup] = {}
        self.in_hand: set[str] = set()
        self.repage = False
        self.failures: dict[str, int] = {}
        self.log = log.bind(shard=shard_keys.shard, worker=worker_id)

    async def run(self) -> None:
        """Consume until stopped or the lease is lost; jobs in hand then stay pending."""
        cursor: str | None = "0"
        backoff = 0.05
        try:
            while not self.stop.is_set():
                try:
                    if self.repage:
                        self.repage, cursor = False, "0"
                    cursor = await self._step(cursor)
                    backoff = 0.05
                except LeaseLostError:
                    return
                except (*TRANSIENT_ERRORS, OSError) as exc:
                    self.log.warning("redis error; re-reading pending summary jobs",
                                     error=str(exc))
                    cursor = "0"
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                except Exception as exc:  # keep serving the shard; the jobs stay pending
                    self.log.error("summary consumer error", error=repr(exc))
                    cursor = "0"
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
        finally:
            await self._abandon()

    async def _step(self, cursor: str | None) -> str | None:
        if not self.lease.valid:
            raise LeaseLostError
        if len(self.tasks) >= MAX_IN_HAND:
            await asyncio.wait(list(self.tasks), timeout=0.2,
                               return_when=asyncio.FIRST_COMPLETED)
            return cursor
        reply = await self.jobs.scripts.call(
            self.jobs.client, "stream_read", [self.sk.lease, self.sk.summary],
            [self.lease.token, self.consumer, self.jobs.settings.worker_batch_size,
             cursor if cursor is not None else ">", SUMMARY_GROUP],
        )
        status = _text(reply[0])
        if status == "lost":
            raise LeaseLostError
        if status == "idle":
            await self._wait_for_data(_text(reply[1]))
            return None
        entries = reply[1]
        if cursor is not None and not entries:
            return None  # the pending list is exhausted: switch to new jobs
        await self._dispatch(entries)
        return _text(entries[-1][0]) if cursor is not None else None

    async def _wait_for_data(self, last_id: str) -> None:
        block_ms = max(self.jobs.settings.block_ms, 1)
        try:
            await self.stream_client.xread({self.sk.summary: last_id}, count=1, block=block_ms)
        except TRANSIENT_ERRORS as exc:
            self.log.info("blocking read failed; polling again", error=str(exc))
            await asyncio.sleep(0.05)

    async def _dispatch(self, entries: list[Any]) -> None:
        """Coalesce the jobs read by (session, filter key, route) and start one task each."""
        groups: dict[tuple[str, ...], JobGroup] = {}
        poison: list[str] = []
        for raw in entries:
            entry_id = _text(raw[0])
            if entry_id in self.in_hand:
                continue
            fields = raw[1] or []
            values = {fields[i]: fields[i + 1] for i in range(0, len(fields) - 1, 2)}
            try:
                job = decode_job(values.get(FIELD, b""))
            except DecodeError as exc:
                self.log.error("undecodable summary job dropped", entry=entry_id, error=str(exc))
                poison.append(entry_id)
                continue
            cut = _text(values.get(CUT_FIELD, b"0-0"))
            name = (job.app, job.user, job.sid, job.filter_key, job.route)
            group = groups.get(name)
            if group is None:
                groups[name] = JobGroup(job=job, cut=cut, force=job.force, ids=[entry_id])
            else:
                group.add(job, cut, entry_id)
        if poison:
            await self._ack(poison)
        for group in groups.values():
            self.in_hand.update(group.ids)
            task = asyncio.create_task(self._serve(group))
            self.tasks[task] = group

    async def _serve(self, group: JobGroup) -> None:
        try:
            await self.jobs.handle(group, self.sk)
            await self._ack(group.ids)
        except asyncio.CancelledError:
            raise
        except _TRANSIENT as exc:  # stays pending: re-read after a pause
            self.log.warning("summary job interrupted; retrying", session=group.job.sid,
                             error=repr(exc))
            await asyncio.sleep(0.5)
            self.repage = True
        except Exception as exc:
            await self._failed(group, exc)
        finally:
            self.tasks.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self.in_hand.difference_update(group.ids)

    async def _failed(self, group: JobGroup, exc: Exception) -> None:
        """A job that fails for another reason than Redis trouble is retried a few times
        (``dead_letter_after_failures``), then dropped with an error log."""
        name = group.ids[0]
        self.failures[name] = self.failures.get(name, 0) + 1
        if self.failures[name] < self.jobs.settings.dead_letter_after_failures:
            self.log.warning("summary job failed; retrying", session=group.job.sid,
                             failures=self.failures[name], error=repr(exc))
            await asyncio.sleep(0.5)
            self.repage = True
            return
        self.log.error("summary job dropped", session=group.job.sid,
                       failures=self.failures.pop(name), error=repr(exc))
        await self._ack(group.ids)

    async def _ack(self, ids: list[str]) -> None:
        await self.jobs.scripts.call(self.jobs.client, "summary_ack", [self.sk.summary], ids)

    async def _abandon(self) -> None:
        """Cancel the jobs in hand (each releases its lock); they stay pending."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_alongside(
    jobs: SummaryJobs, persist: ShardConsumer, stream_client: Any, worker_id: str
) -> None:
    """Run ``persist`` and the summary consumer of its shard until the shard is let go."""
    summary = SummaryConsumer(
        jobs=jobs, shard_keys=persist.sk, lease=persist.lease, stream_client=stream_client,
        stop=persist.stop, worker_id=worker_id,
    )
    task = asyncio.create_task(summary.run(), name=f"summary-{persist.sk.shard}")
    try:
        await persist.run()
    finally:
        persist.stop.set()
        try:
            await task
        except Exception as exc:  # a crashed summary consumer must not stop the shard's release
            log.error("summary consumer crashed", shard=persist.sk.shard, error=repr(exc))
