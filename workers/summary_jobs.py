"""One summary job in a worker: the cut wait, single-flight with a dirty cut, the run.

A job carries ``cut``, the persist stream's last id when it was queued. A run waits until the
persist group is past the cut (every write queued before the request reached its outcome),
loads the stored session and runs the cascade with the worker's summarizer, all within
``summary_job_timeout``. Runs are single-flight per (session, filter key) through the
session's ``ss:summary`` record (same slot as the session): a request arriving during a run
raises the run's dirty cut and parks until a run handled its cut; the holder runs once more
while the dirty cut is past the cut it covered. A lock whose worker left the live-worker
registry (killed) is taken over; any other expires after the job timeout plus a margin. Every
stored summary records its cut in the same script, so a job re-run after a crash stores
nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sessionstreams.common.compat import ZSET
from sessionstreams.common.entries import SummaryJob
from sessionstreams.common.errors import (
    ConnectionFailedError,
    SessionStoreError,
    StoreTimeoutError,
    SummarizeError,
)
from sessionstreams.common.logs import get_logger
from sessionstreams.common.models import Session, Summary
from sessionstreams.common.readpath import INCARNATION, SessionReader
from sessionstreams.common.shards import ShardKeys, workers_key
from sessionstreams.common.store import Store
from sessionstreams.common.summaries import run_cascade, summarizer_metadata
from sessionstreams.common.summary_store import store_summary
from sessionstreams.common.tracing import traced_attributes, tracer
from sessionstreams.workers.faults import Faults
from sessionstreams.workers.observe import summary_job_span

log = get_logger("sessionstreams.summary")

#: Polling of a parked request and of the cut wait (seconds, doubling up to the maximum).
_POLL_MIN_S = 0.02
_POLL_MAX_S = 0.5
#: How often a parked request asks whether the lock holder's worker is still alive.
_HOLDER_CHECK_S = 1.0


def stream_id(text: str) -> tuple[int, int]:
    """A stream id ``ms-seq`` as a comparable pair (a malformed id sorts first)."""
    ms, _, seq = text.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return -1, -1


@dataclass
class JobGroup:
    """The jobs of one (session, filter key, route) read together, coalesced to one run."""

    job: SummaryJob
    cut: str
    force: bool
    ids: list[str] = field(default_factory=list)

    def add(self, job: SummaryJob, cut: str, entry_id: str) -> None:
        """Coalesce another request: the latest cut wins (with its targets)."""
        self.ids.append(entry_id)
        self.force = self.force or job.force
        if stream_id(cut) > stream_id(self.cut):
            self.job, self.cut = job, cut


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SummaryJobs:
    """Runs summary jobs for one worker process (``async_summary_num`` at a time)."""

    def __init__(self, store: Store, faults: Faults, worker_id: str) -> None:
        settings = store.settings
        self.settings = settings
        self.worker_id = worker_id
        self.summarizer = settings.summarizer
        self.client = store.client
        self.scripts = store.scripts
        self.faults = faults
        self.keys = store.keys
        self.timeout_s = settings.summary_job_timeout
        # The lock outlives a run (cut wait + summarizer + store) by a margin.
        self.lock_ms = int((self.timeout_s + max(2.0, 0.25 * self.timeout_s)) * 1000)
        self.slots = asyncio.Semaphore(settings.async_summary_num)
        self.reader = SessionReader(store)
        self.store = store
        self._started = False
        self.tracer = tracer() if settings.enable_tracing else None

    def _run_keys(self, job: SummaryJob) -> list[str]:
        key = job.key
        if job.route == ZSET:
            return [self.keys.legacy_summary_runs(key), self.keys.legacy_sessions(key)]
        return [self.keys.summary_runs(key), self.keys.meta(key)]

    async def handle(self, group: JobGroup, sk: ShardKeys) -> None:
        """Serve one coalesced request: run it, or park behind the run in progress.

        Returns once a run handled the request's cut; cancellation releases the lock (the
        dirty cut stays for the next run) and leaves the request unacknowledged.
        """
        if not self._started:  # server checks and the Sentinel failover watch, once
            await self.store.start()
            self._started = True
            log.info("running summary jobs", summarizer=summarizer_metadata(self.summarizer),
                     concurrency=self.settings.async_summary_num, timeout_s=self.timeout_s)
        job, keys = group.job, self._run_keys(group.job)
        token = f"{self.worker_id}|{uuid.uuid4().hex}"
        delay, steal, checked = _POLL_MIN_S, "", time.monotonic()
        while True:
            reply = await self.scripts.call(
                self.client, "summary_begin", keys,
                [job.filter_key, token, group.cut, self.lock_ms, steal, *job.targets],
            )
            status = _text(reply[0])
            if status == "covered":
                return
            if status == "run":
                break
            handled, holder = _text(reply[1]), _text(reply[2])
            if handled and stream_id(handled) >= stream_id(group.cut):
                return  # the run in progress covered this request
            if time.monotonic() - checked >= _HOLDER_CHECK_S:
                checked = time.monotonic()
                steal = "" if await self._alive(holder) else holder
            await asyncio.sleep(0 if steal else delay)
            delay = min(delay * 2, _POLL_MAX_S)
        at = _text(reply[1])
        try:
            async with self.slots:
                while True:
                    await self._run(job, group.force, at, sk)
                    reply = await self.scripts.call(
                        self.client, "summary_end", keys, [job.filter_key, token, at, self.lock_ms]
                    )
                    if _text(reply[0]) != "again":
                        return
                    at = _text(reply[1])
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.scripts.call(
                    self.client, "summary_end", keys, [job.filter_key, token, "", self.lock_ms]
                ), timeout=2.0)
            raise

    async def _alive(self, holder: str) -> bool:
        """Whether the worker holding a lock still heartbeats (a killed one stops)."""
        worker = holder.partition("|")[0]
        if worker == self.worker_id:
            return True
        score = await self.client.zscore(workers_key(self.settings.key_prefix), worker)
        return score is not None and float(score) > time.time() * 1000

    async def _run(self, job: SummaryJob, force: bool, at: str, sk: ShardKeys) -> None:
        """One run at cut ``at``, within the job timeout; a failed run stores nothing."""
        bound = log.bind(session=job.sid, user=job.user, filter_key=job.filter_key, cut=at)
        try:
            with summary_job_span(self.tracer, job, shard=sk.shard, cut=at, force=force):
                async with asyncio.timeout(self.timeout_s):
                    await self._wait_cut(sk, at)
                    await self._summarize(job, force, at)
        except TimeoutError:
            bound.warning("summary job timed out", timeout_s=self.timeout_s)
        except SummarizeError as exc:
            bound.warning("summarizer failed", error=str(exc))
        except (ConnectionFailedError, StoreTimeoutError):
            raise  # Redis trouble: the job stays pending and is tried again
        except SessionStoreError as exc:
            bound.error("summary job failed", error=str(exc))

    async def _wait_cut(self, sk: ShardKeys, cut: str) -> None:
        """Until the persist group is past ``cut`` with nothing <= ``cut`` pending."""
        delay = _POLL_MIN_S
        while not await self.scripts.call(self.client, "summary_cut_ready", [sk.stream], [cut]):
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_S)

    async def _read(self, job: SummaryJob) -> Session | None:
        """The stored session through the read path, under a ``get_session`` span (a child of
        the job's span) when tracing is on."""
        limit = max(self.settings.session_event_limit, 0)
        span = (self.tracer.start_as_current_span("get_session",
                                                  attributes=traced_attributes(job.key))
                if self.tracer is not None else contextlib.nullcontext())
        with span, self.store.errors:
            return await self.reader.get_session(job.key, limit, None)

    async def _summarize(self, job: SummaryJob, force: bool, at: str) -> None:
        session = await self._read(job)
        if session is None:
            log.info("summary skipped: session gone", session=job.sid)
            return
        stored = session.service_meta.get(INCARNATION, "")
        if job.incarnation and stored and stored != job.incarnation:
            log.info("summary skipped: session re-created", session=job.sid)
            return

        async def persist(target: str, summary: Summary) -> None:
            await self.faults.hit("summary_before_store")
            await store_summary(self.reader, session, target, summary, cut=at)
            await self.faults.hit("summary_after_store")

        await run_cascade(self.summarizer, session, job.filter_key, force, job.targets, persist)
