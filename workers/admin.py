"""Operator tools of the persist pipeline: status, dead letters, shard-count resize."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import RedisCluster

from sessionstreams.common.entries import FIELD, decode_entry
from sessionstreams.common.errors import ConfigError, DecodeError
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.outcomes import Outcome
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.settings import Settings
from sessionstreams.common.shards import (
    ENTRY_FORMAT,
    PERSIST_GROUP,
    SUMMARY_GROUP,
    ShardKeys,
    conf_key,
    stream_id,
    workers_key,
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


@dataclass
class ShardStatus:
    """What ``sessionstreams status`` shows for one shard."""

    shard: int
    node: str
    backlog: int
    pending: int
    lag: int | None
    owner: str
    failures: int
    dead_letters: int
    oldest_unacked_age_s: float | None
    session_ttl_s: float


@dataclass
class Status:
    """The whole pipeline."""

    shards: list[ShardStatus]
    workers: dict[str, float] = field(default_factory=dict)  # id -> seconds until expiry

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return asdict(self)


def _node_of(client: Any, key: str) -> str:
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        return "?" if node is None else f"{node.host}:{node.port}"
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}"


async def _group_info(client: Any, stream: str, group: str = PERSIST_GROUP) -> dict[str, Any]:
    try:
        groups = await client.xinfo_groups(stream)
    except Exception:  # no stream yet
        return {}
    for g in groups:
        if _text(g.get("name", b"")) == group:
            return {(_text(k)): v for k, v in g.items()}
    return {}


async def undelivered_or_pending(client: Any, stream: str, group: str = PERSIST_GROUP) -> int:
    """Entries of a shard not yet through: pending, plus 1 if any is still undelivered.

    The group's ``lag`` is unknown (nil) after trimming, so undelivered entries are detected
    by comparing the group's last-delivered id with the stream's last id.
    """
    info = await _group_info(client, stream, group)
    if not info:
        return 0
    pending = int(info.get("pending", 0) or 0)
    last = await client.xrevrange(stream, count=1)
    delivered = _text(info.get("last-delivered-id", b"0-0"))
    newest = _text(last[0][0]) if last else "0-0"
    behind = stream_id(newest) > stream_id(delivered)
    return pending + (1 if behind else 0)


async def shard_status(client: Any, sk: ShardKeys, settings: Settings) -> ShardStatus:
    """Backlog, pending, lag, owner, failures and dead letters of one shard."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(sk.stream)
    pipe.get(sk.lease)
    pipe.hlen(sk.failures)
    pipe.xlen(sk.dlq)
    backlog, owner, failures, dlq = await pipe.execute()
    info = await _group_info(client, sk.stream)
    pending = int(info.get("pending", 0) or 0)
    lag = info.get("lag")
    oldest: float | None = None
    if pending:
        summary = await client.xpending(sk.stream, PERSIST_GROUP)
        low = summary.get("min")
        if low:
            oldest = max(time.time() - _id_ms(_text(low)) / 1000, 0.0)
    return ShardStatus(
        shard=sk.shard, node=_node_of(client, sk.stream), backlog=int(backlog),
        pending=pending, lag=None if lag is None else int(lag),
        owner=_text(owner).split(":", 1)[0] if owner else "", failures=int(failures),
        dead_letters=int(dlq), oldest_unacked_age_s=oldest, session_ttl_s=settings.session_ttl,
    )


async def status(client: Any, settings: Settings) -> Status:
    """The status of every shard and the live workers."""
    n = settings.async_persister_num
    shards = [await shard_status(client, ShardKeys(settings.key_prefix, i, n), settings)
              for i in range(n)]
    return Status(shards=shards, workers=await live_workers(client, settings))


async def live_workers(client: Any, settings: Settings) -> dict[str, float]:
    """``{worker id: seconds its heartbeat stays valid}`` of the workers whose heartbeat has
    not expired."""
    now_ms = time.time() * 1000
    return {
        _text(w): round((score - now_ms) / 1000, 1)
        for w, score in await client.zrange(workers_key(settings.key_prefix), 0, -1,
                                            withscores=True)
        if score > now_ms
    }


@dataclass
class DeadLetter:
    """One entry of a shard's dead-letter stream."""

    shard: int
    id: str
    source: str
    error: str
    failures: int
    session: str
    rid: str
    raw: bytes = field(repr=False)


async def dlq_list(client: Any, settings: Settings, shard: int | None = None) -> list[DeadLetter]:
    """Dead letters of every shard (or one)."""
    n = settings.async_persister_num
    out: list[DeadLetter] = []
    for i in range(n) if shard is None else [shard]:
        sk = ShardKeys(settings.key_prefix, i, n)
        for entry_id, fields in await client.xrange(sk.dlq):
            raw = fields.get(FIELD, b"")
            try:
                e = decode_entry(raw)
                session, rid = f"{e.app}/{e.user}/{e.sid}", e.rid or "?"
            except DecodeError:  # the worker wrote what it could read of it
                session = _text(fields.get(b"session", b"")) or "?"
                rid = _text(fields.get(b"rid", b"")) or "?"
            out.append(DeadLetter(
                shard=i, id=_text(entry_id), source=_text(fields.get(b"source", b"")),
                error=_text(fields.get(b"error", b"")),
                failures=int(fields.get(b"failures", b"0") or 0), session=session, rid=rid,
                raw=raw,
            ))
    return out


async def dlq_replay(client: Any, settings: Settings, ids: list[str] | None = None) -> int:
    """Resend dead letters (all, or those ids) to their shard stream with their original rid.

    The rid's dead-lettered outcome is cleared first so the resend can apply; a rid that was
    applied meanwhile stays a no-op. A replayed entry lands after newer entries of its
    session: it is outside the per-session order guarantee.
    """
    scripts = Scripts(disable_cache=settings.disable_script_cache)
    keys = KeySpace(settings.key_prefix)
    n = settings.async_persister_num
    done = 0
    for letter in await dlq_list(client, settings):
        if ids and letter.id not in ids:
            continue
        sk = ShardKeys(settings.key_prefix, letter.shard, n)
        try:
            e = decode_entry(letter.raw)
        except DecodeError:
            continue  # undecodable: nothing to replay; drop it instead
        record = keys.record(e.key, e.route)
        score = await client.zscore(record, e.rid)
        if score is not None and Outcome.from_score(score) is Outcome.DEAD_LETTERED:
            await client.zrem(record, e.rid)
        reply = await scripts.call(client, "stream_add", [sk.stream, sk.conf],
                                   [n, ENTRY_FORMAT, 0, letter.raw])
        if _text(reply[0]) != "ok":
            raise ConfigError(f"shard {letter.shard} refused the replay: {_text(reply[0])}")
        await client.xdel(sk.dlq, letter.id)
        done += 1
    return done


async def dlq_drop(client: Any, settings: Settings, ids: list[str] | None = None) -> int:
    """Delete dead letters (all, or those ids)."""
    n = settings.async_persister_num
    dropped = 0
    for letter in await dlq_list(client, settings):
        if ids and letter.id not in ids:
            continue
        dropped += int(await client.xdel(ShardKeys(settings.key_prefix, letter.shard, n).dlq,
                                         letter.id))
    return dropped


async def resize(client: Any, settings: Settings, to: int, timeout_s: float = 300.0) -> None:
    """Change the shard count: pause producers, drain every shard, then rewrite the count.

    Producers get BackpressureError while paused and a ConfigError afterwards until they run
    with ``async_persister_num=to``; workers must be restarted with the new count.

    Raises:
        ConfigError: ``to`` < 1, or the shards did not drain within ``timeout_s``.
    """
    if to < 1:
        raise ConfigError("shards resize: --to must be >= 1")
    n = settings.async_persister_num
    old = [ShardKeys(settings.key_prefix, i, n) for i in range(n)]
    for sk in old:
        await client.hset(sk.conf, mapping={"paused": "1"})
    deadline = time.monotonic() + timeout_s
    # Summary jobs too: their cuts are ids of the old streams, and their streams are not
    # read once workers run with the new count.
    streams = [(sk, sk.stream, PERSIST_GROUP) for sk in old]
    streams += [(sk, sk.summary, SUMMARY_GROUP) for sk in old]
    for sk, stream, group in streams:
        while True:
            if await undelivered_or_pending(client, stream, group) == 0:
                break
            if time.monotonic() > deadline:
                what = "summary jobs" if stream == sk.summary else "writes"
                raise ConfigError(f"shard {sk.shard} did not drain its {what} in {timeout_s}s; "
                                  "still paused")
            await asyncio.sleep(0.2)
    for sk in old:
        await client.hset(sk.conf, mapping={"n": str(to), "v": str(ENTRY_FORMAT), "paused": "0"})
        await client.delete(sk.stream, sk.failures, sk.summary)
    await client.hset(conf_key(settings.key_prefix), mapping={"n": str(to), "v": str(ENTRY_FORMAT)})
