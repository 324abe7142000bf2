"""Hostile input and rare faults against a real redis-server: no acknowledged write lost, no
foreign data read, bad input refused with our own errors and nothing written.

Each test names the defect it guards against; servers that a test reconfigures, pauses or
restarts are its own (``start_redis_server`` in ``tmp_path``), never the shared one.
"""

from __future__ import annotations

import pytest

from redis_harness import start_redis_server
from sessionstreams.common.errors import ConfigError, InvalidKeyError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, Key, Session, TrackEvent
from sessionstreams.common.settings import CompatMode, Settings
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


# -- 2. ids that would share keys ----------------------------------------------------------


async def test_legacy_layout_refuses_user_ids_with_colon(make_service, redis_client) -> None:
    """In the legacy layout user 'alice:x' session '1' and user 'alice' session 'x:1' share
    keys: a mode that writes that layout refuses the first id on every write, so deleting it
    can no longer wipe alice's events."""
    writer = await make_service(compat_mode=CompatMode.TRANSITION)  # creates legacy sessions
    alice = await writer.create_session(Key("app", "alice", "x:1"))
    await writer.append_event(alice, Event.message("user", "mine"))
    events_key = writer.keys.legacy_events(alice.key)
    assert await redis_client.zcard(events_key) == 1
    intruder = Key("app", "alice:x", "1")
    assert writer.keys.legacy_events(intruder) == events_key  # the collision itself
    for mode in (CompatMode.LEGACY, CompatMode.TRANSITION):
        svc = await make_service(compat_mode=mode)
        with pytest.raises(InvalidKeyError, match="alice:x"):
            await svc.delete_session(intruder)
        with pytest.raises(InvalidKeyError, match="':'"):
            await svc.create_session(intruder)
        with pytest.raises(InvalidKeyError):
            await svc.create_session(Key("app", "alice:x", ""))
        session = Session(id="1", app_name="app", user_id="alice:x")
        with pytest.raises(InvalidKeyError):
            await svc.append_event(session, Event.message("user", "x"))
        with pytest.raises(InvalidKeyError):
            await svc.update_session_state(intruder, {"k": b"v"})
        with pytest.raises(InvalidKeyError):
            await svc.trim_conversations(intruder)
    assert await redis_client.zcard(events_key) == 1
    got = await writer.get_session(alice.key)
    assert got is not None
    assert [e.id for e in got.events] == [e.id for e in alice.events]


async def test_hashidx_user_ids_with_colon_stay_usable_in_none_mode(make_service) -> None:
    """HashIdx keys put the user inside its hash tag: ':' in a user id collides with nothing
    there, so NONE mode (HashIdx only) accepts it."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    s = await svc.create_session(Key("app", "alice:x", "1"))
    await svc.append_event(s, Event.message("user", "hi"))
    got = await svc.get_session(s.key)
    assert got is not None
    assert len(got.events) == 1
    await svc.delete_session(s.key)


@pytest.mark.parametrize("mode", list(CompatMode))
async def test_track_names_with_colon_are_refused(make_service, redis_client, mode) -> None:
    """Session 's:x' track 't' and session 's' track 'x:t' share the track keys in both
    layouts: a track name with ':' is refused and nothing is written."""
    svc = await make_service(compat_mode=mode)
    s = await svc.create_session(Key("app", "u", "s"))
    before = await redis_client.keys(f"{svc.keys.prefix}:*")
    with pytest.raises(InvalidKeyError, match="x:t"):
        await svc.append_track_event(s, TrackEvent(track="x:t", payload=b"1",
                                                   timestamp=GoTime.now()))
    assert sorted(await redis_client.keys(f"{svc.keys.prefix}:*")) == sorted(before)
    assert s.tracks is None
    assert "tracks" not in s.state


async def test_colliding_ids_written_by_go_stay_readable(make_service, redis_client) -> None:
    """Data another writer stored under such ids is still read: the rule only refuses writes."""
    svc = await make_service(compat_mode=CompatMode.LEGACY)
    key = Key("app", "bob:x", "1")
    now = GoTime.now().to_text()
    doc = (b'{"id":"1","state":{},"createdAt":"' + now.encode() + b'","updatedAt":"'
           + now.encode() + b'"}')
    await redis_client.hset(svc.keys.legacy_sessions(key), "1", doc)
    event = Event.message("user", "from go")
    await redis_client.zadd(svc.keys.legacy_events(key), {event.to_json(): 1})
    track = TrackEvent(track="a:b", payload=b"1", timestamp=GoTime.now())
    await redis_client.zadd(svc.keys.legacy_track(key, "a:b"), {track.to_json(): 1})
    got = await svc.get_session(key)
    assert got is not None
    assert [e.id for e in got.events] == [event.id]
    tracks = await svc.get_track_events(key, "a:b")
    assert tracks.events == [track]
