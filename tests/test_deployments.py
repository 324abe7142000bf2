"""Checks every deployment makes at start: a producer and a worker refuse a server whose
``maxmemory-policy`` may evict keys, on every primary of a Cluster and on the Sentinel
primary (DESIGN §6)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
import redis
from workers_harness import wait_until

from redis_harness import RunningRedis
from sessionstreams.common.errors import ConfigError

pytestmark = pytest.mark.topologies("cluster", "sentinel")


@contextlib.contextmanager
def maxmemory_policy(node: RunningRedis, policy: str) -> Iterator[None]:
    """Set ``policy`` on ``node`` for the block, then restore the previous one."""
    with redis.Redis(host=node.host, port=node.port, protocol=2) as client:
        previous = client.config_get("maxmemory-policy")["maxmemory-policy"]
        client.config_set("maxmemory-policy", policy)
        try:
            yield
        finally:
            client.config_set("maxmemory-policy", previous)


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-random", "volatile-lru"])
async def test_start_refuses_an_evicting_policy_on_any_primary(
    redis_target, make_service, policy
) -> None:
    """SessionService.start raises ConfigError naming the policy when one primary (the last
    of a Cluster's) may evict keys; with noeviction it starts."""
    victim = redis_target.primaries()[-1]
    with maxmemory_policy(victim, policy):
        svc = await make_service()
        with pytest.raises(ConfigError, match=policy) as info:
            await svc.start()
        if redis_target.is_cluster:
            assert str(victim.port) in str(info.value)
    with maxmemory_policy(victim, "noeviction"):
        await (await make_service()).start()


async def test_worker_refuses_an_evicting_policy_on_any_primary(
    redis_target, pipeline_settings, start_worker
) -> None:
    """A worker process exits with status 1 and a message naming the policy (and, on a
    Cluster, the node) when one primary may evict keys; with noeviction it runs."""
    victim = redis_target.primaries()[-1]
    settings = pipeline_settings()
    with maxmemory_policy(victim, "volatile-lru"):
        refused = start_worker(settings, name="refused")
        code = await asyncio.to_thread(refused.proc.wait, 30)
    assert code == 1, refused.log()
    text = refused.log()
    assert "sessionstreams: redis maxmemory-policy is 'volatile-lru'" in text, text
    assert "use noeviction" in text
    if redis_target.is_cluster:
        assert str(victim.port) in text
    with maxmemory_policy(victim, "noeviction"):
        running = start_worker(settings, name="running")
        await asyncio.to_thread(
            wait_until, lambda: "worker started" in running.log(), 30, "the worker to start"
        )
    assert running.terminate() == 0

