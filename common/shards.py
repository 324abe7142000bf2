"""Shards of the persist pipeline: which shard a session belongs to, and the shard's keys.

Every key of shard ``i`` shares one hash tag ``{ssi.k}``. The suffix ``k`` is the smallest
integer that puts the tag's Cluster slot into the i-th of N equal slot ranges, so the N shards
spread evenly over the slot space (and so over the primaries of a Cluster).

=============================================  ======  ====================================
key                                            type    content
=============================================  ======  ====================================
``[p:]ss:shard:{tag}:stream``                  STREAM  persist entries (group ``persist``)
``[p:]ss:shard:{tag}:summary``                 STREAM  summary jobs (group ``summary``): ``e`` the
                                                       job, ``c`` its cut (the persist stream's
                                                       last id when it was queued)
``[p:]ss:shard:{tag}:conf``                    HASH    ``n`` shard count, ``v`` entry format,
                                                       ``paused`` (set during a resize)
``[p:]ss:shard:{tag}:lease``                   STRING  owner token of the worker holding it
``[p:]ss:shard:{tag}:failures``                HASH    entry id -> data failure count
``[p:]ss:shard:{tag}:dlq``                     STREAM  dead letters (entry, error, source id)
``[p:]ss:workers``                             ZSET    live worker ids scored by expiry (ms)
``[p:]ss:conf``                                HASH    ``n`` shard count, ``v`` entry format in
                                                       force (checked by producers and workers
                                                       at start; the per-shard conf is checked
                                                       by every XADD)
=============================================  ======  ====================================
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from sessionstreams.common.errors import ConfigError
from sessionstreams.common.keys import fnv1a32
from sessionstreams.common.models import Key
from sessionstreams.common.scripts import Scripts

#: The consumer group every persist stream carries.
PERSIST_GROUP = "persist"
#: The consumer group of summary streams.
SUMMARY_GROUP = "summary"
#: Version of the stream entry format; a producer and a shard must agree on it.
ENTRY_FORMAT = 1


@lru_cache(maxsize=65536)
def shard_of(key: Key, shards: int) -> int:
    """The shard of a session: FNV-1a 32 of ``app:user:sid`` modulo the shard count."""
    return fnv1a32(f"{key.app_name}:{key.user_id}:{key.session_id}") % shards


@cache
def shard_tag(shard: int, shards: int) -> str:
    """The hash tag (without braces) of ``shard`` among ``shards``, spread over slots."""
    lo = shard * REDIS_CLUSTER_HASH_SLOTS // shards
    hi = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    for k in range(1_000_000):
        tag = f"ss{shard}.{k}"
        if lo <= key_slot(tag.encode()) < hi:
            return tag
    return f"ss{shard}"  # pragma: no cover - a range of >= 1 slot is always hit


class ShardKeys:
    """Key names of one shard."""

    __slots__ = ("conf", "dlq", "failures", "lease", "shard", "stream", "summary", "tag")

    def __init__(self, prefix: str, shard: int, shards: int) -> None:
        p = f"{prefix}:" if prefix else ""
        self.shard = shard
        self.tag = shard_tag(shard, shards)
        base = f"{p}ss:shard:{{{self.tag}}}"
        self.stream = f"{base}:stream"
        self.summary = f"{base}:summary"
        self.conf = f"{base}:conf"
        self.lease = f"{base}:lease"
        self.failures = f"{base}:failures"
        self.dlq = f"{base}:dlq"


def workers_key(prefix: str) -> str:
    """The registry of live workers (ZSET worker id -> heartbeat expiry in ms)."""
    return f"{prefix}:ss:workers" if prefix else "ss:workers"


def conf_key(prefix: str) -> str:
    """The deployment-wide pipeline configuration (HASH n, v)."""
    return f"{prefix}:ss:conf" if prefix else "ss:conf"


async def check_conf(client: Any, scripts: Scripts, prefix: str, shards: int) -> None:
    """Refuse to run with a shard count or entry format other than the one in force.

    Raises:
        ConfigError: another count or format is recorded for this key prefix.
    """
    n, v = await scripts.call(client, "conf_check", [conf_key(prefix)], [shards, ENTRY_FORMAT])
    n, v = _text(n), _text(v)
    if n != str(shards) or v != str(ENTRY_FORMAT):
        raise ConfigError(
            f"the pipeline runs with {n} shards (entry format {v}); this process was started "
            f"with async_persister_num={shards} (format {ENTRY_FORMAT}). Use the same count "
            "everywhere, or change it with `sessionstreams shards resize --to N`"
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id as (ms, seq) integers: ids compare as numbers, never as strings."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
