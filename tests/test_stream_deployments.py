"""The stream pipeline on Redis Cluster and Sentinel with real worker processes.

- Cluster: the shard streams and the users' keys spread over every primary, each worker
  command goes to the node of its shard (no MOVED), ``status`` names each shard's node, and a
  slot migration that moves a shard stream and users' sessions under a running asynchronous
  load with workers loses nothing;
- Sentinel: workers follow ``+switch-master`` from the start, and a SIGKILL of the primary
  under a running producer and workers is survived without restarting anything: every write
  acknowledged after the first success on the promoted primary is applied once, in order, and
  with ``durable_min_replicas=1`` no acknowledged write is lost at all.

Order and exactly-once are checked by ``tests/loadgen.py`` (read back through a synchronous
service) and by waiting for each acknowledged write's receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from typing import Any

import pytest
import redis
from loadgen import LoadReport, Write, WriteLoad
from redis.crc import key_slot
from topologies import CLI_TIMEOUT_S, RunningCluster, users_in_slots
from workers_harness import WorkerProcess, eventually

from sessionstreams.common.errors import PersistTimeoutError
from sessionstreams.common.models import Event, Key
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import ShardKeys, shard_tag
from sessionstreams.producer import SessionService
from sessionstreams.workers import admin
from sessionstreams.workers.runner import Worker

pytestmark = pytest.mark.slow

USERS = [f"user-{i}" for i in range(6)]


async def all_applied(svc: SessionService, writes: list[Write], timeout: float) -> Counter[str]:
    """Wait for every write's receipt; returns the outcomes (``applied`` expected)."""
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    for w in writes:
        remaining = max(deadline - time.monotonic(), 0.01)
        try:
            outcomes[await svc.wait_persisted(w.receipt, timeout=remaining)] += 1
        except Exception as exc:  # counted, reported by the caller's assertion
            outcomes[type(exc).__name__] += 1
    return outcomes


async def shards_held(client: Any, settings: Settings, workers: list[WorkerProcess]) -> None:
    """Wait until the workers (started moments ago) all run and share every shard."""
    n = settings.async_persister_num
    leases = [ShardKeys(settings.key_prefix, i, n).lease for i in range(n)]

    async def held() -> bool:
        assert all(w.alive() for w in workers), [w.log()[-2000:] for w in workers]
        tokens = [await client.get(lease) for lease in leases]
        if not all(tokens):
            return False
        owners = {t.decode().split(":", 1)[0] for t in tokens}
        holding = sum(any(f"-{w.pid}-" in o for o in owners) for w in workers)
        started = all("worker started" in w.log() for w in workers)
        return started and holding == min(n, len(workers))

    await eventually(held, 30, "every worker to hold shards")


async def close_quietly(svc: SessionService) -> None:
    """Close a producer whose lost writes (before a failover) never reach an outcome."""
    with contextlib.suppress(PersistTimeoutError):
        await svc.close(timeout=1)


def figures(report: LoadReport, **extra: Any) -> str:
    parts = [f"{k}={v:.2f}s" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()]
    return ", ".join(parts) + f"; {report.summary()}"


# -- Cluster ---------------------------------------------------------------------------------


async def test_shards_and_users_spread_over_the_primaries(
    redis_cluster: RunningCluster, pipeline_settings, start_worker, make_service
) -> None:
    """The default 10 shard streams land on all 3 primaries (3/3/4, every key of a shard in
    its slot); 300 users' HashIdx keys land on all 3 (about a third each), written by 2
    workers whose commands all go to the right node (no MOVED); status names each shard's
    node."""
    owners = redis_cluster.slot_owners()
    settings = pipeline_settings(url=redis_cluster.url, async_persister_num=10)
    n = settings.async_persister_num
    shard_keys = [ShardKeys(settings.key_prefix, i, n) for i in range(n)]
    for sk in shard_keys:
        names = (sk.stream, sk.summary, sk.conf, sk.lease, sk.failures, sk.dlq)
        assert len({key_slot(k.encode()) for k in names}) == 1, sk.tag
    per_node = Counter(owners[key_slot(sk.stream.encode())].port for sk in shard_keys)
    assert sorted(per_node.values()) == [3, 3, 4], per_node

    users = [f"spread-{i}" for i in range(300)]
    user_nodes = Counter(owners[key_slot(u.encode())].port for u in users)
    assert len(user_nodes) == 3
    assert min(user_nodes.values()) >= 70, user_nodes  # expected 100 each

    await asyncio.to_thread(_reset_stats, redis_cluster)
    workers = [start_worker(settings) for _ in range(2)]
    svc = SessionService(settings)
    try:
        sessions = [await svc.create_session(Key("app", u, "s")) for u in users]
        for s in sessions:
            await svc.append_event(s, Event.message("user", "hi", state_delta={"k": b"v"}))
        await svc.flush(60)
        status = await admin.status(svc.client, settings)
    finally:
        await svc.close()
    assert all(w.alive() for w in workers)
    assert await asyncio.to_thread(_rejected_calls, redis_cluster) == 0
    for s in status.shards:  # status shows the node that owns each shard's slot
        owner = owners[key_slot(shard_keys[s.shard].stream.encode())]
        assert s.node == f"{owner.host}:{owner.port}", s
    assert len({s.node for s in status.shards}) == 3
    stored: Counter[int] = Counter()
    for node in redis_cluster.primaries():
        client = node.client()
        try:
            async for name in client.scan_iter(match=f"{settings.key_prefix}:hashidx:*"):
                text = name.decode()
                user = text[text.index("{") + 1 : text.index("}")]
                assert owners[key_slot(user.encode())] is node, text
                stored[node.port] += 1
        finally:
            await client.aclose()
    assert len(stored) == 3, stored
    reader = await make_service(url=redis_cluster.url)
    for s in sessions[:: 30]:
        got = await reader.get_session(s.key)
        assert got is not None
        assert got.state["k"] == b"v"


def _reset_stats(cluster: RunningCluster) -> None:
    for node in cluster.primaries():
        node.command("CONFIG", "RESETSTAT")


def _rejected_calls(cluster: RunningCluster) -> int:
    total = 0
    for node in cluster.primaries():
        with redis.Redis(host=node.host, port=node.port, protocol=2) as client:
            stats = client.info("commandstats")
        total += sum(int(v.get("rejected_calls", 0)) for v in stats.values())
    return total


@pytest.mark.timeout(240)  # a failure waits out the settle and receipt deadlines
@pytest.mark.parametrize("durable", [0, 1], ids=["async-replication", "durable_min_replicas=1"])
async def test_reshard_of_a_shard_stream_under_async_load(
    make_cluster, pipeline_settings, start_worker, make_service, record_property, durable: int
) -> None:
    """``redis-cli --cluster reshard`` moves the slots holding a shard stream (the one of
    half the sessions) and 4 users' sessions to another primary while 8 writers append in
    asynchronous mode and 3 workers apply: every acknowledged write is applied exactly once,
    in order, and no worker restarts. With durable_min_replicas=1 (a 3+3 cluster) the
    producer's write-and-WAIT follows the redirections of the moving slots itself."""
    cluster = make_cluster(replicas_per_primary=durable)
    owners = cluster.slot_owners()
    shards = 2
    stream_slot = key_slot(shard_tag(1, shards).encode())
    source = owners[stream_slot]
    target = next(n for n in cluster.primaries() if n is not source)
    source_slots = sorted(s for s, n in owners.items() if n is source)
    moving = source_slots[: source_slots.index(stream_slot) + 200]  # the lowest ones
    movers = users_in_slots(set(moving), 4)
    stayers = users_in_slots({s for s, n in owners.items() if n is not source}, 4, "stay")
    settings = pipeline_settings(url=cluster.url, async_persister_num=shards,
                                 session_event_storage_limit=0, durable_min_replicas=durable)
    workers = [start_worker(settings) for _ in range(3)]
    svc = SessionService(settings)
    reader = await make_service(url=cluster.url)
    await svc.start()
    await shards_held(reader.client, settings, workers)
    try:
        async with WriteLoad(svc, users=movers + stayers, sessions_per_user=2, writers=8,
                             readers=1) as load:
            await load.wait_for_acks(300)
            began = time.monotonic()
            done = await asyncio.to_thread(
                subprocess.run, cluster.reshard_command(source, target, len(moving)),
                capture_output=True, timeout=CLI_TIMEOUT_S, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            ended = time.monotonic()
            assert done.returncode == 0, done.stdout[-2000:]
            await asyncio.to_thread(cluster.wait_consistent)
            await load.wait_for_acks(300, started_after=ended)
        settle_began = time.monotonic()
        report = await load.verify(reader, settle_s=60)
        settled = time.monotonic() - settle_began
        outcomes = await all_applied(svc, load.acks, 60)
    finally:
        await close_quietly(svc)
    during = [w for w in load.acks if began <= w.acked <= ended]
    on_moved_stream = sum(1 for w in during if w.receipt.shard == 1)
    text = figures(report, reshard_s=ended - began, slots=len(moving), acked_during=len(during),
                   on_moved_stream=on_moved_stream, settle_s=settled, outcomes=dict(outcomes))
    record_property("figures", text)
    print(f"\ncluster reshard under async load with workers (durable_min_replicas={durable}): "
          f"{text}")
    report.assert_ok()
    assert outcomes == {"applied": len(load.acks)}, outcomes
    assert on_moved_stream > 0
    assert all(w.alive() for w in workers), [w.log()[-2000:] for w in workers]
    after = cluster.slot_owners()
    assert after[stream_slot] is target
    assert all(after[key_slot(u.encode())] is target for u in movers)


# -- Sentinel --------------------------------------------------------------------------------


async def test_worker_starts_the_failover_watch_on_both_clients(
    redis_sentinel, pipeline_settings
) -> None:
    """A worker on Sentinel subscribes to +switch-master for its command and its stream
    client at start, even when it holds no shard (its stream client sent nothing yet);
    stopping it ends both watches."""
    settings = pipeline_settings(url=redis_sentinel.url)
    target = redis_sentinel.client()
    n = settings.async_persister_num
    try:
        for i in range(n):  # every shard is held by someone else
            await target.set(ShardKeys(settings.key_prefix, i, n).lease, "other:token", px=60_000)
        worker = Worker(settings)
        task = asyncio.create_task(worker.run())

        async def watching() -> bool:
            return (worker.client.failover_watch.running
                    and worker.stream_client.failover_watch.running)

        await eventually(watching, 10, "both failover watches to run")
        await asyncio.sleep(3 * settings.heartbeat_interval_s)
        assert not worker.consumers  # it took no shard: the stream client stayed idle
        assert worker.stream_client.failover_watch.running
        worker.stopping.set()
        assert await asyncio.wait_for(task, 30) == 0
        assert not worker.client.failover_watch.running
        assert not worker.stream_client.failover_watch.running
    finally:
        await target.aclose()


@pytest.mark.timeout(240)  # a failure waits out the settle and receipt deadlines
@pytest.mark.parametrize("durable", [0, 1], ids=["async-replication", "durable_min_replicas=1"])
async def test_sentinel_primary_sigkill_with_workers(
    make_sentinel_group, pipeline_settings, start_worker, make_service, record_property,
    durable: int,
) -> None:
    """SIGKILL of the Sentinel primary under a running asynchronous producer (4 writers, a
    reader) and 2 workers: after the promotion both go on without restart; every write
    acknowledged after the first success on the promoted primary is applied exactly once, in
    order; with durable_min_replicas=1 (and a second replica) no acknowledged write is lost."""
    group = make_sentinel_group(replicas=1 + durable)
    settings = pipeline_settings(
        url=group.url, session_event_storage_limit=0, durable_min_replicas=durable,
        read_your_writes_wait_s=2.0, read_your_writes_stale_ok=True,
    )  # fmt: skip
    workers: list[WorkerProcess] = [start_worker(settings) for _ in range(2)]
    svc = SessionService(settings)
    reader = await make_service(url=group.url)
    await svc.start()
    await shards_held(reader.client, settings, workers)
    try:
        async with WriteLoad(svc, users=USERS, writers=4, readers=1) as load:
            killed_at, _old, new = await load.kill_primary(group)
        first = load.first_ack_started_after(killed_at)
        assert first is not None
        settle_began = time.monotonic()
        report = await load.verify(reader, since=None if durable else first, settle_s=60)
        settled = time.monotonic() - settle_began
        must = load.acks if durable else [w for w in load.acks if w.acked >= first]
        outcomes = await all_applied(svc, must, 60)
    finally:
        await close_quietly(svc)
    uncertain = sum(1 for f in load.failures if "PersistUncertainError" in f.error)
    text = figures(report, outage_s=first - killed_at, settle_s=settled, checked=len(must),
                   outcomes=dict(outcomes), uncertain=uncertain)
    record_property("figures", text)
    print(f"\nsentinel SIGKILL with workers (durable_min_replicas={durable}), new primary "
          f":{new.port}: {text}")
    report.assert_ok()
    assert outcomes == {"applied": len(must)}, outcomes
    if durable:
        assert not report.lost_before
    assert all(w.alive() for w in workers), [w.log()[-2000:] for w in workers]
    for w in workers:  # each worker's watch saw the switch (the pools were recycled)
        assert "sentinel_switch_master" in w.log(), w.log()[-2000:]
