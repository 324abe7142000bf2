"""Observability: spans with the Go names across the stream, metrics, log binding, scraping.

Spans and metrics go to in-memory exporters installed as the global providers
(``otel_harness``); workers run in-process where the test reads their spans or metrics
directly, and as real subprocesses for the trace file and the Prometheus endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from otel_harness import points, read_span_lines, total
from redis.exceptions import ResponseError
from workers_harness import eventually

from sessionstreams.common.entries import decode_entry
from sessionstreams.common.errors import PersistTimeoutError, SessionStoreError
from sessionstreams.common.logs import configure_logging
from sessionstreams.common.models import Event, Key, TrackEvent, UserKey
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import ShardKeys, shard_of
from sessionstreams.common.tracing import GO_COUNTER_PREFIX, TRACER_NAME
from sessionstreams.producer import SessionService
from sessionstreams.workers import admin
from sessionstreams.workers.runner import Worker

pytestmark = pytest.mark.slow


def message(i: int, **delta: bytes) -> Event:
    return Event.message("user" if i % 2 == 0 else "assistant", f"m{i}", state_delta=delta or None)


@contextlib.asynccontextmanager
async def in_process_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A Worker running as a task of this event loop (its spans and metrics are ours)."""
    worker = Worker(settings)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stopping.set()
        await asyncio.wait_for(task, 30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def json_lines(text: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            loaded = json.loads(line)
            if isinstance(loaded, dict):
                out.append(loaded)
    return out


# -- spans ----------------------------------------------------------------------------------


async def test_spans_have_go_names_and_attributes(make_service, span_exporter) -> None:
    """Each Go-named call makes one span of tracer trpc.agent.go with the Go attributes."""
    svc = await make_service(enable_tracing=True)
    key = Key("app", "u", "s1")
    s = await svc.create_session(key)
    await svc.create_session(key)  # exists: existing=true
    await svc.append_event(s, message(0, k=b"v"))
    await svc.append_track_event(s, TrackEvent(track="t", payload=b"1"))
    await svc.get_track_events(key, "t")
    assert await svc.get_session(key) is not None
    assert await svc.get_session(Key("app", "u", "missing")) is None
    await svc.list_sessions(UserKey("app", "u"))  # no span in Go
    await svc.update_session_state(key, {"x": b"1"})  # no span in Go
    await svc.delete_session(key)

    spans = span_exporter.get_finished_spans()
    top = [sp for sp in spans if sp.parent is None]
    assert [sp.name for sp in top] == [
        "create_session", "create_session", "append_event", "append_track_event",
        "get_track_events", "get_session", "get_session", "delete_session",
    ]
    for sp in spans:
        assert sp.instrumentation_scope.name == TRACER_NAME
        assert set(sp.attributes) >= {"app_name", "user_id", "session_id"}
    assert top[0].attributes["session_id"] == "s1"
    assert top[0].attributes["storage"] == "hashidx"
    assert "existing" not in top[0].attributes
    assert top[1].attributes["existing"] is True
    assert top[2].attributes["storage"] == "hashidx"  # append_event on success
    assert top[5].attributes["storage"] == "hashidx"  # get_session found
    assert "storage" not in top[6].attributes  # get_session of a missing session
    assert top[6].attributes["session_id"] == "missing"


async def test_tracing_off_records_nothing(make_settings, span_exporter, metric_reader) -> None:
    """Without enable_tracing no span, no metric, and stream entries carry no traceparent."""
    svc = SessionService(make_settings(enable_async_persist=True))
    s = await svc.create_session(Key("app", "u", "s"))
    await svc.append_event(s, message(0))
    sk = ShardKeys(svc.settings.key_prefix, shard_of(s.key, svc.settings.async_persister_num),
                   svc.settings.async_persister_num)
    ((_, fields),) = await svc.client.xrange(sk.stream)
    with pytest.raises(PersistTimeoutError):  # no worker runs: the entry stays in its stream
        await svc.close(timeout=0.05)
    assert decode_entry(fields[b"e"]).traceparent == ""
    assert span_exporter.get_finished_spans() == ()
    data = metric_reader.get_metrics_data()
    assert data is None or all(not sm.metrics for rm in data.resource_metrics
                               for sm in rm.scope_metrics)


async def test_async_append_spans_share_a_trace(
    make_service, pipeline_settings, span_exporter
) -> None:
    """An async append: the producer's append_event span and the worker's apply_event span
    (in-process worker) are one trace, the worker's span a child of the producer's."""
    settings = pipeline_settings(enable_tracing=True)
    svc = await make_service(enable_async_persist=True, enable_tracing=True,
                             async_persister_num=settings.async_persister_num)
    s = await svc.create_session(Key("app", "u", "s"))
    receipt = await svc.append_event(s, message(0))
    async with in_process_worker(settings):
        assert await svc.wait_persisted(receipt, timeout=20) == "applied"
    spans = span_exporter.get_finished_spans()
    (producer,) = [sp for sp in spans if sp.name == "append_event"]
    (applied,) = [sp for sp in spans if sp.name == "apply_event"]
    assert applied.context.trace_id == producer.context.trace_id
    assert applied.parent is not None
    assert applied.parent.span_id == producer.context.span_id
    assert applied.attributes["outcome"] == "applied"
    assert applied.attributes["session_id"] == "s"
    assert applied.attributes["storage"] == "hashidx"
    assert isinstance(applied.attributes["shard"], int)


async def test_trace_continues_in_worker_subprocess(
    make_service, pipeline_settings, start_worker, span_exporter, tmp_path: Path
) -> None:
    """A worker process started with --trace-file writes its apply spans in the producer's
    trace: one trace from the agent's append to its persistence."""
    settings = pipeline_settings()
    svc = await make_service(enable_async_persist=True, enable_tracing=True,
                             async_persister_num=settings.async_persister_num)
    s = await svc.create_session(Key("app", "u", "s"))
    receipts = [await svc.append_event(s, message(i)) for i in range(3)]
    trace_file = tmp_path / "spans.jsonl"
    worker = start_worker(settings, args=["--trace-file", str(trace_file)])
    for r in receipts:
        assert await svc.wait_persisted(r, timeout=20) == "applied"
    assert worker.terminate() == 0  # flushes the exporter
    producer = [sp for sp in span_exporter.get_finished_spans() if sp.name == "append_event"]
    assert len(producer) == 3
    written = [sp for sp in read_span_lines(trace_file) if sp["name"] == "apply_event"]
    by_parent = {sp["parent_id"]: sp for sp in written}
    for sp in producer:
        child = by_parent[f"0x{sp.context.span_id:016x}"]
        assert child["context"]["trace_id"] == f"0x{sp.context.trace_id:032x}"
        assert child["attributes"]["outcome"] == "applied"


async def test_summary_job_span_continues_the_callers_trace(
    make_service, pipeline_settings, span_exporter
) -> None:
    """A queued summary job runs in a worker under a summary_job span whose parent is the
    span current when the job was queued (here the agent's own span)."""
    from opentelemetry import trace

    from sessionstreams.common.summarizers import ExtractiveSummarizer

    settings = pipeline_settings(enable_tracing=True)
    svc = await make_service(enable_async_persist=True, enable_tracing=True,
                             async_persister_num=settings.async_persister_num)
    s = await svc.create_session(Key("app", "u", "s"))
    for i in range(2):
        await svc.append_event(s, message(i))
    with trace.get_tracer("agent").start_as_current_span("agent_turn") as turn:
        assert await svc.enqueue_summary_job(s) is not None
    async with in_process_worker(settings.replace(summarizer=ExtractiveSummarizer())):

        async def summarized() -> bool:
            return await svc.client.exists(svc.keys.summary(s.key)) == 1

        await eventually(summarized, 30, "the summary stored by the worker")

        async def ended() -> bool:
            return any(sp.name == "summary_job" for sp in span_exporter.get_finished_spans())

        await eventually(ended, 10, "the summary_job span")
    (job,) = [sp for sp in span_exporter.get_finished_spans() if sp.name == "summary_job"]
    assert job.context.trace_id == turn.get_span_context().trace_id
    assert job.parent is not None
    assert job.parent.span_id == turn.get_span_context().span_id
    assert job.attributes["session_id"] == "s"
    assert job.attributes["filter_key"] == ""
    # The worker's read of the session is a child of the job.
    reads = [sp for sp in span_exporter.get_finished_spans()
             if sp.name == "get_session" and sp.parent is not None
             and sp.parent.span_id == job.context.span_id]
    assert reads


# -- metrics --------------------------------------------------------------------------------


async def test_producer_metrics_under_small_load(make_service, metric_reader) -> None:
    """Go counters and per-operation counts and latencies follow a small known load."""
    svc = await make_service(enable_tracing=True)
    sessions = [await svc.create_session(Key("app", "u", f"s{i}")) for i in range(3)]
    for i in range(5):
        await svc.append_event(sessions[i % 3], message(i))
    await svc.append_track_event(sessions[0], TrackEvent(track="t", payload=b"1"))
    await svc.append_track_event(sessions[1], TrackEvent(track="t", payload=b"2"))
    for s in sessions:
        await svc.get_session(s.key)
    await svc.get_session(Key("app", "u", "missing"))
    with pytest.raises(Exception, match="session"):
        await svc.get_session(Key("app", "u", ""))

    def go(name: str) -> float:
        return total(metric_reader, f"{GO_COUNTER_PREFIX}{name}_count", storage="hashidx")

    assert go("create_session") == 3
    assert go("append_event") == 5
    assert go("append_track_event") == 2
    # Found sessions only (the create of a given id in LEGACY mode also looks it up: none).
    assert go("get_session") == 3
    # Calls per operation and outcome: the latency histogram's counts; a lookup the service
    # makes itself (create_session of a given id) is not a get_session call.
    calls = "sessionstreams.operation.duration"
    assert total(metric_reader, calls, operation="append_event", outcome="ok") == 5
    assert total(metric_reader, calls, operation="get_session", outcome="ok") == 4
    assert total(metric_reader, calls, operation="get_session", outcome="error") == 1
    assert total(metric_reader, calls, operation="get_session") == 5
    assert total(metric_reader, calls, operation="create_session") == 3
    assert total(metric_reader, calls, operation="append_track_event") == 2
    ((_, point),) = [p for p in points(metric_reader, calls)
                     if p[0] == {"operation": "create_session", "outcome": "ok"}]
    assert 0 < point.sum < 10  # seconds


async def test_metrics_switch_apart_from_tracing(
    make_service, metric_reader, span_exporter
) -> None:
    """enable_metrics overrides the Go rule (metrics only with tracing) both ways."""
    only_metrics = await make_service(enable_metrics=True)
    await only_metrics.create_session(Key("app", "u", "a"))
    only_spans = await make_service(enable_tracing=True, enable_metrics=False)
    await only_spans.create_session(Key("app", "u", "b"))
    assert total(metric_reader, "sessionstreams.operation.duration",
                 operation="create_session") == 1
    assert [sp.name for sp in span_exporter.get_finished_spans()
            if sp.parent is None] == ["create_session"]


async def test_worker_metrics_under_small_load(
    pipeline_settings, redis_client, metric_reader
) -> None:
    """Outcomes, failures, dead letters, lease changes and shard gauges of an in-process
    worker follow a known load."""
    settings = pipeline_settings(enable_metrics=True, dead_letter_after_failures=2)
    n = settings.async_persister_num
    svc = SessionService(settings)
    try:
        keep = await svc.create_session(Key("app", "u", "keep"))
        gone = await svc.create_session(Key("app", "u", "gone"))
        applied = [await svc.append_event(keep, message(i)) for i in range(4)]
        dropped = [await svc.append_event(gone, message(i)) for i in range(2)]
        await svc.delete_session(gone.key)
        poison_session = await svc.create_session(Key("app", "u", "poison"))
        await redis_client.set(svc.keys.user_state(poison_session.key), b"not a hash")
        poison = await svc.append_event(poison_session, message(0, **{"user:x": b"1"}))

        async with in_process_worker(settings) as worker:
            for r in applied:
                assert await svc.wait_persisted(r, timeout=30) == "applied"
            for r in [*dropped, poison]:
                with pytest.raises(SessionStoreError):  # session gone / dead-lettered
                    await svc.wait_persisted(r, timeout=30)

            async def settled() -> bool:
                return len(worker.leases.held) == n and total(
                    metric_reader, "sessionstreams.shard.dead_letters") == 1

            await eventually(settled, 10, "every shard held and sampled")
            assert total(metric_reader, "sessionstreams.worker.shards_held") == n
            assert total(metric_reader, "sessionstreams.shard.backlog") >= 1
    finally:
        await svc.close()

    outcomes = "sessionstreams.worker.outcomes"
    assert total(metric_reader, outcomes, outcome="applied", kind="event") == 4
    assert total(metric_reader, outcomes, outcome="session_gone") == 2
    assert total(metric_reader, outcomes, outcome="dead_lettered") == 1
    assert total(metric_reader, outcomes, outcome="duplicate") == 0
    assert total(metric_reader, "sessionstreams.worker.failures") == 2
    assert total(metric_reader, "sessionstreams.worker.dead_letters") == 1
    assert total(metric_reader, "sessionstreams.worker.redeliveries") == 0
    assert total(metric_reader, f"{GO_COUNTER_PREFIX}append_event_count", storage="hashidx") == 4
    assert total(metric_reader, "sessionstreams.worker.persist_delay") == 7
    assert total(metric_reader, "sessionstreams.worker.apply.duration") >= 1
    assert total(metric_reader, "sessionstreams.worker.lease_changes", change="acquired") == n
    assert total(metric_reader, "sessionstreams.worker.lease_changes", change="released") == n


async def test_worker_counts_redeliveries(
    pipeline_settings, start_worker, metric_reader
) -> None:
    """Entries a killed worker applied but did not acknowledge are counted as redeliveries
    (and as duplicates) by the worker that takes the shard over."""
    settings = pipeline_settings(enable_metrics=True, async_persister_num=1)
    svc = SessionService(settings)
    try:
        s = await svc.create_session(Key("app", "u", "s"))
        receipts = [await svc.append_event(s, message(i)) for i in range(3)]
        first = start_worker(settings, faults="after_apply:kill:once")

        async def killed() -> bool:
            return not first.alive()

        await eventually(killed, 30, "the worker killed after its first apply")
        for r in receipts:  # the outcomes were recorded before the kill
            assert await svc.wait_persisted(r, timeout=30) == "applied"
        async with in_process_worker(settings):

            async def acknowledged() -> bool:
                status = await admin.shard_status(svc.client, ShardKeys(
                    settings.key_prefix, 0, 1), settings)
                return status.pending == 0 and status.lag == 0

            await eventually(acknowledged, 30, "the redelivered entries acknowledged")
    finally:
        await svc.close()
    redelivered = total(metric_reader, "sessionstreams.worker.redeliveries", shard=0)
    assert redelivered >= 1
    assert total(metric_reader, "sessionstreams.worker.outcomes", outcome="duplicate") == (
        redelivered)


async def test_worker_metrics_endpoint_scraped_over_http(
    make_service, pipeline_settings, start_worker
) -> None:
    """A worker started with --metrics-port serves Prometheus text on loopback, and the
    figures move with the load."""
    settings = pipeline_settings()
    svc = await make_service(enable_async_persist=True,
                             async_persister_num=settings.async_persister_num)
    port = free_port()
    worker = start_worker(settings, args=["--metrics-port", str(port)])
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> str:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                assert reply.headers["Content-Type"].startswith("text/plain")
                return str(reply.read().decode())
        except OSError:
            return ""

    def value(text: str, name: str, **labels: str) -> float:
        found = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line
                                                   for k, v in labels.items()):
                found += float(line.rsplit(" ", 1)[1])
        return found

    async def serving() -> bool:
        return "sessionstreams_worker_lease_changes_total" in await asyncio.to_thread(scrape)

    await eventually(serving, 30, "the metrics endpoint")
    s = await svc.create_session(Key("app", "u", "s"))
    for r in [await svc.append_event(s, message(i)) for i in range(5)]:
        assert await svc.wait_persisted(r, timeout=20) == "applied"

    async def counted() -> bool:
        text = await asyncio.to_thread(scrape)
        return value(text, "sessionstreams_worker_outcomes_total", outcome="applied") == 5

    await eventually(counted, 10, "5 applied entries in the scraped metrics")
    text = await asyncio.to_thread(scrape)
    n = settings.async_persister_num
    assert value(text, "sessionstreams_worker_lease_changes_total", change="acquired") == n
    assert value(text, "trpc_agent_go_session_redis_append_event_count_total",
                 storage="hashidx") == 5
    assert value(text, "sessionstreams_worker_shards_held") == n
    for gauge in ("backlog", "lag", "pending", "oldest_unacked_age_seconds", "dead_letters"):
        assert re.search(rf"^sessionstreams_shard_{gauge}\{{.*shard=\"0\"", text, re.M), gauge
    assert value(text, "sessionstreams_worker_apply_duration_seconds_count") >= 1
    assert worker.terminate() == 0


# -- logs -----------------------------------------------------------------------------------


async def test_service_logs_carry_the_call_session(make_service, span_exporter) -> None:
    """A line logged during a service call carries app, user, session and the trace ids; a
    password in a logged URL is masked."""
    buf = io.StringIO()
    configure_logging(stream=buf, stdlib=True)  # pytest's own handlers sit on the root logger
    logger = structlog.get_logger("test")

    async def hook(ctx, next_):  # a get_session hook logging from inside the call
        logger.info("hook ran", url="redis://me:hunter2@db:6379/0")
        return await next_()

    svc = await make_service(enable_tracing=True, get_session_hooks=(hook,))
    await svc.create_session(Key("app", "u", "s"))
    await svc.get_session(key=Key("app", "u", "s"))  # the session passed by keyword
    logger.info("outside any call")
    logging.getLogger("redis.test").warning("stdlib line for %s", "redis://me:hunter2@db")
    lines = json_lines(buf.getvalue())
    inside = [ln for ln in lines if ln["event"] == "hook ran"][-1]
    assert (inside["app"], inside["user"], inside["session"]) == ("app", "u", "s")
    assert inside["url"] == "redis://me:***@db:6379/0"
    (span,) = [sp for sp in span_exporter.get_finished_spans()
               if sp.name == "get_session" and sp.parent is None][-1:]
    assert inside["trace_id"] == f"{span.context.trace_id:032x}"
    outside = next(ln for ln in lines if ln["event"] == "outside any call")
    assert "session" not in outside
    stdlib = next(ln for ln in lines if str(ln["event"]).startswith("stdlib line"))
    assert stdlib["event"] == "stdlib line for redis://me:***@db"
    assert stdlib["level"] == "warning"
    assert "hunter2" not in buf.getvalue()


async def test_worker_logs_bound_fields_and_no_password(
    redis_server, start_worker, redis_client, key_prefix: str
) -> None:
    """A worker reaching Redis with a password logs JSON lines with shard, worker, app, user
    and session bound, and never the password."""
    password = f"pw{uuid.uuid4().hex}"
    user = f"obs{uuid.uuid4().hex[:8]}"
    server = redis_server.client()
    try:
        await server.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*",
                                    "+@all")
    except ResponseError as exc:  # a server we do not own may refuse ACL changes
        await server.aclose()
        pytest.skip(f"cannot add an ACL user: {exc}")
    try:
        url = redis_server.url.replace("redis://", f"redis://{user}:{password}@", 1)
        settings = Settings(url=url, key_prefix=key_prefix, enable_async_persist=True,
                            async_persister_num=2, lease_ttl_s=2.0, heartbeat_interval_s=0.25,
                            block_ms=200, dead_letter_after_failures=2,
                            read_your_writes_wait_s=20.0)
        svc = SessionService(settings)
        try:
            s = await svc.create_session(Key("app", "u", "s"))
            await server.set(svc.keys.user_state(s.key), b"not a hash")
            receipt = await svc.append_event(s, message(0, **{"user:x": b"1"}))
            worker = start_worker(settings)
            with pytest.raises(SessionStoreError):  # dead-lettered
                await svc.wait_persisted(receipt, timeout=30)
            assert worker.terminate() == 0
        finally:
            await svc.close()
    finally:
        await server.execute_command("ACL", "DELUSER", user)
        await server.aclose()
    text = worker.log()
    assert password not in text
    lines = json_lines(text)
    started = next(ln for ln in lines if ln["event"] == "worker started")
    assert started["url"].startswith(f"redis://{user}:***@")
    failed = next(ln for ln in lines if ln["event"] == "entry failed")
    assert (failed["app"], failed["user"], failed["session"]) == ("app", "u", "s")
    assert isinstance(failed["shard"], int)
    assert failed["worker"]
    assert all("timestamp" in ln and "level" in ln for ln in lines)


# -- status ---------------------------------------------------------------------------------


def run_status(settings: Settings, *args: str, timeout: float = 30) -> str:
    """``sessionstreams status ARGS`` in a subprocess with the settings' environment."""
    import subprocess
    import sys

    from workers_harness import ROOT, worker_env

    try:
        done = subprocess.run(
            [sys.executable, "-m", "sessionstreams.workers.cli", "status", *args],
            env=worker_env(settings),
            cwd=ROOT, capture_output=True, timeout=timeout, check=True,
        )
    except subprocess.TimeoutExpired as exc:  # --watch runs until stopped
        return (exc.stdout or b"").decode()
    return done.stdout.decode()


async def test_status_table_json_and_watch(pipeline_settings, start_worker) -> None:
    """`sessionstreams status` shows backlog, owners and warnings as a table, the same figures
    with --json, and refreshes with --watch."""
    settings = pipeline_settings(async_persister_num=2)
    svc = SessionService(settings)
    try:
        s = await svc.create_session(Key("app", "u", "s"))
        receipts = [await svc.append_event(s, message(i)) for i in range(3)]
        table = await asyncio.to_thread(run_status, settings)
        assert table.splitlines()[1].split()[:5] == ["shard", "node", "backlog", "pending", "lag"]
        totals = next(ln for ln in table.splitlines() if ln.split()[:1] == ["all"])
        assert totals.split()[1:4] == ["3", "0", "3"]  # backlog, pending, lag
        assert "live workers: 0" in table
        assert "no owner" in table  # entries wait on a shard nobody consumes

        worker = start_worker(settings)
        for r in receipts:
            assert await svc.wait_persisted(r, timeout=20) == "applied"

        async def owned() -> bool:
            st = json.loads(await asyncio.to_thread(run_status, settings, "--json"))
            return all(sh["owner"] for sh in st["shards"]) and len(st["workers"]) == 1

        await eventually(owned, 20, "both shards owned in the --json status")
        table = await asyncio.to_thread(run_status, settings)
        assert "live workers: 1" in table
        assert "shards 0, 1" in table
        assert "no owner" not in table
        watched = await asyncio.to_thread(run_status, settings, "--watch", "0.2", timeout=3)
        assert watched.count("sessionstreams status") >= 2
        assert worker.terminate() == 0
    finally:
        await svc.close()
