"""Summaries on the producer side: create in the caller, queue for the workers, read the text.

``create_session_summary`` summarizes the caller's Session (its in-memory events, as the Go
service does) for one filter key and stores the result. ``enqueue_summary_job`` puts a job on
the summary stream of the session's persist shard (async mode), where a summary worker
summarizes the stored session once every write queued before the job is persisted; past
``summary_queue_size`` the job runs here when this producer has a summarizer (else
BackpressureError). In synchronous mode it runs here, like the Go service without an async
worker. Storage is "set if newer" on parsed times, in the layout the session lives in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from sessionstreams.common.entries import SummaryJob, encode_job
from sessionstreams.common.errors import (
    BackpressureError,
    ConfigError,
    InvalidArgumentError,
    InvalidKeyError,
    SessionStoreError,
    SummaryTimeoutError,
)
from sessionstreams.common.keys import validate_key
from sessionstreams.common.logs import get_logger
from sessionstreams.common.models import Key, Session, Summary
from sessionstreams.common.readpath import INCARNATION, STORAGE_TYPE, SessionReader, pick_summary
from sessionstreams.common.readpath.reader import RouteCounter
from sessionstreams.common.shards import ENTRY_FORMAT, ShardKeys, shard_of
from sessionstreams.common.summaries import allowed, run_cascade, summarize_one, summary_targets
from sessionstreams.common.summary_store import store_summary
from sessionstreams.common.tracing import current_traceparent

log = get_logger("sessionstreams.summary")

#: Waits for this process's pending writes of a session (read-your-writes).
WaitOwnWrites = Callable[[Key], Awaitable[None]]


def _check(session: Session | None) -> Session:
    if session is None:
        raise InvalidArgumentError("session is nil")
    try:
        validate_key(session.key)
    except InvalidKeyError as exc:
        raise InvalidKeyError(f"check session key failed: {exc}") from exc
    return session


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SummaryRequests:
    """The summary methods of SessionService: run here, queue for the workers, read.

    Args:
        reader: the read path (the session's layout, the stored summaries).
        queued: whether jobs go to the summary streams (async mode).
        wait_own_writes: read-your-writes before a summary covers the session.
        count: optional callback of the Go per-layout counters.
    """

    def __init__(
        self,
        reader: SessionReader,
        *,
        queued: bool,
        wait_own_writes: WaitOwnWrites,
        count: RouteCounter | None = None,
    ) -> None:
        self.reader = reader
        self.store = reader.store
        self.settings = reader.settings
        self.queued = queued
        self._wait_own_writes = wait_own_writes
        self._count = count
        # Per-process locks per (session, filter key), as the Go service holds them.
        self._locks: dict[tuple[str, str, str, str], asyncio.Lock] = {}

    def _lock(self, session: Session, filter_key: str) -> asyncio.Lock:
        name = (session.app_name, session.user_id, session.id, filter_key)
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def _store(self, session: Session, filter_key: str, summary: Summary) -> None:
        await store_summary(self.reader, session, filter_key, summary, count=self._count)

    async def create(self, session: Session | None, filter_key: str, force: bool) -> None:
        """Summarize the caller's session for ``filter_key`` and store it (ref. §7.3)."""
        summarizer = self.settings.summarizer
        if summarizer is None:
            return
        session = _check(session)
        if not allowed(filter_key, self.settings.summary_filter_allowlist):
            return
        await self._wait_own_writes(session.key)
        async with self._lock(session, filter_key):
            made = await summarize_one(summarizer, session, filter_key, force)
            if made is not None:
                await self._store(session, filter_key, made)

    async def run_here(
        self, session: Session, filter_key: str, force: bool, targets: tuple[str, ...]
    ) -> None:
        """A queued job run here instead (queue full, or synchronous mode), within the job
        timeout.

        Raises:
            SummaryTimeoutError: the job took longer than ``summary_job_timeout``.
        """
        timeout = self.settings.summary_job_timeout
        await self._wait_own_writes(session.key)

        async def persist(target: str, summary: Summary) -> None:
            await self._store(session, target, summary)

        try:
            async with asyncio.timeout(timeout):
                await run_cascade(self.settings.summarizer, session, filter_key, force, targets,
                                  persist)
        except TimeoutError as exc:
            raise SummaryTimeoutError(
                f"summary of {session.key} (filter key {filter_key!r}) took longer than "
                f"summary_job_timeout={timeout}s; nothing was stored"
            ) from exc

    async def enqueue(
        self, session: Session | None, filter_key: str, force: bool
    ) -> str | None:
        """Queue a summary job for the workers; returns its stream entry id, or None when it
        ran in the caller or there was nothing to queue."""
        session = _check(session)
        s = self.settings
        targets = summary_targets(filter_key, s.summary_filter_allowlist,
                                  s.cascade_full_session_summary)
        if not targets:
            return None
        if not self.queued:
            if s.summarizer is not None:
                await self.run_here(session, filter_key, force, targets)
            return None
        reply = await self._add_job(session, filter_key, force, targets)
        status = _text(reply[0])
        if status == "ok":
            return _text(reply[1])
        if status == "config":
            raise ConfigError(
                f"the summary stream's shard is configured for {_text(reply[1])} shards and "
                f"entry format {_text(reply[2])}; this producer uses {s.async_persister_num} "
                f"and {ENTRY_FORMAT}"
            )
        if s.summarizer is not None:
            await self.run_here(session, filter_key, force, targets)
            return None
        what = "paused for a resize" if status == "paused" else "full"
        raise BackpressureError(
            f"the summary queue of session {session.key} is {what} (summary_queue_size="
            f"{s.summary_queue_size}) and this producer has no summarizer to run the job itself"
        )

    async def _add_job(
        self, session: Session, filter_key: str, force: bool, targets: tuple[str, ...]
    ) -> list[Any]:
        s = self.settings
        shards = s.async_persister_num
        sk = ShardKeys(s.key_prefix, shard_of(session.key, shards), shards)
        job = SummaryJob(
            app=session.app_name, user=session.user_id, sid=session.id, filter_key=filter_key,
            force=force, targets=targets,
            route=session.service_meta.get(STORAGE_TYPE, "hashidx"),
            incarnation=session.service_meta.get(INCARNATION, ""),
            traceparent=current_traceparent() if s.enable_tracing else "",
        )
        reply: list[Any] = await self.store.scripts.call(
            self.store.client, "summary_add", [sk.stream, sk.summary, sk.conf],
            [shards, ENTRY_FORMAT, s.summary_queue_size, encode_job(job)],
        )
        return reply

    async def text(self, session: Session | None, filter_key: str) -> str | None:
        """The summary text by the reference pick rule (ref. §7.4); None when there is none.

        The session's in-memory summaries first, then the stored map. Errors (Redis down, a
        corrupt map) give None, as in the Go service.
        """
        if session is None:
            return None
        try:
            validate_key(session.key)
        except InvalidKeyError:
            return None
        if session.summaries:
            text = pick_summary(session.summaries, filter_key, session.created_at)
            if text:
                return text
        try:
            with self.store.errors:
                return await self.reader.summary_text(session, filter_key)
        except (SessionStoreError, RedisError, OSError) as exc:
            log.warning("summary text not read", session=session.id, error=str(exc))
            return None
