"""Grouped stream adds: concurrent writers of a shard share stream_add calls.

Real redis-server, no workers (entries stay in the shard streams, where they are checked).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sessionstreams.common.entries import decode_entry
from sessionstreams.common.errors import BackpressureError
from sessionstreams.common.models import Event, Key
from sessionstreams.common.shards import ShardKeys
from sessionstreams.producer import SessionService
from sessionstreams.producer._streams import GROUP_MAX, StreamWriter

pytestmark = pytest.mark.topologies("cluster", "sentinel")


def delta_of(n: int) -> bytes:
    """The stored session delta of ``numbered(n)``."""
    return b'{"n":"%s"}' % base64.b64encode(str(n).encode())


def numbered(i: int) -> Event:
    return Event.message("user", f"m{i}", state_delta={"n": str(i).encode()})


def count_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of entries of every stream_add call the producer makes."""
    sizes: list[int] = []
    real = StreamWriter._send_now

    async def spy(self: StreamWriter, shard: int, encoded: list[bytes]) -> list[Any]:
        sizes.append(len(encoded))
        return await real(self, shard, encoded)

    monkeypatch.setattr(StreamWriter, "_send_now", spy)
    return sizes


@pytest.fixture
async def producer(pipeline_settings) -> AsyncIterator[Callable[..., SessionService]]:
    """Build async-mode services (settings overrides as kwargs); closed at the end. No worker
    runs, so their receipts are dropped before closing instead of waited for."""
    built: list[SessionService] = []

    def build(**overrides: Any) -> SessionService:
        svc = SessionService(pipeline_settings(**overrides))
        built.append(svc)
        return svc

    yield build
    for svc in built:
        assert svc._streams is not None
        svc._streams._pending.clear()
        await svc.close(0.1)


async def stream_entries(client: Any, settings: Any, shard: int) -> list[tuple[str, Any]]:
    stream = ShardKeys(settings.key_prefix, shard, settings.async_persister_num).stream
    rows = await client.xrange(stream)
    return [(eid.decode(), decode_entry(fields[b"e"])) for eid, fields in rows]


async def test_concurrent_writers_share_calls_and_keep_their_order(
    producer, redis_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 writers on one shard, three appends each, all at once: fewer calls than appends,
    every receipt names its own entry, and each session's entries are in call order."""
    sizes = count_calls(monkeypatch)
    svc = producer(async_persister_num=1)
    sessions = [await svc.create_session(Key("app", f"u{i % 7}", f"s{i}")) for i in range(60)]

    async def writer(session: Any) -> list[Any]:
        return [await svc.append_event(session, numbered(n)) for n in range(3)]

    receipts = [r for rs in await asyncio.gather(*(writer(s) for s in sessions)) for r in rs]
    assert sum(sizes) == 180
    assert len(sizes) < 180
    assert max(sizes) > 1
    entries = await stream_entries(redis_client, svc.settings, 0)
    assert len(entries) == 180
    by_id = dict(entries)
    for r in receipts:
        entry = by_id[r.entry_id]
        assert (entry.key, entry.rid) == (r.key, r.rid)
    for s in sessions:
        mine = [e for _, e in entries if e.key == s.key]
        assert [e.event.session_delta for e in mine] == [delta_of(n) for n in range(3)]


async def test_a_lone_write_goes_out_at_once(producer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sequential appends are one call each: grouping never holds a write back."""
    sizes = count_calls(monkeypatch)
    svc = producer(async_persister_num=2)
    s = await svc.create_session(Key("app", "u", "s"))
    for n in range(5):
        await svc.append_event(s, numbered(n))
    assert sizes == [1] * 5


async def test_a_group_is_capped(
    producer, redis_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More queued entries than GROUP_MAX leave in several calls, none over the cap."""
    sizes = count_calls(monkeypatch)
    svc = producer(async_persister_num=1)
    s = await svc.create_session(Key("app", "u", "s"))
    count = GROUP_MAX * 2 + 10
    await asyncio.gather(*(svc.append_event(s, numbered(n)) for n in range(count)))
    assert sum(sizes) == count
    assert max(sizes) <= GROUP_MAX
    entries = await stream_entries(redis_client, svc.settings, 0)
    assert [e.event.session_delta for _, e in entries] == [delta_of(n) for n in range(count)]


async def test_a_refused_group_fails_every_writer_in_it(producer, redis_client) -> None:
    """Backpressure on a grouped call reaches each of its writers; only the writes that
    returned a receipt are in the stream."""
    svc = producer(async_persister_num=1, stream_backlog_max=5, backpressure_wait_s=0.2)
    sessions = [await svc.create_session(Key("app", "u", f"s{i}")) for i in range(12)]
    results = await asyncio.gather(
        *(svc.append_event(s, numbered(0)) for s in sessions), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) <= 5
    assert refused
    assert all(isinstance(r, BackpressureError) for r in refused)
    entries = await stream_entries(redis_client, svc.settings, 0)
    assert sorted(eid for eid, _ in entries) == sorted(r.entry_id for r in ok)


async def test_a_cancelled_writer_does_not_strand_the_queue(producer, redis_client) -> None:
    """The writer whose call is in flight is cancelled: the writers queued behind it still
    get their entries added and their receipts."""
    svc = producer(async_persister_num=1)
    sessions = [await svc.create_session(Key("app", "u", f"s{i}")) for i in range(10)]
    first = asyncio.ensure_future(svc.append_event(sessions[0], numbered(0)))
    await asyncio.sleep(0)  # the first write is in flight
    rest = [asyncio.ensure_future(svc.append_event(s, numbered(1))) for s in sessions[1:]]
    await asyncio.sleep(0)
    first.cancel()
    receipts = await asyncio.wait_for(asyncio.gather(*rest), 10)
    assert len({r.entry_id for r in receipts}) == 9
    ids = {eid for eid, _ in await stream_entries(redis_client, svc.settings, 0)}
    assert {r.entry_id for r in receipts} <= ids
