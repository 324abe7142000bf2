"""Redis Cluster: users' keys spread over the primaries, each user's keys in one slot, and a
slot migration (``redis-cli --cluster reshard``) under a running write load loses nothing."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter

import pytest
from loadgen import WriteLoad
from redis.crc import key_slot
from topologies import CLI_TIMEOUT_S, RunningCluster, users_in_slots
from workers_harness import eventually

from redis_harness import start_redis_server, start_single_node_cluster
from sessionstreams.common.models import Key
from sessionstreams.common.settings import Settings

#: How start_single_node_cluster runs its node (nodes.conf keeps the slots over a restart).
CLUSTER_NODE_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")

pytestmark = pytest.mark.slow


async def test_users_spread_over_every_primary(
    redis_cluster: RunningCluster, make_service, key_prefix: str
) -> None:
    """90 users' sessions land on all 3 primaries (about a third each); every key of a user
    lives in the user's slot on its owner, and list_app_sessions finds them all."""
    svc = await make_service(url=redis_cluster.url)
    users = [f"spread-{i}" for i in range(90)]
    for user in users:
        s = await svc.create_session(Key("app", user, "s"), {"k": b"v"})
        await svc.update_user_state(s.key, {"lang": b"fr"})
    owners = redis_cluster.slot_owners()
    per_node = Counter(owners[key_slot(u.encode())].port for u in users)
    assert len(per_node) == 3, per_node
    assert min(per_node.values()) >= 15, per_node  # expected 30 each
    for node in redis_cluster.primaries():
        client = node.client()
        try:
            keys = [k.decode() async for k in client.scan_iter(match=f"{key_prefix}:*")]
        finally:
            await client.aclose()
        for name in keys:
            user = name[name.index("{") + 1 : name.index("}")]
            assert key_slot(name.encode()) == key_slot(user.encode())
            assert owners[key_slot(user.encode())] is node
    listed = await svc.list_app_sessions("app")
    assert sorted(s.user_id for s in listed) == sorted(users)


async def test_fresh_client_routes_concurrent_first_commands_by_slot(
    redis_cluster: RunningCluster, make_service
) -> None:
    """Twenty concurrent creates on a fresh service: none is answered MOVED (the client reads
    the slot map first; redis-py alone sends them to a default node, and its MOVED handling
    then closes connections other commands are using)."""
    primaries = redis_cluster.primaries()
    for node in primaries:
        node.command("CONFIG", "RESETSTAT")
    svc = await make_service(url=redis_cluster.url)
    users = [f"fresh-{i}" for i in range(20)]
    await asyncio.gather(*(svc.create_session(Key("app", u, "s")) for u in users))
    rejected = 0
    for node in primaries:
        client = node.client()
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        rejected += sum(int(v.get("rejected_calls", 0)) for v in stats.values())
    assert rejected == 0


async def test_reshard_under_write_load_loses_nothing(
    make_cluster, make_service, record_property
) -> None:
    """Moving 300 slots (holding 6 users' sessions) to another primary with redis-cli while
    writers and readers run: every acknowledged append is stored, once, in order."""
    cluster = make_cluster()
    owners = cluster.slot_owners()
    source, target = owners[0], owners[16383]
    moving = sorted(s for s, n in owners.items() if n is source)[:300]
    movers = users_in_slots(set(moving), 6)
    stayers = users_in_slots({s for s, n in owners.items() if n is not source}, 2, "stay")
    svc = await make_service(url=cluster.url, session_event_storage_limit=0)
    await svc.start()
    load = WriteLoad(svc, users=movers + stayers, writers=8, readers=2)
    async with load:
        await load.wait_for_acks(300)
        began = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run,
            cluster.reshard_command(source, target, len(moving)),
            capture_output=True, timeout=CLI_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        ended = time.monotonic()
        assert done.returncode == 0, done.stdout[-2000:]
        await asyncio.to_thread(cluster.wait_consistent)
        await load.wait_for_acks(200, started_after=ended)
    during = sum(1 for w in load.acks if began <= w.acked <= ended)
    report = await load.verify()
    record_property("reshard_s", round(ended - began, 2))
    record_property("report", report.summary())
    print(f"\ncluster reshard of {len(moving)} slots in {ended - began:.2f}s: {during} appends "
          f"acknowledged meanwhile, {load.reads} reads; {report.summary()}")
    report.assert_ok()
    assert during > 0
    after = cluster.slot_owners()
    assert all(after[key_slot(u.encode())] is target for u in movers)
    assert all(after[s] is target for s in moving)


async def test_primary_sigkill_under_write_load(
    make_cluster, make_service, record_property
) -> None:
    """SIGKILL a primary of a 3+3 cluster under a running producer: its replica takes over,
    the service continues without restart, and every write acknowledged after the first
    success of a write sent after the kill is stored."""
    cluster = make_cluster(replicas_per_primary=1)
    owners = cluster.slot_owners()
    victim = owners[0]
    doomed = users_in_slots({s for s, n in owners.items() if n is victim}, 4)
    others = users_in_slots({s for s, n in owners.items() if n is not victim}, 2, "other")
    svc = await make_service(url=cluster.url, session_event_storage_limit=0)
    await svc.start()
    load = WriteLoad(svc, users=doomed + others, writers=6, readers=1)
    async with load:
        await load.wait_for_acks(300)
        await asyncio.to_thread(cluster.wait_replicated, victim)
        killed_at = time.monotonic()
        victim.kill()
        await asyncio.to_thread(cluster.wait_for_failover, victim)
        await load.wait_for_acks(300, started_after=killed_at, timeout_s=30)
        # The other users' writers reach 300 acks on their own; wait for a write to the
        # failed-over slots too (their writers may still be backing off).
        deadline = time.monotonic() + 30
        while load.first_ack_started_after(killed_at, users=doomed) is None:
            assert time.monotonic() < deadline, (
                f"no write to the failed-over slots succeeded; last failures: "
                f"{[f.error for f in load.failures[-3:]]}")
            await asyncio.sleep(0.05)
    first = load.first_ack_started_after(killed_at, users=doomed)
    assert first is not None
    report = await load.verify(since=first)
    errors = Counter(f.error.rpartition("): ")[2][:60] for f in load.failures)
    record_property("report", report.summary())
    print(f"\ncluster primary SIGKILL: first success {first - killed_at:.2f}s after the kill; "
          f"{report.summary()}; errors {dict(errors)}")
    report.assert_ok()


async def test_worker_outlives_an_unreachable_cluster(tmp_path, start_worker,
                                                      key_prefix: str) -> None:
    """A worker whose Cluster stops answering keeps retrying (redis-py's Cluster errors are
    not RedisErrors) and takes its shards again once the node is back."""
    node = start_single_node_cluster(tmp_path / "node")
    try:
        settings = Settings(url=node.url, key_prefix=key_prefix, enable_async_persist=True,
                            async_persister_num=2, lease_ttl_s=2.0, heartbeat_interval_s=0.25,
                            block_ms=200, client_retries=0)
        worker = start_worker(settings)

        async def shards_taken(count: int) -> bool:
            return worker.log().count('"shard taken"') >= count

        await eventually(lambda: shards_taken(2), 30, "both shards taken")
        node.stop()

        async def retrying() -> bool:
            return worker.log().count("coordination failed; retrying") >= 3

        await eventually(retrying, 30, "the worker to retry coordination")
        assert worker.alive()
        node = start_redis_server(tmp_path / "node", CLUSTER_NODE_ARGS, port=node.port)
        await eventually(lambda: shards_taken(4), 60, "the shards taken again")
        assert worker.alive()
    finally:
        node.stop()
