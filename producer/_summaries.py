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
import weakref
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from sessionstreams.common.compat import ZSET
from sessionstreams.common.entries import SummaryJob, encode_job
from sessionstreams.common.errors import (
    BackpressureError,
    ConfigError,
    CorruptDataError,
    InvalidArgumentError,
    InvalidKeyError,
    SessionStoreError,
    SummaryTimeoutError,
)
from sessionstreams.common.keys import validate_key
from sessionstreams.common.logs import get_logger
from sessionstreams.common.models import Session, Summary, decode_summary_map
from sessionstreams.common.readpath import INCARNATION, STORAGE_TYPE, pick_summary
from sessionstreams.common.shards import ENTRY_FORMAT, ShardKeys, shard_of
from sessionstreams.common.summaries import allowed, run_cascade, summarize_one, summary_targets
from sessionstreams.common.tracing import current_traceparent
from sessionstreams.producer import _routing

if TYPE_CHECKING:
    from sessionstreams.producer.service import SessionService

log = get_logger("sessionstreams.summary")

#: Per-process locks per (service, session, filter key), as the Go service holds them.
_locks: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, str, str], asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _check(session: Session | None) -> Session:
    if session is None:
        raise InvalidArgumentError("session is nil")
    try:
        validate_key(session.key)
    except InvalidKeyError as exc:
        raise InvalidKeyError(f"check session key failed: {exc}") from exc
    return session


def _lock(svc: SessionService, session: Session, filter_key: str) -> asyncio.Lock:
    per_svc = _locks.setdefault(svc, {})
    name = (session.app_name, session.user_id, session.id, filter_key)
    lock = per_svc.get(name)
    if lock is None:
        lock = per_svc[name] = asyncio.Lock()
    return lock


async def store_summary(
    svc: SessionService, session: Session, filter_key: str, summary: Summary, cut: str = ""
) -> str:
    """Store one summary where the session lives ("set if newer"); returns the status.

    ``cut`` (queued jobs) stores at most one summary per cut and filter key. A session found
    in neither layout is logged and skipped, as the Go service does.

    Raises:
        CorruptDataError: a stored key holds another Redis type or the map is invalid.
    """
    route = await _routing.write_route(svc, session)
    engine = svc._engines.legacy if route == ZSET else svc._engines.hashidx
    _go_count(svc, "create_session_summary", route)
    status = await engine.set_summary(
        session.key, filter_key=filter_key, summary=summary,
        ttl_ms=svc.settings.session_ttl_ms, cut=cut,
    )
    if status == "session_gone":
        log.warning("summary not stored: session not found", session=session.id,
                    filter_key=filter_key)
    elif status.startswith("invalid"):
        raise CorruptDataError(f"store summary of {session.key}: {status}")
    return str(status)


async def create_session_summary(
    svc: SessionService, session: Session | None, filter_key: str, force: bool
) -> None:
    """Summarize the caller's session for ``filter_key`` and store it (ref. §7.3)."""
    summarizer = svc.settings.summarizer
    if summarizer is None:
        return
    session = _check(session)
    if not allowed(filter_key, svc.settings.summary_filter_allowlist):
        return
    await svc._read_your_writes(session.key)
    async with _lock(svc, session, filter_key):
        made = await summarize_one(summarizer, session, filter_key, force)
        if made is not None:
            await store_summary(svc, session, filter_key, made)


async def run_in_caller(
    svc: SessionService, session: Session, filter_key: str, force: bool, targets: tuple[str, ...]
) -> None:
    """A queued job run here instead (queue full, or synchronous mode), within the job
    timeout.

    Raises:
        SummaryTimeoutError: the job took longer than ``summary_job_timeout``.
    """
    timeout = svc.settings.summary_job_timeout
    await svc._read_your_writes(session.key)

    async def persist(target: str, summary: Summary) -> None:
        await store_summary(svc, session, target, summary)

    try:
        async with asyncio.timeout(timeout):
            await run_cascade(svc.settings.summarizer, session, filter_key, force, targets,
                              persist)
    except TimeoutError as exc:
        raise SummaryTimeoutError(
            f"summary of {session.key} (filter key {filter_key!r}) took longer than "
            f"summary_job_timeout={timeout}s; nothing was stored"
        ) from exc


async def enqueue_summary_job(
    svc: SessionService, session: Session | None, filter_key: str, force: bool
) -> str | None:
    """Queue a summary job for the workers; returns its stream entry id, or None when it
    ran in the caller or there was nothing to queue."""
    session = _check(session)
    s = svc.settings
    targets = summary_targets(filter_key, s.summary_filter_allowlist,
                              s.cascade_full_session_summary)
    if not targets:
        return None
    if svc._streams is None:
        if s.summarizer is not None:
            await run_in_caller(svc, session, filter_key, force, targets)
        return None
    reply = await _add_job(svc, session, filter_key, force, targets)
    status = _text(reply[0])
    if status == "ok":
        return _text(reply[1])
    if status == "config":
        raise ConfigError(
            f"the summary stream's shard is configured for {_text(reply[1])} shards and entry "
            f"format {_text(reply[2])}; this producer uses {s.async_persister_num} and "
            f"{ENTRY_FORMAT}"
        )
    if s.summarizer is not None:
        await run_in_caller(svc, session, filter_key, force, targets)
        return None
    what = "paused for a resize" if status == "paused" else "full"
    raise BackpressureError(
        f"the summary queue of session {session.key} is {what} (summary_queue_size="
        f"{s.summary_queue_size}) and this producer has no summarizer to run the job itself"
    )


async def _add_job(
    svc: SessionService, session: Session, filter_key: str, force: bool, targets: tuple[str, ...]
) -> list[Any]:
    s = svc.settings
    shards = s.async_persister_num
    sk = ShardKeys(s.key_prefix, shard_of(session.key, shards), shards)
    job = SummaryJob(
        app=session.app_name, user=session.user_id, sid=session.id, filter_key=filter_key,
        force=force, targets=targets, route=session.service_meta.get(STORAGE_TYPE, "hashidx"),
        incarnation=session.service_meta.get(INCARNATION, ""),
        traceparent=current_traceparent() if s.enable_tracing else "",
    )
    reply: list[Any] = await svc.scripts.call(
        svc.client, "summary_add", [sk.stream, sk.summary, sk.conf],
        [shards, ENTRY_FORMAT, s.summary_queue_size, encode_job(job)],
    )
    return reply


async def get_session_summary_text(
    svc: SessionService, session: Session | None, filter_key: str
) -> str | None:
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
        async with svc._errors:
            route = await _routing.write_route(svc, session)
            engine = svc._engines.legacy if route == ZSET else svc._engines.hashidx
            _go_count(svc, "get_session_summary_text", route)
            raw = await engine.load_summaries(session.key)
        if raw is None:
            return None
        return pick_summary(decode_summary_map(raw) or {}, filter_key, session.created_at)
    except (SessionStoreError, RedisError, OSError) as exc:
        log.warning("summary text not read", session=session.id, error=str(exc))
        return None


def _go_count(svc: SessionService, name: str, route: str) -> None:
    """The Go counter of ``name`` (ref. §9.2), when metrics are on."""
    instruments = svc._instruments
    if instruments is not None and instruments.metrics_on:
        instruments.go_count(name, route)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
