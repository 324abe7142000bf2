"""``durable_min_replicas``: the producer's ``WAIT`` runs right after the stream write, on the
same connection of the shard's node, on a Cluster with replicas and on Sentinel. A write
returns once a replica holds it; without a confirming replica it raises
``PersistUncertainError``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from topologies import RunningCluster
from workers_harness import eventually

from redis_harness import RunningRedis
from sessionstreams.common.errors import ConfigError, PersistTimeoutError, PersistUncertainError
from sessionstreams.common.models import Event, Key
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import ShardKeys, shard_of
from sessionstreams.producer import SessionService

pytestmark = pytest.mark.slow

SHARDS = 10


def _sync(node: RunningRedis) -> redis.Redis:
    return redis.Redis(host=node.host, port=node.port, protocol=2, socket_timeout=5,
                       single_connection_client=True)


def on_replica(replica: RunningRedis, stream: str, entry_id: str, *, cluster: bool) -> bool:
    """True when ``replica`` holds stream entry ``entry_id`` (READONLY on a cluster replica)."""
    with _sync(replica) as client:
        if cluster:
            client.execute_command("READONLY")
        return bool(client.xrange(stream, entry_id, entry_id))


def replication(node: RunningRedis, field: str) -> Any:
    """One field of ``INFO replication`` of ``node``."""
    with _sync(node) as client:
        return client.info("replication")[field]


def wait_calls(node: RunningRedis) -> int:
    """How many WAIT commands ``node`` served since its last CONFIG RESETSTAT."""
    with _sync(node) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def cluster_replica_of(cluster: RunningCluster, primary: RunningRedis) -> RunningRedis:
    """The replica of ``primary`` in a cluster with one replica per primary."""
    for node in cluster.live_nodes():
        with _sync(node) as client:
            info = client.info("replication")
        if info.get("role") == "slave" and int(info["master_port"]) == primary.port:
            return node
    raise AssertionError(f"no replica of :{primary.port}")


@contextlib.contextmanager
def stopped(node: RunningRedis) -> Iterator[None]:
    """SIGSTOP ``node`` for the block (it keeps its connections but acknowledges nothing)."""
    assert node.process is not None
    node.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        node.process.send_signal(signal.SIGCONT)


async def close_unflushed(*services: SessionService) -> None:
    """Close services whose entries no worker applies (they stay on their streams)."""
    for svc in services:
        with contextlib.suppress(PersistTimeoutError):
            await svc.close(timeout=0)


def durable_settings(url: str, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "url": url, "key_prefix": prefix, "enable_async_persist": True,
        "async_persister_num": SHARDS, "durable_min_replicas": 1, "durable_wait_timeout_s": 4.0,
    }
    values.update(overrides)
    return Settings(**values)


def session_on(
    owner_of: Any, node: RunningRedis, prefix: str, sid: str = "s"
) -> tuple[Key, str]:
    """A session key whose shard stream lives on ``node``, and that stream's key."""
    for i in range(1000):
        key = Key("app", f"u{i}", sid)
        stream = ShardKeys(prefix, shard_of(key, SHARDS), SHARDS).stream
        if owner_of(stream) is node:
            return key, stream
    raise AssertionError(f"no shard on :{node.port}")


async def check_durable_write(
    svc: SessionService, key: Key, stream: str, replica: RunningRedis, *, cluster: bool
) -> None:
    """With the replica stopped the append does not return; once it runs again the append
    returns, and the replica already holds the entry."""
    session = await svc.create_session(key)
    with stopped(replica):
        append = asyncio.create_task(svc.append_event(session, Event.message("user", "held")))
        await asyncio.sleep(0.5)
        assert not append.done(), "the write returned before any replica confirmed it"
    receipt = await asyncio.wait_for(append, 10)
    assert await asyncio.to_thread(on_replica, replica, stream, receipt.entry_id,
                                   cluster=cluster)
    for i in range(5):  # and each write, at full speed, is on the replica when it returns
        receipt = await svc.append_event(session, Event.message("user", f"m{i}"))
        assert await asyncio.to_thread(on_replica, replica, stream, receipt.entry_id,
                                       cluster=cluster)


async def check_uncertain(svc: SessionService, key: Key, replica: RunningRedis) -> None:
    """With the replica stopped past the wait timeout, or dead, the write is uncertain."""
    session = await svc.create_session(key)
    with stopped(replica):
        began = time.monotonic()
        with pytest.raises(PersistUncertainError, match="0 of 1 replicas"):
            await svc.append_event(session, Event.message("user", "unconfirmed"))
        assert time.monotonic() - began >= svc.settings.durable_wait_timeout_s * 0.9
    replica.kill()
    with pytest.raises(PersistUncertainError, match="0 of 1 replicas"):
        await svc.append_event(session, Event.message("user", "no replica"))


def test_wait_timeout_below_the_socket_timeout() -> None:
    """A WAIT longer than the socket timeout is refused when the settings are built."""
    with pytest.raises(ConfigError, match="durable_wait_timeout_s"):
        Settings(url="redis://h", durable_min_replicas=1, durable_wait_timeout_s=5.0)
    Settings(url="redis://h", durable_min_replicas=0, durable_wait_timeout_s=5.0)
    Settings(url="redis://h", durable_min_replicas=1, durable_wait_timeout_s=5.0,
             socket_timeout_s=6.0)


async def test_cluster_wait_on_the_shard_node(make_cluster, key_prefix) -> None:
    """On a 3+3 cluster, every durable append sends its WAIT to the primary of its shard
    (none to another node), returns only once that primary's replica holds the entry, and
    raises PersistUncertainError when the replica is stopped or dead."""
    cluster = make_cluster(replicas_per_primary=1)
    owners = cluster.slot_owners()
    primaries = cluster.primaries()

    def owner_of(name: str) -> RunningRedis:
        from redis.crc import key_slot

        return owners[key_slot(name.encode())]

    svc = SessionService(durable_settings(cluster.url, key_prefix))
    quick = SessionService(durable_settings(cluster.url, key_prefix, durable_wait_timeout_s=0.5))
    try:
        await svc.start()
        await svc.client.script_load(svc.scripts.get("stream_add").text)  # no NOSCRIPT resend
        for node in primaries:
            node.command("CONFIG", "RESETSTAT")
        sessions = [session_on(owner_of, node, key_prefix) for node in primaries]
        for node, (key, stream) in zip(primaries, sessions, strict=True):
            await check_durable_write(svc, key, stream, cluster_replica_of(cluster, node),
                                      cluster=True)
        assert [wait_calls(n) for n in primaries] == [6, 6, 6]
        victim = primaries[-1]
        key, _ = session_on(owner_of, victim, key_prefix, "quick")
        await check_uncertain(quick, key, cluster_replica_of(cluster, victim))
    finally:
        await close_unflushed(quick, svc)


async def test_sentinel_wait_after_the_write(make_sentinel_group, key_prefix) -> None:
    """Through Sentinel, a durable append returns only once the replica holds the entry, and
    raises PersistUncertainError when the replica is stopped or dead."""
    group = make_sentinel_group()
    replica = group.replicas()[0]
    svc = SessionService(durable_settings(group.url, key_prefix))
    quick = SessionService(durable_settings(group.url, key_prefix, durable_wait_timeout_s=0.5))
    try:
        key = Key("app", "u", "s")
        stream = ShardKeys(key_prefix, shard_of(key, SHARDS), SHARDS).stream
        await check_durable_write(svc, key, stream, replica, cluster=False)
        await check_uncertain(quick, Key("app", "u", "quick"), replica)
    finally:
        await close_unflushed(quick, svc)


async def test_noscript_does_not_count_a_write_that_did_not_happen(
    make_sentinel_group, key_prefix
) -> None:
    """A WAIT that followed a NOSCRIPT reply confirms nothing: after SCRIPT FLUSH, with the
    replica stopped, the append (reloaded and re-sent) raises PersistUncertainError instead
    of returning on the earlier writes' acknowledgements."""
    group = make_sentinel_group()
    replica = group.replicas()[0]
    svc = SessionService(durable_settings(group.url, key_prefix, durable_wait_timeout_s=0.5))
    try:
        session = await svc.create_session(Key("app", "u", "s"))
        await svc.append_event(session, Event.message("user", "first"))
        primary = group.primary()
        written = int(await asyncio.to_thread(replication, primary, "master_repl_offset"))

        async def acknowledged() -> bool:  # the replica's periodic ACK covers "first"
            slave = await asyncio.to_thread(replication, primary, "slave0")
            return int(slave["offset"]) >= written

        await eventually(acknowledged, 10, "the replica to acknowledge the first write")
        primary.command("SCRIPT", "FLUSH")
        with stopped(replica), pytest.raises(PersistUncertainError):
            await svc.append_event(session, Event.message("user", "after flush"))
    finally:
        await close_unflushed(svc)
