"""The legacy ZSet engine (sessionstreams.common.legacy) on a real redis-server, data written as Go
writes it.

Statuses and request records, incarnations, validation before the first write, and the
deliberate differences that apply to the legacy layout: bounded storage with the anchoring
user message, equal timestamps in append order, updatedAt = max(stored, producer time),
merged track names, user-state deltas per mode, parsed-time "newer" for summaries.
"""

from __future__ import annotations

import inspect

import msgspec
import pytest
from legacy_layout import GoLegacyWriter

from sessionstreams.common.compat import HASHIDX, ZSET, Engines
from sessionstreams.common.errors import ConfigError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.hashidx import AppendEntry, HashIdxEngine
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.legacy import LegacyEngine
from sessionstreams.common.models import (
    Event,
    Key,
    SessionMeta,
    Summary,
    TrackEvent,
    decode_summary_map,
)
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.settings import CompatMode
from sessionstreams.common.state import b64_patch

T0 = 1_735_787_045_000_000_000  # 2025-01-02T03:04:05Z
K = Key("app", "u", "s")
OPTS = {"ttl_ms": 0, "storage_limit": 0, "user_state_ttl_ms": 0}


def msg(role: str, i: int, **kw) -> Event:
    return Event.message(role, f"{role} {i}", id=f"e{i:04d}",
                         timestamp=GoTime(T0 + i * 1_000_000), **kw)


def entry(event: Event, rid: str, *, at: str = "", delta: dict | None = None,
          pairs: tuple = ()) -> AppendEntry:
    return AppendEntry(
        rid=rid, event_id=event.id, event_json=event.to_json(), ts_ns=event.timestamp.unix_ns,
        is_user=event.is_user_message(), producer_ts=at,
        session_delta=b64_patch(delta) if delta else b"", user_pairs=pairs,
    )


@pytest.fixture
def engines(redis_client, key_prefix) -> Engines:
    return Engines(redis_client, KeySpace(key_prefix), Scripts(), CompatMode.LEGACY)


@pytest.fixture
def go(redis_client, key_prefix) -> GoLegacyWriter:
    return GoLegacyWriter(redis_client, key_prefix)


@pytest.mark.parametrize(
    "name", ["append_call", "append", "prepare_append", "finish_append", "append_track",
             "update_state", "trim"],
)
def test_engines_have_identical_write_signatures(name) -> None:
    """Both engines take the same write arguments, so a route picks either one."""
    assert inspect.signature(getattr(LegacyEngine, name)) == inspect.signature(
        getattr(HashIdxEngine, name)
    )


def test_engine_for_maps_routes_and_refuses_unknown(engines) -> None:
    """engine_for gives the engine of each route and a config error for an unknown one."""
    assert engines.engine_for(HASHIDX) is engines.hashidx
    assert engines[ZSET] is engines.legacy
    assert set(engines) == {HASHIDX, ZSET}
    with pytest.raises(ConfigError, match="unknown storage route"):
        engines.engine_for("other")


async def test_append_stores_go_json_member_and_dedups_retries(engines, go, redis_client) -> None:
    """An append stores the full event JSON as the member; a retried rid or the same JSON is
    a duplicate, stored once."""
    await go.create(K)
    e = msg("user", 1)
    assert await engines.legacy.append(K, [entry(e, "r1")], **OPTS) == ["applied"]
    assert await engines.legacy.append(K, [entry(e, "r1")], **OPTS) == ["duplicate"]
    assert await engines.legacy.append(K, [entry(e, "r2")], **OPTS) == ["duplicate"]
    members = await redis_client.zrange(engines.legacy.keys.legacy_events(K), 0, -1,
                                        withscores=True)
    assert members == [(e.to_json(), float(e.timestamp.unix_ns))]
    assert await go.events(K) == [e]


async def test_append_to_missing_session_is_recorded_session_gone(engines) -> None:
    """A missing session answers session_gone, recorded so a retry is a duplicate."""
    statuses = await engines.legacy.append(K, [entry(msg("user", 1), "r1")], **OPTS)
    assert statuses == ["session_gone"]
    assert await engines.legacy.append(K, [entry(msg("user", 1), "r1")], **OPTS) == ["duplicate"]


async def test_append_with_other_incarnation_is_superseded(engines, go) -> None:
    """An entry of an earlier incarnation (generation) is dropped as superseded."""
    await go.create(K, generation="g2")
    e = entry(msg("user", 1), "r1")
    assert await engines.legacy.append(K, [e], **OPTS, incarnation="g1") == ["superseded"]
    assert await engines.legacy.append(K, [entry(msg("user", 2), "r2")], **OPTS,
                                       incarnation="g2") == ["applied"]
    assert [ev.id for ev in await go.events(K)] == ["e0002"]


async def test_wrong_key_type_is_invalid_and_writes_nothing(engines, go, redis_client) -> None:
    """A key holding another Redis type gives invalid:<why> and nothing is written."""
    doc = await go.create(K)
    await redis_client.set(engines.legacy.keys.legacy_events(K), "x")
    statuses = await engines.legacy.append(K, [entry(msg("user", 1), "r1", delta={"a": b"1"})],
                                           **OPTS)
    assert statuses[0].startswith("invalid:wrong Redis type")
    assert await go.doc(K) == doc
    assert not await redis_client.exists(engines.legacy.keys.legacy_applied(K))


async def test_equal_timestamps_keep_append_order(engines, go) -> None:
    """Events with one timestamp are read back in append order, not by JSON text."""
    await go.create(K)
    ids = ["z", "b", "m", "a"]
    for i, eid in enumerate(ids):
        e = Event.message("user", eid, id=eid, timestamp=GoTime(T0))
        assert await engines.legacy.append(K, [entry(e, f"r{i}")], **OPTS) == ["applied"]
    assert [e.id for e in await go.events(K)] == ids


async def test_storage_limit_keeps_the_anchoring_user_message(engines, go) -> None:
    """Trimming to the storage limit keeps the newest older user message when the kept
    window has none."""
    await go.create(K)
    events = [msg("user", 0)] + [msg("assistant", i) for i in range(1, 7)]
    for i, e in enumerate(events):
        opts = {**OPTS, "storage_limit": 3}
        assert await engines.legacy.append(K, [entry(e, f"r{i}")], **opts) == ["applied"]
    assert [e.id for e in await go.events(K)] == ["e0000", "e0004", "e0005", "e0006"]


async def test_updated_at_is_the_latest_write_time(engines, go) -> None:
    """updatedAt becomes the producer's time when later, and never moves back."""
    doc = await go.create(K, created=GoTime(T0))
    later, earlier = GoTime(T0 + 10**9), GoTime(T0 - 10**9)
    await engines.legacy.append(K, [entry(msg("user", 1), "r1", at=later.to_text())], **OPTS)
    assert (await go.doc(K)).updated_at == later
    await engines.legacy.append(K, [entry(msg("user", 2), "r2", at=earlier.to_text())], **OPTS)
    stored = await go.doc(K)
    assert stored.updated_at == later
    assert stored.created_at == doc.created_at


async def test_track_names_are_merged_into_stored_state(engines, go) -> None:
    """A track append merges its name into the stored tracks list (never overwritten)."""
    await go.create(K)
    await go.track(K, TrackEvent(track="a", payload=b"1", timestamp=GoTime(T0)))
    for rid, name in (("t1", "b"), ("t2", "a")):
        status = await engines.legacy.append_track(
            K, rid=rid, track=name, track_json=TrackEvent(track=name, payload=b"2",
                                                           timestamp=GoTime(T0 + 1)).to_json(),
            ts_ns=T0 + 1, track_ttl_s=0, persist=False, producer_ts="", session_ttl_ms=0,
        )
        assert status == "applied"
    assert msgspec.json.decode((await go.doc(K)).state["tracks"]) == ["a", "b"]


@pytest.mark.parametrize(("mode", "legacy_too"), [(CompatMode.LEGACY, False),
                                                  (CompatMode.TRANSITION, True)])
async def test_user_state_deltas_follow_the_mode(redis_client, key_prefix, go, mode,
                                                 legacy_too) -> None:
    """user: deltas go to the HashIdx user state, and in TRANSITION to the old key too."""
    engines = Engines(redis_client, KeySpace(key_prefix), Scripts(), mode)
    await go.create(K)
    e = entry(msg("user", 1), "r1", pairs=(("lang", b"fr"),))
    assert await engines.legacy.append(K, [e], **OPTS) == ["applied"]
    keys = engines.legacy.keys
    assert await redis_client.hget(keys.user_state(K), "lang") == b"fr"
    assert (await redis_client.hget(keys.legacy_user_state(K), "lang") == b"fr") is legacy_too


async def test_writes_to_a_migrated_session_apply_to_the_hashidx_copy(
    engines, redis_client
) -> None:
    """A legacy-routed write to a migrated session lands in the HashIdx copy, once."""
    keys = engines.legacy.keys
    meta = SessionMeta(id="s", app_name="app", user_id="u", state={}, generation="g1",
                       created_at=GoTime(T0), updated_at=GoTime(T0))
    assert await engines.hashidx.create(K, meta.to_json(), 0, None)
    await redis_client.hset(keys.legacy_info(K), "migrated", "g1")
    e = entry(msg("user", 1), "r1")
    assert await engines.legacy.append(K, [e], **OPTS, incarnation="g1") == ["applied"]
    assert await engines.legacy.append(K, [e], **OPTS, incarnation="g1") == ["duplicate"]
    assert await engines.legacy.update_state(
        K, rid="r2", patch_json=b64_patch({"k": b"v"}), producer_ts="", ttl_ms=0,
    ) == "applied"
    assert await redis_client.hkeys(keys.event_data(K)) == [b"e0001"]
    assert not await redis_client.exists(keys.legacy_events(K))
    assert SessionMeta.from_json(await redis_client.get(keys.meta(K))).state == {"k": b"v"}


async def test_trim_removes_whole_conversations_beyond_a_batch(engines, go) -> None:
    """trim removes every event of the newest request, even past a batch of 100."""
    await go.create(K)
    old = [msg("user", i, request_id="r1") for i in range(3)]
    new = [msg("assistant", i, request_id="r2") for i in range(3, 153)]
    for e in old + new:
        await go.append(K, e)
    status, removed = await engines.legacy.trim(K, rid="t1", count=1, ttl_ms=0)
    assert status == "applied"
    assert [Event.from_json(r).id for r in removed] == [e.id for e in new]
    assert [e.id for e in await go.events(K)] == [e.id for e in old]
    assert await engines.legacy.trim(K, rid="t1", count=1, ttl_ms=0) == ("duplicate", [])


async def test_summary_newer_compares_parsed_times(engines, go, redis_client) -> None:
    """A summary replaces the stored one when its time is later once parsed (not as text);
    an older one is refused; the map stays Go JSON."""
    await go.create(K)
    first = Summary(summary="one", updated_at=GoTime.parse("2025-01-01T10:00:00+02:00"))
    second = Summary(summary="two", updated_at=GoTime.parse("2025-01-01T09:00:00Z"))
    stale = Summary(summary="old", updated_at=GoTime.parse("2025-01-01T08:30:00Z"))
    legacy = engines.legacy
    assert await legacy.set_summary(K, filter_key="", summary=first, ttl_ms=0) == "applied"
    assert await legacy.set_summary(K, filter_key="", summary=second, ttl_ms=0) == "applied"
    assert await legacy.set_summary(K, filter_key="", summary=stale, ttl_ms=0) == "stale"
    assert await legacy.set_summary(K, filter_key="b", summary=stale, ttl_ms=0) == "applied"
    stored = decode_summary_map(await legacy.load_summaries(K))
    assert {k: v.summary for k, v in stored.items()} == {"": "two", "b": "old"}
    gone = Key("app", "u", "nope")
    assert await legacy.set_summary(gone, filter_key="", summary=first, ttl_ms=0) == (
        "session_gone"
    )


async def test_create_never_overwrites_an_existing_session(engines, go) -> None:
    """A legacy create of an existing id reports it and keeps the stored document."""
    doc = await go.create(K, {"a": b"1"})
    assert not await engines.legacy.create(K, b'{"id":"s","state":{}}', 0)
    assert await go.doc(K) == doc


async def test_delete_removes_every_key_of_the_session(engines, go, redis_client,
                                                       key_prefix) -> None:
    """Delete removes the session's fields, its events, tracks and our bookkeeping, and
    leaves the user's other sessions alone."""
    other = Key("app", "u", "other")
    await go.create(K)
    await go.create(other)
    await go.append(K, msg("user", 1))
    await go.track(K, TrackEvent(track="t", payload=b"1", timestamp=GoTime(T0)))
    await go.summaries(K, {"": Summary(summary="x", updated_at=GoTime(T0))})
    await engines.legacy.append(K, [entry(msg("user", 2), "r2")], **OPTS)
    doc, names = await engines.legacy.read_for_delete(K)
    assert doc is not None
    await engines.legacy.delete(K, [n.decode() for n in names])
    left = sorted([k.decode() async for k in redis_client.scan_iter(match=f"{key_prefix}:*")])
    assert left == [f"{key_prefix}:sess:{{app}}:u"]
    assert await redis_client.hkeys(f"{key_prefix}:sess:{{app}}:u") == [b"other"]
