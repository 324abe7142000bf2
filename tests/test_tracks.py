"""Track events (reference §11 cases 22, 43, 63-66) on a real redis-server.

Deliberate difference: track names are merged into state["tracks"] by the script, never
overwritten with a stale caller's list (§12.14).
"""

from __future__ import annotations

import pytest

from sessionstreams.common.errors import InvalidArgumentError, SessionNotFoundError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, Key, Session, TrackEvent, UserKey

T0 = 1_735_787_045_000_000_000


def tev(track: str, i: int, payload: bytes = b'{"n":1}') -> TrackEvent:
    return TrackEvent(track=track, payload=payload, timestamp=GoTime(T0 + i * 1000))


async def test_track_round_trip_and_limits(make_service) -> None:
    """Track events read back in order; num_events keeps the newest; after filters by time."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    for i in range(5):
        await svc.append_track_event(s, tev("alpha", i, f'{{"i":{i}}}'.encode()))
    got = await svc.get_track_events(s.key, "alpha")
    assert [e.payload for e in got.events] == [f'{{"i":{i}}}'.encode() for i in range(5)]
    newest = await svc.get_track_events(s.key, "alpha", num_events=2)
    assert [e.payload for e in newest.events] == [b'{"i":3}', b'{"i":4}']
    late = await svc.get_track_events(s.key, "alpha", after=GoTime(T0 + 3000))
    assert len(late.events) == 2


async def test_equal_timestamps_keep_append_order(make_service) -> None:
    """Track events with one timestamp keep append order (not "10" < "9" member order)."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    for i in range(12):
        await svc.append_track_event(
            s, TrackEvent(track="t", payload=str(i).encode(), timestamp=GoTime(T0))
        )
    got = await svc.get_track_events(s.key, "t")
    assert [e.payload for e in got.events] == [str(i).encode() for i in range(12)]


async def test_get_session_and_list_include_tracks(make_service) -> None:
    """get_session and list_sessions load tracks with payloads preserved."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    await svc.append_event(s, Event.message("user", "hi"))
    await svc.append_track_event(s, tev("alpha", 1, b'{"a":[1,2]}'))
    await svc.append_track_event(s, tev("beta", 2, b"null"))
    got = await svc.get_session(s.key)
    assert sorted(got.tracks) == ["alpha", "beta"]
    assert got.tracks["alpha"].events[0].payload == b'{"a":[1,2]}'
    (listed,) = await svc.list_sessions(UserKey("app", "u"))
    assert listed.tracks is not None
    assert listed.tracks["alpha"].events[0].payload == b'{"a":[1,2]}'


async def test_stale_caller_does_not_drop_track_names(make_service) -> None:
    """Two callers with stale sessions each add a track: both names are kept."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    stale = await svc.get_session(s.key)
    await svc.append_track_event(s, tev("one", 1))
    await svc.append_track_event(stale, tev("two", 2))
    got = await svc.get_session(s.key)
    assert sorted(got.tracks or {}) == ["one", "two"]


async def test_tracks_state_reset_does_not_hide_events(make_service) -> None:
    """Setting tracks to "[]" keeps stored track events readable through get_track_events."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    for i in range(3):
        await svc.append_track_event(s, tev("t", i))
    await svc.update_session_state(s.key, {"tracks": b"[]"})
    assert len((await svc.get_track_events(s.key, "t")).events) == 3
    assert len((await svc.get_track_events(s.key, "t", num_events=1)).events) == 1


async def test_missing_session_or_track_reads_empty(make_service) -> None:
    """A missing session or track gives an empty TrackEvents, not an error."""
    svc = await make_service()
    got = await svc.get_track_events(Key("app", "u", "none"), "t")
    assert got.track == "t"
    assert not got.events


async def test_track_events_survive_meta_delete(make_service, redis_client) -> None:
    """Track events are still readable after the meta key is gone."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    await svc.append_track_event(s, tev("t", 1))
    await redis_client.delete(svc.keys.meta(s.key))
    assert len((await svc.get_track_events(s.key, "t")).events) == 1


async def test_track_ttl_rules(make_service, redis_client) -> None:
    """Track TTL 0.5 s rounds up to 1 s; explicit 0 persists; None follows the session TTL."""
    svc = await make_service(track_event_ttl=0.5)
    s = await svc.create_session(Key("app", "u", "a"))
    await svc.append_track_event(s, tev("t", 1))
    assert await redis_client.ttl(svc.keys.track_data(s.key, "t")) == 1
    svc0 = await make_service(track_event_ttl=0)
    await redis_client.expire(svc.keys.track_data(s.key, "t"), 100)
    await svc0.append_track_event(s, tev("t", 2))
    assert await redis_client.ttl(svc.keys.track_data(s.key, "t")) == -1
    follow = await make_service(session_ttl=50)
    s2 = await follow.create_session(Key("app", "u", "b"))
    await follow.append_track_event(s2, tev("t", 1))
    assert 0 < await redis_client.ttl(follow.keys.track_index(s2.key, "t")) <= 50


async def test_track_errors(make_service) -> None:
    """None session or track event, and a missing session, raise clear errors."""
    svc = await make_service()
    with pytest.raises(InvalidArgumentError, match="session is nil"):
        await svc.append_track_event(None, tev("t", 1))  # type: ignore[arg-type]
    s = await svc.create_session(Key("app", "u", "s"))
    with pytest.raises(InvalidArgumentError, match="track event is nil"):
        await svc.append_track_event(s, None)  # type: ignore[arg-type]
    with pytest.raises(SessionNotFoundError):
        await svc.append_track_event(Session(id="x", app_name="app", user_id="u"), tev("t", 1))
