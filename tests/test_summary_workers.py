"""Queued summaries with real worker subprocesses (``--summarizer``) on a real redis-server.

A job carries the persist stream's last id when it was queued (its cut); the worker waits
until every write up to the cut is persisted, so a summary requested after N appends covers
all N, whoever made them. Runs are single-flight per (session, filter key) with a dirty cut,
and at most one summary is stored per cut, across worker crashes. Reference §11 cases 72
(queue overflow runs in the caller) and 76 (job timeout) with real workers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from summary_fixtures import RecordingSummarizer, items_of, read_calls
from workers_harness import ROOT, WorkerProcess, eventually, worker_env

from sessionstreams.common.errors import BackpressureError
from sessionstreams.common.models import Event, Key, Session, decode_summary_map
from sessionstreams.common.shards import ShardKeys, shard_of
from sessionstreams.producer import SessionService
from sessionstreams.workers.summary_jobs import stream_id

pytestmark = [pytest.mark.slow, pytest.mark.topologies("cluster")]

SUMMARIZER = ["--summarizer", "summary_fixtures:recording"]


@pytest.fixture
def summary_workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Worker processes started by the test; all are killed at its end."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture
def start_summary_worker(summary_workers, tmp_path: Path, log: Path):
    """Start a worker that persists and runs summary jobs with the recording summarizer
    (``summary_fixtures:recording``); keyword arguments become environment variables."""

    def start(settings, faults: str = "", name: str | None = None, **env: str) -> WorkerProcess:
        name = name or f"s{len(summary_workers)}"
        environ = {
            **worker_env(settings, faults),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            "SS_TEST_SUMMARY_LOG": str(log),
            "SESSIONSTREAMS_SUMMARY_JOB_TIMEOUT": str(settings.summary_job_timeout),
            "SESSIONSTREAMS_ASYNC_SUMMARY_NUM": str(settings.async_summary_num),
            **env,
        }
        log_path = tmp_path / f"{name}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "sessionstreams.workers", *SUMMARIZER],
                                    env=environ,
                                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        worker = WorkerProcess(proc, log_path, name)
        summary_workers.append(worker)
        return worker

    return start


def msg(i: int, **kw) -> Event:
    return Event.message("user" if i % 2 == 0 else "assistant", f"m{i}", **kw)


def every(n: int) -> list[str]:
    return sorted(f"m{i}" for i in range(n))


async def stored(svc: SessionService, key: Key) -> dict[str, str]:
    raw = await svc.client.get(svc.keys.summary(key))
    summaries = decode_summary_map(raw) or {} if raw else {}
    return {k: v.summary for k, v in summaries.items() if v is not None}


def summary_keys(settings, key: Key) -> ShardKeys:
    n = settings.async_persister_num
    return ShardKeys(settings.key_prefix, shard_of(key, n), n)


async def queue_drained(svc: SessionService, settings, key: Key) -> bool:
    """Every summary job of the session's shard acknowledged (and trimmed)."""
    return await svc.client.xlen(summary_keys(settings, key).summary) == 0


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "calls.jsonl"


async def test_queued_summary_by_worker(pipeline_settings, start_summary_worker, log) -> None:
    """enqueue_summary_job queues a job that a worker runs: the summary covers every append,
    records the cut it covers, and takes the session's TTL."""
    settings = pipeline_settings(session_ttl=60)
    start_summary_worker(settings)
    async with SessionService(settings) as svc:
        s = await svc.create_session(Key("app", "u", "s"))
        receipts = [await svc.append_event(s, msg(i)) for i in range(6)]
        job_id = await svc.enqueue_summary_job(s)
        assert job_id

        async def covered() -> bool:
            return items_of((await stored(svc, s.key)).get("", "")) == every(6)

        await eventually(covered, 30, "the queued summary")
        cut = await svc.client.hget(svc.keys.summary_runs(s.key), "c:")
        assert stream_id(cut.decode()) >= stream_id(receipts[-1].entry_id)
        assert 0 < await svc.client.pttl(svc.keys.summary(s.key)) <= 60_000
        await eventually(lambda: queue_drained(svc, settings, s.key), 10, "the job acked")
        assert len(read_calls(log)) == 1


async def test_queued_filter_key_cascades(pipeline_settings, start_summary_worker) -> None:
    """Case 73 queued: every event has the job's filter key -> the key and "" are stored."""
    settings = pipeline_settings()
    start_summary_worker(settings)
    async with SessionService(settings) as svc:
        s = await svc.create_session(Key("app", "u", "s"))
        for i in range(3):
            await svc.append_event(s, msg(i, filter_key="tool-usage"))
        await svc.enqueue_summary_job(s, "tool-usage")

        async def both() -> bool:
            return set(await stored(svc, s.key)) == {"tool-usage", ""}

        await eventually(both, 30, "the key's and the full-session summary")
        got = await stored(svc, s.key)
        assert items_of(got[""]) == items_of(got["tool-usage"]) == every(3)


async def test_queue_overflow_runs_in_the_caller(pipeline_settings, start_worker, log) -> None:
    """Case 72: queue size 1 and the queue full -> the job runs in the caller (which has a
    summarizer) and stores both "user-messages" and ""; without a summarizer the caller gets
    BackpressureError."""
    settings = pipeline_settings(summary_queue_size=1)
    start_worker(settings)  # persists, runs no summary job: the queue stays full
    producer = SessionService(settings.replace(summarizer=RecordingSummarizer(log)))
    plain = SessionService(settings)
    try:
        s = await producer.create_session(Key("app", "u", "s"))
        await producer.append_event(s, msg(0, filter_key="user-messages"))
        await producer.append_event(s, msg(1, filter_key="tool-calls"))
        assert await producer.enqueue_summary_job(s, "user-messages") is not None  # queued
        assert await producer.enqueue_summary_job(s, "user-messages") is None  # ran here
        got = await stored(producer, s.key)
        assert items_of(got["user-messages"]) == ["m0"]
        assert items_of(got[""]) == ["m0", "m1"]
        with pytest.raises(BackpressureError, match="summary_queue_size=1"):
            await plain.enqueue_summary_job(s)
    finally:
        await producer.close()
        await plain.close()


async def test_twenty_concurrent_requests_coalesce(
    pipeline_settings, start_summary_worker, log
) -> None:
    """20 concurrent append-then-summarize requests for one session: at most two summarizer
    calls, and the last one covers every append."""
    settings = pipeline_settings()
    start_summary_worker(settings, SS_TEST_SUMMARY_SLEEP_S="0.5")
    async with SessionService(settings) as svc:
        s = await svc.create_session(Key("app", "u", "s"))

        async def request(i: int) -> None:
            await svc.append_event(s, msg(i))
            await svc.enqueue_summary_job(s)

        await asyncio.gather(*(request(i) for i in range(20)))

        async def covered() -> bool:
            return items_of((await stored(svc, s.key)).get("", "")) == every(20)

        await eventually(covered, 30, "a summary covering the 20 appends")
        await eventually(lambda: queue_drained(svc, settings, s.key), 20, "every job acked")
        calls = read_calls(log)
        assert 1 <= len(calls) <= 2, calls
        assert calls[-1]["items"] == every(20)


async def test_summary_covers_appends_of_another_process(
    pipeline_settings, start_summary_worker, log, tmp_path
) -> None:
    """A summary requested after another process made N appends covers all N, although no
    worker had persisted them when the job was queued."""
    settings = pipeline_settings(worker_batch_size=5)
    key = Key("app", "u", "s")
    script = tmp_path / "writer.py"
    script.write_text(
        "import asyncio\n"
        "from sessionstreams.common.errors import PersistTimeoutError\n"
        "from sessionstreams.common.models import Event, Key\n"
        "from sessionstreams.common.settings import Settings\n"
        "from producer import SessionService\n"
        "async def main():\n"
        "    svc = SessionService(Settings.from_env())\n"
        "    s = await svc.create_session(Key('app', 'u', 's'))\n"
        "    for i in range(40):\n"
        "        role = 'user' if i % 2 == 0 else 'assistant'\n"
        "        await svc.append_event(s, Event.message(role, f'm{i}'))\n"
        "    try:\n"
        "        await svc.close(timeout=0)\n"
        "    except PersistTimeoutError:\n"
        "        pass\n"
        "asyncio.run(main())\n"
    )
    env = {**worker_env(settings), "SESSIONSTREAMS_ENABLE_ASYNC_PERSIST": "1"}
    writer = await asyncio.create_subprocess_exec(sys.executable, str(script), env=env, cwd=ROOT)
    assert await asyncio.wait_for(writer.wait(), 60) == 0
    async with SessionService(settings) as svc:
        assert await svc.client.xlen(summary_keys(settings, key).stream) == 40  # none persisted
        session = await svc.get_session(key)
        assert session is not None
        assert session.events == []
        await svc.enqueue_summary_job(session)
        start_summary_worker(settings)

        async def covered() -> bool:
            return items_of((await stored(svc, key)).get("", "")) == every(40)

        await eventually(covered, 30, "a summary covering the other process's 40 appends")
        assert [c["items"] for c in read_calls(log)] == [every(40)]


async def test_worker_killed_before_store_reruns(
    pipeline_settings, start_summary_worker, log
) -> None:
    """A worker SIGKILLed between the summarizer and the store: the next owner re-runs the
    job (the summarizer is called again) and one summary is stored."""
    settings = pipeline_settings(summary_job_timeout=30.0)  # the lock is taken over
    victim = start_summary_worker(settings,
                                  faults="summary_before_store:kill:once", name="victim")
    async with SessionService(settings) as svc:
        s = await svc.create_session(Key("app", "u", "s"))
        for i in range(3):
            await svc.append_event(s, msg(i))
        await svc.enqueue_summary_job(s)

        async def dead() -> bool:
            return not victim.alive()

        await eventually(dead, 30, "the worker to kill itself before the store")
        assert await stored(svc, s.key) == {}
        start_summary_worker(settings, name="heir")

        async def summarized() -> bool:
            return bool(await stored(svc, s.key))

        # Within the lease and heartbeat expiry, not the 30 s job timeout of the lock.
        await eventually(summarized, 15, "the re-run's summary")
        await eventually(lambda: queue_drained(svc, settings, s.key), 20, "the job acked")
        calls = read_calls(log)
        assert [c["call"] for c in calls] == [1, 2]
        assert (await stored(svc, s.key))[""] == "m0,m1,m2|call=2"


async def test_worker_killed_after_store_stores_once(
    pipeline_settings, start_summary_worker, log
) -> None:
    """A worker SIGKILLed after the store, before the ack: the next owner finds the cut
    covered, calls no summarizer and stores nothing again."""
    settings = pipeline_settings(summary_job_timeout=30.0)  # the lock is taken over
    victim = start_summary_worker(settings,
                                  faults="summary_after_store:kill:once", name="victim")
    async with SessionService(settings) as svc:
        s = await svc.create_session(Key("app", "u", "s"))
        for i in range(3):
            await svc.append_event(s, msg(i))
        await svc.enqueue_summary_job(s)

        async def dead() -> bool:
            return not victim.alive()

        await eventually(dead, 30, "the worker to kill itself after the store")
        first = await svc.client.get(svc.keys.summary(s.key))
        assert (await stored(svc, s.key))[""] == "m0,m1,m2|call=1"
        sk = summary_keys(settings, s.key)
        assert (await svc.client.xpending(sk.summary, "summary"))["pending"] == 1
        start_summary_worker(settings, name="heir")
        await eventually(lambda: queue_drained(svc, settings, s.key), 15, "the job acked")
        assert len(read_calls(log)) == 1
        assert await svc.client.get(svc.keys.summary(s.key)) == first


async def test_job_timeout_in_worker_stores_nothing(
    pipeline_settings, start_summary_worker, log
) -> None:
    """Case 76: a summarizer that blocks past summary_job_timeout -> the job ends (acked),
    no summary key is written."""
    settings = pipeline_settings(summary_job_timeout=0.5)
    worker = start_summary_worker(settings, SS_TEST_SUMMARY_BLOCK="1")
    async with SessionService(settings) as svc:
        s: Session = await svc.create_session(Key("app", "u", "s"))
        await svc.append_event(s, msg(0))
        await svc.enqueue_summary_job(s)

        async def called() -> bool:
            return len(read_calls(log)) == 1

        await eventually(called, 30, "the summarizer call")
        await eventually(lambda: queue_drained(svc, settings, s.key), 20, "the job acked")
        assert await svc.client.exists(svc.keys.summary(s.key)) == 0
        assert "summary job timed out" in worker.log()


async def test_resize_drains_summary_jobs(pipeline_settings, start_summary_worker, log) -> None:
    """shards resize waits for queued summary jobs too, then drops the old summary streams
    (their cuts are ids of the old persist streams)."""
    from sessionstreams.workers import admin

    settings = pipeline_settings()
    start_summary_worker(settings, SS_TEST_SUMMARY_SLEEP_S="1")
    async with SessionService(settings) as svc:
        s = await svc.create_session(Key("app", "u", "s"))
        await svc.append_event(s, msg(0))
        await svc.enqueue_summary_job(s)
        sk = summary_keys(settings, s.key)
        await admin.resize(svc.client, settings, to=2, timeout_s=30)
        assert items_of((await stored(svc, s.key))[""]) == ["m0"]
        assert await svc.client.exists(sk.summary, sk.stream) == 0


async def test_queued_summary_of_a_legacy_session(pipeline_settings, start_summary_worker, log):
    """A session in the legacy layout gets its queued summary in the per-user sesssum HASH;
    the run record lives in the legacy slot."""
    settings = pipeline_settings(compat_mode="transition")
    start_summary_worker(settings)
    async with SessionService(settings) as svc:
        s = await svc.create_session(Key("app", "u", "s"))
        assert s.service_meta["storage_type"] == "zset"
        for i in range(3):
            await svc.append_event(s, msg(i))
        await svc.enqueue_summary_job(s)

        async def covered() -> bool:
            raw = await svc.client.hget(svc.keys.legacy_summaries(s.key), s.id)
            summaries = decode_summary_map(raw) or {} if raw else {}
            full = summaries.get("")
            return full is not None and items_of(full.summary) == every(3)

        await eventually(covered, 30, "the legacy-layout summary")
        assert await svc.client.hget(svc.keys.legacy_summary_runs(s.key), "c:")
        assert await svc.client.exists(svc.keys.summary(s.key)) == 0


async def test_poison_job_is_dropped(pipeline_settings, start_summary_worker, log) -> None:
    """A job that keeps failing for another reason than Redis trouble (here our run record
    holds the wrong Redis type) is retried dead_letter_after_failures times, then dropped."""
    settings = pipeline_settings()
    worker = start_summary_worker(settings)
    async with SessionService(settings) as svc:
        s = await svc.create_session(Key("app", "u", "s"))
        await svc.append_event(s, msg(0))
        await svc.client.set(svc.keys.summary_runs(s.key), b"not a hash")
        await svc.enqueue_summary_job(s)
        await eventually(lambda: queue_drained(svc, settings, s.key), 30, "the job dropped")
        assert "summary job dropped" in worker.log()
        assert read_calls(log) == []
