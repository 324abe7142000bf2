"""Hostile stream entries and rare faults with real worker processes on a real redis-server.

Whatever is wrong with an entry, the worker that owns its shard dead-letters it after the
configured failures (with its session and request id when they can be read) and goes on
applying the shard's other entries; nothing it acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import signal
import time

import msgspec
import pytest
from workers_harness import eventually

from redis_harness import free_port, start_redis_server
from sessionstreams.common.entries import StreamEntry, encode_entry
from sessionstreams.common.errors import DeadLetteredError, PersistTimeoutError
from sessionstreams.common.hashidx import AppendEntry
from sessionstreams.common.models import Event, Key
from sessionstreams.common.receipt import Receipt
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.shards import ENTRY_FORMAT, ShardKeys, shard_of
from sessionstreams.producer import SessionService
from sessionstreams.workers import admin

pytestmark = pytest.mark.slow


def event_entry(s_key: Key, incarnation: str, rid: str, text: str, **changes: object) -> bytes:
    """A stream entry appending one message to ``s_key``, with fields replaced."""
    event = Event.message("user", text)
    entry = StreamEntry(
        kind="event", app=s_key.app_name, user=s_key.user_id, sid=s_key.session_id,
        incarnation=incarnation,
        event=AppendEntry(rid=rid, event_id=event.id, event_json=event.to_json(),
                          ts_ns=event.timestamp.unix_ns, is_user=True, producer_ts="",
                          session_delta=b""),
    )
    return encode_entry(msgspec.structs.replace(entry, **changes))


async def add_raw(client, settings, key: Key, *encoded: bytes) -> list[str]:
    """Put raw entries on ``key``'s shard stream as the producer's script does."""
    n = settings.async_persister_num
    sk = ShardKeys(settings.key_prefix, shard_of(key, n), n)
    reply = await Scripts().call(client, "stream_add", [sk.stream, sk.conf],
                                 [n, ENTRY_FORMAT, 0, *encoded])
    return [i.decode() for i in reply[1:]]


# -- 3 and 7. every entry a worker cannot apply reaches the dead-letter stream -------------------


async def test_unappliable_entries_are_dead_lettered_and_the_shard_goes_on(
    redis_client, pipeline_settings, start_worker
) -> None:
    """Any entry a worker cannot apply is dead-lettered with what it tells; the shard goes on."""
    settings = pipeline_settings(dead_letter_after_failures=2, async_persister_num=1)
    svc = SessionService(settings.replace(enable_async_persist=False))
    try:
        s = await svc.create_session(Key("app", "u", "s"))
        other = await svc.create_session(Key("app", "u", "other"))
        inc = s.service_meta["incarnation"]
        header_only = msgspec.msgpack.encode({
            "kind": "event", "app": "app", "user": "u", "sid": "s", "incarnation": inc,
            "event": ["rid-int-id", 7, b"{}", 0, True, "", b""],
        })
        bad = {
            "rid-route": event_entry(s.key, inc, "rid-route", "a", route="bogus"),
            "rid-nopayload": event_entry(s.key, inc, "rid-nopayload", "b", event=None),
            "rid-int-id": header_only,
        }
        await add_raw(redis_client, settings, s.key, *bad.values())
        sk = ShardKeys(settings.key_prefix, 0, 1)
        await redis_client.xadd(sk.stream, {b"x": b"no payload field"})
        good = [
            ("rid-after", event_entry(s.key, inc, "rid-after", "after")),
            ("rid-other", event_entry(other.key, other.service_meta["incarnation"],
                                      "rid-other", "other")),
        ]
        ids = await add_raw(redis_client, settings, s.key, *(e for _, e in good))
        start_worker(settings)

        async def all_through() -> bool:
            letters = await admin.dlq_list(redis_client, settings)
            return len(letters) == 4 and await redis_client.xlen(sk.stream) <= 1

        await eventually(all_through, 30, "four dead letters and the good entries applied")
        letters = {letter.rid: letter for letter in await admin.dlq_list(redis_client, settings)}
        assert sorted(letters) == ["?", "rid-int-id", "rid-route"]  # two without a readable rid
        assert letters["rid-int-id"].session == letters["rid-route"].session == "app/u/s"
        for rid in ("rid-int-id", "rid-route"):  # the writer learns the outcome
            with pytest.raises(DeadLetteredError):
                await svc.wait_persisted(Receipt(s.key, 0, ids[0], rid), timeout=5)
        for (rid, _), entry_id in zip(good, ids, strict=True):
            key = s.key if rid == "rid-after" else other.key
            assert await svc.wait_persisted(Receipt(key, 0, entry_id, rid), timeout=5) == \
                "applied"
        got = await svc.get_session(s.key)
        assert [e.response.choices[0].message.content for e in got.events] == ["after"]
    finally:
        await svc.close()


# -- 4. app state follows the session script ---------------------------------------------------


async def test_refused_streamed_append_writes_no_app_state(
    redis_client, pipeline_settings, start_worker
) -> None:
    """A streamed entry the script refuses is dead-lettered without writing its app: delta."""
    settings = pipeline_settings(dead_letter_after_failures=2)
    svc = SessionService(settings)
    try:
        s = await svc.create_session(Key("app", "u", "s"))
        await redis_client.set(svc.keys.meta(s.key), b"not json")
        receipt = await svc.append_event(
            s, Event.message("user", "x", state_delta={"app:x": b"1"}))
        start_worker(settings)
        with pytest.raises(DeadLetteredError):
            await svc.wait_persisted(receipt, timeout=30)
        assert await redis_client.exists(svc.keys.app_state("app")) == 0
    finally:
        await svc.close()


async def test_crash_before_the_app_state_write_repeats_it(
    redis_client, pipeline_settings, start_worker
) -> None:
    """A worker killed before the app-state write: the next owner writes it."""
    settings = pipeline_settings()
    svc = SessionService(settings)
    try:
        s = await svc.create_session(Key("app", "u", "s"))
        receipt = await svc.append_event(
            s, Event.message("user", "x", state_delta={"app:x": b"1", "seq": b"1"}))
        await _killed_at(start_worker, settings, "before_app_state:kill:once")
        assert await redis_client.exists(svc.keys.app_state("app")) == 0
        start_worker(settings)
        assert await svc.wait_persisted(receipt, timeout=30) == "applied"
        await eventually(
            lambda: _has_app_field(redis_client, svc.keys.app_state("app")), 30,
            "the app state written by the next owner")
        got = await svc.get_session(s.key)
        assert got.state["app:x"] == b"1"
        assert len(got.events) == 1
    finally:
        await svc.close()


async def test_a_write_reads_applied_only_once_its_app_state_is_written(
    redis_client, pipeline_settings, start_worker
) -> None:
    """The app state of a streamed append is written after the session script (another
    slot): its receipt reads applied only once that write is done, so a writer waiting for
    it (read-your-writes) reads its own app state."""
    settings = pipeline_settings()
    svc = SessionService(settings)
    try:
        s = await svc.create_session(Key("app", "u", "held"))
        receipt = await svc.append_event(
            s, Event.message("user", "x", state_delta={"app:x": b"1"}))
        await _killed_at(start_worker, settings, "before_app_state:kill:once")
        assert await redis_client.exists(svc.keys.event_data(s.key)) == 1  # the event is in
        with pytest.raises(PersistTimeoutError):
            await svc.wait_persisted(receipt, timeout=1)
        start_worker(settings)
        assert await svc.wait_persisted(receipt, timeout=30) == "applied"
        assert await redis_client.hget(svc.keys.app_state("app"), "x") == b"1"
        got = await svc.get_session(s.key)
        assert got.state["app:x"] == b"1"
    finally:
        await svc.close()


async def test_a_write_reads_applied_only_once_the_other_layouts_user_state_is_written(
    redis_client, pipeline_settings, start_worker
) -> None:
    """In TRANSITION mode a legacy session's user-state change is also written to the HashIdx
    user state (another slot, after the script, winning on reads): the write reads applied
    only once that is done, so its writer never reads the older value back."""
    from sessionstreams.common.models import UserKey
    from sessionstreams.common.settings import CompatMode

    settings = pipeline_settings(compat_mode=CompatMode.TRANSITION)
    svc = SessionService(settings)
    user = UserKey("app", "u")
    try:
        s = await svc.create_session(Key("app", "u", "legacy-held"))
        assert s.service_meta["storage_type"] == "zset"
        first = await svc.append_event(
            s, Event.message("user", "a", state_delta={"user:lang": b"de"}))
        first_worker = start_worker(settings)
        assert await svc.wait_persisted(first, timeout=30) == "applied"
        assert (await svc.list_user_states(user))["lang"] == b"de"
        assert first_worker.terminate() == 0  # its shards are released
        second = await svc.append_event(
            s, Event.message("user", "b", state_delta={"user:lang": b"fr"}))
        await _killed_at(start_worker, settings, "before_other_slots:kill:once")
        with pytest.raises(PersistTimeoutError):
            await svc.wait_persisted(second, timeout=1)
        start_worker(settings)
        assert await svc.wait_persisted(second, timeout=30) == "applied"
        assert (await svc.list_user_states(user))["lang"] == b"fr"
    finally:
        await svc.close()


async def _killed_at(start_worker, settings, fault: str) -> None:
    """Start a worker with ``fault`` (a kill) and wait until it died there."""
    victim = start_worker(settings, faults=fault)

    async def killed() -> bool:
        return not victim.alive()

    await eventually(killed, 60, f"the worker to die at {fault}")


async def _has_app_field(client, key: str) -> bool:
    return await client.hget(key, "x") == b"1"


# -- 9. SIGTERM keeps its bound while Redis is paused ---------------------------------------------


async def test_sigterm_exits_within_the_lease_ttl_while_redis_is_paused(
    tmp_path, pipeline_settings, start_worker
) -> None:
    """SIGTERM with Redis paused exits 1 within lease_ttl_s (was ~160 s); healthy: 0."""
    server = start_redis_server(tmp_path)
    try:
        settings = pipeline_settings(url=server.url, lease_ttl_s=2.0, heartbeat_interval_s=0.2)
        worker = start_worker(settings)
        await eventually(lambda: _logged(worker, "shard taken"), 30, "the worker to take shards")
        server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            code = await asyncio.to_thread(worker.terminate, 60)
            elapsed = time.monotonic() - started
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert code == 1, worker.log()
        assert elapsed < settings.lease_ttl_s + SIGTERM_SLACK_S, elapsed
        assert "shutdown incomplete" in worker.log()
        healthy = start_worker(settings, name="healthy")
        await eventually(lambda: _logged(healthy, "shard taken"), 30, "the next worker")
        assert await asyncio.to_thread(healthy.terminate, 60) == 0
    finally:
        server.stop()


#: Process start-up and exit on a loaded machine, beyond the lease TTL.
SIGTERM_SLACK_S = 6.0


async def _logged(worker, text: str) -> bool:
    return text in worker.log()


# -- 14. OOM is Redis's condition, not the entry's ------------------------------------------------


async def test_worker_waits_out_oom_without_dead_lettering(
    tmp_path, pipeline_settings, start_worker
) -> None:
    """OOM makes a worker retry from its pending list, never dead-letter the entry."""
    server = start_redis_server(tmp_path)
    admin_client = server.client()
    try:
        settings = pipeline_settings(url=server.url, dead_letter_after_failures=1,
                                     lease_ttl_s=10.0, heartbeat_interval_s=0.5,
                                     async_persister_num=1)
        svc = SessionService(settings)
        try:
            s = await svc.create_session(Key("app", "u", "s"))
            receipt = await svc.append_event(s, Event.message("user", "x"))
            # The worker takes its shards, then stalls before its first read: memory runs
            # out meanwhile, so its first apply meets OOM.
            worker = start_worker(settings, faults="before_read:sleep=1:once")
            await eventually(lambda: _logged(worker, "fault fired"), 30, "the stall")
            await admin_client.config_set("maxmemory", 1)
            await eventually(lambda: _logged(worker, "re-reading the pending list"), 30,
                             "the worker to meet OOM on its shard")
            assert "maxmemory" in worker.log()
            await admin_client.config_set("maxmemory", 0)
            assert await svc.wait_persisted(receipt, timeout=30) == "applied"
            assert await admin.dlq_list(admin_client, settings) == []
            assert "shard consumer crashed" not in worker.log()
        finally:
            await admin_client.config_set("maxmemory", 0)
            await svc.close()
    finally:
        await admin_client.aclose()
        server.stop()


# -- 14. a worker started before Redis waits for it ------------------------------------------------


async def test_worker_started_before_redis_retries_until_it_answers(
    tmp_path, pipeline_settings, start_worker
) -> None:
    """A worker started before Redis retries with backoff, then applies writes."""
    port = free_port()
    settings = pipeline_settings(url=f"redis://127.0.0.1:{port}/0")
    worker = start_worker(settings)
    await eventually(lambda: _logged(worker, "waiting for redis"), 30, "a retry at start")
    await eventually(lambda: _retries(worker, 2), 30, "a second retry")
    assert worker.alive(), worker.log()
    server = start_redis_server(tmp_path, port=port)
    try:
        await eventually(lambda: _logged(worker, "worker started"), 30, "the worker to start")
        svc = SessionService(settings)
        try:
            s = await svc.create_session(Key("app", "u", "s"))
            receipt = await svc.append_event(s, Event.message("user", "x"))
            assert await svc.wait_persisted(receipt, timeout=30) == "applied"
        finally:
            await svc.close()
        assert await asyncio.to_thread(worker.terminate, 60) == 0
    finally:
        server.stop()


async def _retries(worker, count: int) -> bool:
    return worker.log().count("waiting for redis") >= count
