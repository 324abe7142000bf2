"""Shard leases and worker heartbeats.

At most one worker holds a valid lease on a shard (``SET NX PX`` with a random token, renewed
and released only by a token-checked script). Live workers keep a heartbeat in the workers
ZSET; each worker aims at ``ceil(shards / live workers)`` shards: above target it releases
shards, below target it takes free ones, so shares converge (max - min <= 1) within
2 x lease TTL + heartbeat interval.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from sessionstreams.common.scripts import Scripts
from sessionstreams.common.shards import ShardKeys


class Lease:
    """A lease this worker holds on one shard, with its local deadline (monotonic)."""

    __slots__ = ("deadline", "shard", "token")

    def __init__(self, shard: int, token: str, deadline: float) -> None:
        self.shard = shard
        self.token = token
        self.deadline = deadline

    @property
    def valid(self) -> bool:
        """True while the local deadline has not passed."""
        return time.monotonic() < self.deadline


class Leases:
    """Acquire, renew and release shard leases for one worker."""

    def __init__(
        self,
        client: Any,
        scripts: Scripts,
        shard_keys: list[ShardKeys],
        workers_key: str,
        worker_id: str,
        lease_ttl_s: float,
        on_change: Callable[[int, str], None] | None = None,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.shard_keys = shard_keys
        self.workers_key = workers_key
        self.worker_id = worker_id
        self.ttl_ms = int(lease_ttl_s * 1000)
        # Local deadlines end a little before the server-side expiry (clock drift margin).
        self.margin_s = min(0.2 * lease_ttl_s, 1.0)
        self.held: dict[int, Lease] = {}
        #: Told (shard, "acquired" | "released" | "lost") on every change (metrics).
        self.on_change = on_change or (lambda shard, change: None)

    def _deadline(self, start: float) -> float:
        return start + self.ttl_ms / 1000 - self.margin_s

    async def heartbeat(self, ttl_s: float) -> list[str]:
        """Refresh this worker's heartbeat; return the ids of live workers."""
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.workers_key, {self.worker_id: now_ms + int(ttl_s * 1000)})
        pipe.zremrangebyscore(self.workers_key, "-inf", now_ms)
        pipe.zrange(self.workers_key, 0, -1)
        _, _, live = await pipe.execute()
        return [w.decode() for w in live]

    async def leave(self) -> None:
        """Remove this worker's heartbeat (on shutdown)."""
        await self.client.zrem(self.workers_key, self.worker_id)

    def target(self, live_workers: int) -> int:
        """How many shards this worker should hold."""
        return math.ceil(len(self.shard_keys) / max(live_workers, 1))

    async def try_acquire(self, shard: int) -> Lease | None:
        """Take a free shard; None when another worker holds it."""
        token = f"{self.worker_id}:{uuid.uuid4().hex[:12]}"
        start = time.monotonic()
        ok = await self.client.set(self.shard_keys[shard].lease, token, nx=True, px=self.ttl_ms)
        if not ok:
            return None
        lease = Lease(shard, token, self._deadline(start))
        self.held[shard] = lease
        self.on_change(shard, "acquired")
        return lease

    async def renew_all(self) -> list[int]:
        """Renew every held lease; return the shards whose lease was lost."""
        lost: list[int] = []
        for shard, lease in list(self.held.items()):
            start = time.monotonic()
            ok = await self.scripts.call(
                self.client, "lease_renew", [self.shard_keys[shard].lease],
                [lease.token, self.ttl_ms],
            )
            if ok:
                lease.deadline = self._deadline(start)
            else:
                lost.append(shard)
                self.held.pop(shard, None)
                self.on_change(shard, "lost")
        return lost

    async def release(self, shard: int) -> None:
        """Give a shard back (token-checked)."""
        lease = self.held.pop(shard, None)
        if lease is not None:
            self.on_change(shard, "released")
            await self.scripts.call(
                self.client, "lease_release", [self.shard_keys[shard].lease], [lease.token]
            )
