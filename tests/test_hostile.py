"""Hostile input and rare faults against a real redis-server: no acknowledged write lost, no
foreign data read, bad input refused with our own errors and nothing written.

Each test names the defect it guards against; servers that a test reconfigures, pauses or
restarts are its own (``start_redis_server`` in ``tmp_path``), never the shared one.
"""

from __future__ import annotations

import pytest

from redis_harness import start_redis_server
from sessionstreams.common.errors import ConfigError
from sessionstreams.common.settings import Settings
from sessionstreams.producer import SessionService
from sessionstreams.workers.runner import Worker

# -- 1. eviction ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-lfu", "volatile-random",
                                    "volatile-ttl"])
async def test_volatile_eviction_policy_is_refused(tmp_path, policy) -> None:
    """A volatile-* policy may evict sessions with a TTL (and always our leases): producers
    and workers refuse to start, naming the policy."""
    server = start_redis_server(tmp_path, ("--maxmemory-policy", policy))
    settings = Settings(url=server.url, enable_async_persist=True, async_persister_num=2)
    try:
        svc = SessionService(settings)
        try:
            with pytest.raises(ConfigError, match=policy) as info:
                await svc.start()
            assert "noeviction" in str(info.value)
        finally:
            await svc.close()
        with pytest.raises(ConfigError, match=policy):
            await Worker(settings).run()
    finally:
        server.stop()
