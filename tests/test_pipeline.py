"""The async persist pipeline with real worker subprocesses on a real redis-server.

Order is observable: events carry a ``seq`` in their state delta and track events are
interleaved; the final state, the stored events and the track sequence must follow the
append order, equal timestamps included. Exactly-once: every acknowledged write reaches one
outcome, and no event is stored twice.

A representative subset (order over several workers, SIGKILL mid-batch, dead letters,
SIGTERM) also runs on Redis Cluster and Sentinel (``ON_EVERY_TOPOLOGY``); the whole module
runs there with ``SESSIONSTREAMS_TEST_TOPOLOGY=cluster`` (or ``sentinel``).
"""

from __future__ import annotations

import asyncio
import signal

import pytest
from workers_harness import eventually

from sessionstreams.common.entries import StreamEntry, encode_entry
from sessionstreams.common.errors import (
    BackpressureError,
    ConfigError,
    DeadLetteredError,
    PersistTimeoutError,
    SessionNotFoundError,
)
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.hashidx import AppendEntry
from sessionstreams.common.models import Event, Key, TrackEvent
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.shards import ENTRY_FORMAT, ShardKeys, shard_of
from sessionstreams.producer import SessionService

pytestmark = pytest.mark.slow
ON_EVERY_TOPOLOGY = pytest.mark.topologies("cluster", "sentinel")


def seq_event(i: int, ts: GoTime | None = None) -> Event:
    """A message whose state delta carries its position in the session."""
    role = "user" if i % 3 == 0 else "assistant"
    return Event.message(role, f"m{i}", state_delta={"seq": str(i).encode()}, timestamp=ts,
                         request_id=f"r{i // 3}")


def seq_track(i: int) -> TrackEvent:
    return TrackEvent(track="t", payload=str(i).encode(), timestamp=GoTime.now())


async def check_session(reader: SessionService, key: Key, events: int, tracks: int) -> None:
    """Stored events, state and tracks follow the append order, each write exactly once."""
    got = await reader.get_session(key, num_events=10_000)
    assert got is not None, key
    seqs = [int((e.state_delta or {})["seq"]) for e in got.events]
    assert seqs == list(range(events)), (key, seqs)
    assert got.state["seq"] == str(events - 1).encode()
    track = await reader.get_track_events(key, "t")
    assert [int(e.payload or b"-1") for e in track.events or []] == list(range(tracks)), key


async def write_session(
    svc: SessionService, key: Key, events: int, tracks_every: int, pause_s: float = 0.0
) -> int:
    """Append ``events`` seq events (two share one timestamp), a track event every few."""
    session = await svc.create_session(key)
    same = GoTime.now()
    tracks = 0
    for i in range(events):
        if i == 1:
            same = GoTime.now()
        ts = same if i in (1, 2) else None
        await svc.append_event(session, seq_event(i, ts))
        if pause_s:
            await asyncio.sleep(pause_s)
        if tracks_every and i % tracks_every == 0:
            await svc.append_track_event(session, seq_track(tracks))
            tracks += 1
    return tracks


@ON_EVERY_TOPOLOGY
async def test_order_with_three_workers_and_200_sessions(
    make_service, pipeline_settings, start_worker
) -> None:
    """3 workers, 200 sessions written concurrently: per-session order holds everywhere."""
    settings = pipeline_settings()
    for _ in range(3):
        start_worker(settings)
    svc = SessionService(settings)
    reader = await make_service()
    keys = [Key("app", f"u{i % 20}", f"s{i}") for i in range(200)]
    try:
        tracks = await asyncio.gather(*(write_session(svc, k, 9, 3) for k in keys))
        await svc.flush(60)
        for key, n_tracks in zip(keys, tracks, strict=True):
            await check_session(reader, key, 9, n_tracks)
    finally:
        await svc.close()


async def test_read_your_writes_in_process(make_service, pipeline_settings, start_worker) -> None:
    """get_session right after append_event sees the write (waits for its receipt)."""
    start_worker()
    svc = SessionService(pipeline_settings())
    try:
        s = await svc.create_session(Key("app", "u", "s"))
        for i in range(5):
            await svc.append_event(s, seq_event(i))
            got = await svc.get_session(s.key)
            assert got is not None
            assert got.state["seq"] == str(i).encode()
    finally:
        await svc.close()


async def test_receipt_waited_in_another_process(
    make_service, pipeline_settings, start_worker
) -> None:
    """A receipt passed as text lets another service wait for the write."""
    start_worker()
    writer = SessionService(pipeline_settings())
    other = await make_service(enable_async_persist=True, async_persister_num=4)
    try:
        s = await writer.create_session(Key("app", "u", "s"))
        receipt = await writer.append_event(s, seq_event(0))
        assert await other.wait_persisted(str(receipt), timeout=20) == "applied"
    finally:
        await writer.close()


@ON_EVERY_TOPOLOGY
async def test_sigkill_mid_batch_under_load(
    make_service, redis_client, pipeline_settings, start_worker
) -> None:
    """A worker killed mid-batch (and another killed from outside): every write lands once."""
    settings = pipeline_settings(worker_batch_size=20)
    suicidal = start_worker(settings, faults="mid_batch:kill@4:once", name="suicidal")

    async def holds_all() -> bool:
        return len(await _owners(redis_client, settings)) == settings.async_persister_num

    await eventually(holds_all, 10, "the first worker to hold every shard")
    victim = start_worker(settings, name="victim")
    svc = SessionService(settings)
    reader = await make_service()
    keys = [Key("app", f"u{i}", f"s{i}") for i in range(30)]
    try:
        writing = asyncio.gather(*(write_session(svc, k, 20, 0) for k in keys))
        await asyncio.sleep(0.5)
        victim.kill()
        start_worker(settings, name="replacement")
        await writing
        await svc.flush(60)
        for key in keys:
            await check_session(reader, key, 20, 0)
        assert suicidal.proc.wait(10) == -signal.SIGKILL  # it really died mid-batch
        assert "fault fired" in suicidal.log()
    finally:
        await svc.close()


@pytest.mark.parametrize("point", ["before_read", "after_apply"])
async def test_stale_owner_neither_loses_nor_duplicates(
    make_service, redis_client, pipeline_settings, start_worker, point
) -> None:
    """An owner stalled past its lease (between lease check and read, or apply and ack)."""
    settings = pipeline_settings(lease_ttl_s=1.0, heartbeat_interval_s=0.2)
    stale = start_worker(settings, faults=f"{point}:sleep=3@3:once", name="stale")
    healthy = start_worker(settings, name="healthy")

    async def both_hold_shards() -> bool:  # so the writes pass through both, faults included
        return len(set((await _owners(redis_client, settings)).values())) == 2

    await eventually(both_hold_shards, 20, "both workers to hold shards")
    svc = SessionService(settings)
    reader = await make_service()
    keys = [Key("app", f"u{i}", f"s{i}") for i in range(12)]
    try:
        await asyncio.gather(*(write_session(svc, k, 25, 5, pause_s=0.1) for k in keys))
        await svc.flush(60)
        for key in keys:
            await check_session(reader, key, 25, 5)
    finally:
        await svc.close()
    assert "fault fired" in stale.log()

    async def stood_down() -> bool:  # it resumes as a stale owner and stands down
        return "lease lost" in stale.log()

    await eventually(stood_down, 10, "the stale owner to notice its lost lease")
    for key in keys:  # and nothing it did after waking changed the outcome
        await check_session(reader, key, 25, 5)
    # the healthy worker took the stalled worker's shards: more than its even share of 2
    assert healthy.log().count("shard taken") > 2


async def _owners(redis_client, settings) -> dict[int, str]:
    n = settings.async_persister_num
    out: dict[int, str] = {}
    for i in range(n):
        token = await redis_client.get(ShardKeys(settings.key_prefix, i, n).lease)
        if token:
            out[i] = token.decode().split(":", 1)[0]
    return out


def _spread(owners: dict[int, str], pids: list[int]) -> list[int]:
    counts = [sum(1 for o in owners.values() if f"-{pid}-" in o) for pid in pids]
    return sorted(counts)


async def test_rebalancing_converges_within_bound(
    redis_client, pipeline_settings, start_worker
) -> None:
    """Workers joining and leaving converge to shares differing by at most one, in bound."""
    settings = pipeline_settings(async_persister_num=7, lease_ttl_s=1.0, heartbeat_interval_s=0.2)
    bound = 2 * settings.lease_ttl_s + settings.heartbeat_interval_s + 1.5  # + process start
    first = start_worker(settings)

    async def spread_is(pids: list[int], want: list[int]) -> bool:
        owners = await _owners(redis_client, settings)
        return len(owners) == 7 and _spread(owners, pids) == want

    await eventually(lambda: spread_is([first.pid], [7]), 10, "one worker holding all shards")
    second, third = start_worker(settings), start_worker(settings)
    pids = [first.pid, second.pid, third.pid]
    took = await eventually(lambda: spread_is(pids, [2, 2, 3]), bound + 3, "a 2/2/3 split")
    assert took <= bound + 3
    assert third.terminate() == 0
    took = await eventually(lambda: spread_is(pids[:2], [3, 4]), bound, "a 3/4 split after a leave")
    assert took <= bound


async def test_client_retried_xadd_applies_once(
    make_service, pipeline_settings, start_worker
) -> None:
    """The same entry added twice (a client retry) is applied once; the second is a duplicate."""
    settings = pipeline_settings()
    svc = await make_service(enable_async_persist=False)
    s = await svc.create_session(Key("app", "u", "s"))
    event = seq_event(0)
    entry = StreamEntry(
        kind="event", app="app", user="u", sid="s", incarnation=s.service_meta["incarnation"],
        event=AppendEntry(rid="retried-rid", event_id=event.id, event_json=event.to_json(),
                          ts_ns=event.timestamp.unix_ns, is_user=True, producer_ts="",
                          session_delta=b'{"n":"MQ=="}'),
    )
    n = settings.async_persister_num
    sk = ShardKeys(settings.key_prefix, shard_of(s.key, n), n)
    scripts = Scripts()
    for _ in range(2):
        await scripts.call(svc.client, "stream_add", [sk.stream, sk.conf],
                           [n, ENTRY_FORMAT, 0, encode_entry(entry)])
    start_worker(settings)

    async def drained() -> bool:
        pending = await svc.client.xpending(sk.stream, "persist")
        return await svc.client.xlen(sk.stream) <= 1 and not pending["pending"]

    await eventually(drained, 20, "the shard to drain")
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == [event.id]
    assert await svc.client.zcard(svc.keys.applied(s.key)) == 1


async def test_delete_and_recreate_drop_inflight_entries(
    make_service, pipeline_settings, start_worker
) -> None:
    """Entries queued for a session deleted and re-created are superseded, never applied."""
    settings = pipeline_settings()
    svc = SessionService(settings)
    try:
        old = await svc.create_session(Key("app", "u", "s"))
        receipts = [await svc.append_event(old, seq_event(i)) for i in range(3)]
        await svc.delete_session(old.key)
        new = await svc.create_session(Key("app", "u", "s"), {"fresh": b"1"})
        start_worker(settings)
        for r in receipts:
            with pytest.raises(SessionNotFoundError):
                await svc.wait_persisted(r, timeout=20)
        got = await svc.get_session(new.key)
        assert got is not None
        assert got.events == []
        assert "seq" not in got.state
    finally:
        await svc.close()


async def test_backpressure(pipeline_settings, start_worker) -> None:
    """Past the backlog cap the producer waits, then BackpressureError; once drained, goes on."""
    settings = pipeline_settings(async_persister_num=1, stream_backlog_max=3,
                                 backpressure_wait_s=0.3)
    svc = SessionService(settings)
    try:
        s = await svc.create_session(Key("app", "u", "s"))
        for i in range(3):
            await svc.append_event(s, seq_event(i))
        with pytest.raises(BackpressureError, match="backlog"):
            await svc.append_event(s, seq_event(3))
        start_worker(settings)
        await svc.flush(20)
        await svc.append_event(s, seq_event(3))
        await svc.flush(20)
    finally:
        await svc.close()


@ON_EVERY_TOPOLOGY
async def test_poison_entry_dead_lettered_replayed(
    make_service, redis_client, pipeline_settings, start_worker
) -> None:
    """A failing entry holds its session's later entries, goes to the DLQ, and replays."""
    from sessionstreams.workers import admin

    settings = pipeline_settings(dead_letter_after_failures=3)
    svc = SessionService(settings)
    reader = await make_service()
    try:
        s = await svc.create_session(Key("app", "u", "s"))
        await svc.append_event(s, seq_event(0))
        ustate = svc.keys.user_state(s.key)
        await redis_client.set(ustate, b"not a hash")  # the user: delta below cannot apply
        poison = Event.message("user", "poison", state_delta={"user:x": b"1", "seq": b"p"})
        bad = await svc.append_event(s, poison)
        later = [await svc.append_event(s, seq_event(i)) for i in (1, 2)]
        start_worker(settings)

        async def dlq_len() -> int:
            return len(await admin.dlq_list(redis_client, settings))

        index = svc.keys.event_index(s.key)

        async def held_then_released() -> bool:
            in_dlq = await dlq_len()
            stored = await redis_client.zcard(index)
            if in_dlq == 0:  # before the dead letter, nothing after the poison is applied
                assert stored <= 1
            return in_dlq == 1 and stored == 3

        await eventually(held_then_released, 30, "the poison entry in the DLQ")
        with pytest.raises(DeadLetteredError):
            await svc.wait_persisted(bad, timeout=5)
        for r in later:
            assert await svc.wait_persisted(r, timeout=5) == "applied"
        await redis_client.delete(ustate)
        assert await admin.dlq_replay(redis_client, settings) == 1
        assert await svc.wait_persisted(bad, timeout=20) == "applied"
        got = await reader.get_session(s.key)
        assert "poison" in [e.response.choices[0].message.content for e in got.events]
        assert got.state["seq"] == b"p"  # applied after the newer events: outside the order
        assert await dlq_len() == 0
    finally:
        await svc.close()


@ON_EVERY_TOPOLOGY
async def test_sigterm_drains_and_releases(
    make_service, redis_client, pipeline_settings, start_worker
) -> None:
    """SIGTERM: the worker acks what it has, releases its leases, exits 0; nothing is lost."""
    settings = pipeline_settings()
    worker = start_worker(settings)

    async def holds_all() -> bool:
        return len(await _owners(redis_client, settings)) == settings.async_persister_num

    await eventually(holds_all, 10, "the worker to hold every shard")
    svc = SessionService(settings)
    reader = await make_service()
    keys = [Key("app", "u", f"s{i}") for i in range(10)]
    try:
        writing = asyncio.gather(*(write_session(svc, k, 15, 0, pause_s=0.01) for k in keys))
        await asyncio.sleep(0.3)
        assert worker.terminate() == 0
        assert await _owners(redis_client, settings) == {}
        start_worker(settings)
        await writing
        await svc.flush(60)
        for key in keys:
            await check_session(reader, key, 15, 0)
    finally:
        await svc.close()


async def test_shard_count_mismatch_refused(pipeline_settings, start_worker) -> None:
    """A producer or worker with another shard count than the one in force is refused."""
    first = SessionService(pipeline_settings(async_persister_num=4))
    other = SessionService(pipeline_settings(async_persister_num=5))
    try:
        s = await first.create_session(Key("app", "u", "s"))
        await first.append_event(s, seq_event(0))
        with pytest.raises(ConfigError, match="4 shards"):
            await other.start()
        with pytest.raises(ConfigError, match="4 shards"):
            await other.append_event(s, seq_event(1))
        bad_worker = start_worker(pipeline_settings(async_persister_num=5))
        assert bad_worker.proc.wait(20) != 0
        assert "4 shards" in bad_worker.log()
    finally:
        with pytest.raises(PersistTimeoutError):  # no worker ran: the write is still queued
            await first.close(timeout=0.2)
        await other.close()



async def test_streamed_writes_to_a_legacy_session(
    make_service, redis_client, pipeline_settings, start_worker
) -> None:
    """A session in the legacy layout receives streamed writes there, in order."""
    from sessionstreams.common.settings import CompatMode

    settings = pipeline_settings(compat_mode=CompatMode.TRANSITION)
    start_worker(settings)
    svc = SessionService(settings)
    reader = await make_service(compat_mode=CompatMode.LEGACY)
    try:
        s = await svc.create_session(Key("app", "u", "legacy"))
        assert s.service_meta["storage_type"] == "zset"
        for i in range(6):
            await svc.append_event(s, seq_event(i))
        await svc.update_session_state(s.key, {"extra": b"1"})
        await svc.flush(20)
        await check_session(reader, s.key, 6, 0)
        assert await redis_client.zcard(svc.keys.legacy_events(s.key)) == 6
        assert not await redis_client.exists(svc.keys.event_index(s.key))
        got = await reader.get_session(s.key)
        assert got is not None
        assert got.state["extra"] == b"1"
    finally:
        await svc.close()


async def test_flush_confirms_writes_older_than_the_request_record(
    pipeline_settings, start_worker
) -> None:
    """More writes to one session than its request record keeps: flush still confirms all."""
    settings = pipeline_settings(async_persister_num=1, session_event_storage_limit=0)
    start_worker(settings)
    svc = SessionService(settings)
    try:
        s = await svc.create_session(Key("app", "u", "many"))
        receipts = []
        for start in range(0, 1300, 100):
            batch = [seq_event(i) for i in range(start, start + 100)]
            receipts += await svc.append_events(s, batch)
        await svc.flush(60)
        assert await svc.wait_persisted(receipts[0], timeout=5) == "applied"
        got = await svc.get_session(s.key, num_events=2000)
        assert got is not None
        assert len(got.events) == 1300
    finally:
        await svc.close()


async def test_shards_resize(make_service, redis_client, pipeline_settings, start_worker) -> None:
    """resize drains every shard, then only producers and workers with the new count run."""
    from sessionstreams.workers import admin

    old_settings = pipeline_settings(async_persister_num=3)
    old_worker = start_worker(old_settings)
    old = SessionService(old_settings)
    reader = await make_service()
    try:
        s = await old.create_session(Key("app", "u", "s"))
        for i in range(10):
            await old.append_event(s, seq_event(i))
        await admin.resize(redis_client, old_settings, to=5, timeout_s=30)
        await check_session(reader, s.key, 10, 0)  # everything written before was applied
        with pytest.raises(ConfigError, match="5 shards"):
            await old.append_event(s, seq_event(10))
        assert old_worker.proc.wait(15) == 3  # the old worker stops by itself
        new_settings = pipeline_settings(async_persister_num=5)
        start_worker(new_settings)
        new = SessionService(new_settings)
        try:
            for i in range(10, 20):
                await new.append_event(s, seq_event(i))
            await new.flush(30)
        finally:
            await new.close()
        await check_session(reader, s.key, 20, 0)
    finally:
        await old.close(timeout=1)


async def test_streams_are_trimmed_after_acknowledgement(
    redis_client, pipeline_settings, start_worker
) -> None:
    """Acknowledged entries are trimmed: a drained shard keeps at most its newest entry."""
    settings = pipeline_settings(async_persister_num=2)
    start_worker(settings)
    svc = SessionService(settings)
    try:
        sessions = [await svc.create_session(Key("app", "u", f"s{i}")) for i in range(6)]
        for i in range(30):
            await svc.append_event(sessions[i % 6], seq_event(i))
        await svc.flush(30)
        for shard in range(2):
            assert await redis_client.xlen(ShardKeys(settings.key_prefix, shard, 2).stream) <= 1
    finally:
        await svc.close()


def test_cli_status_and_dlq(pipeline_settings, capsys) -> None:
    """`sessionstreams status --json` and `dlq list` run against the pipeline's Redis."""
    import json

    from sessionstreams.workers.cli import main

    settings = pipeline_settings()
    env_args = ["--url", settings.url]
    import os

    os.environ["SESSIONSTREAMS_KEY_PREFIX"] = settings.key_prefix
    os.environ["SESSIONSTREAMS_ASYNC_PERSISTER_NUM"] = str(settings.async_persister_num)
    try:
        assert main([*env_args, "status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert len(status["shards"]) == settings.async_persister_num
        assert main([*env_args, "dlq", "list"]) == 0
    finally:
        del os.environ["SESSIONSTREAMS_KEY_PREFIX"]
        del os.environ["SESSIONSTREAMS_ASYNC_PERSISTER_NUM"]
