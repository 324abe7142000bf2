"""The reference §5 CompatMode matrix, row by row, in NONE, LEGACY and TRANSITION modes.

Legacy data is written directly in the Go layout (tests/legacy_layout.py) and then read,
appended to, listed, summarised and deleted through the service. Reference §11 cases 5, 6,
25, 26, 34, 35, 49-54 are covered here. Deliberate differences (docs/compatibility.md,
"Compatibility modes"): the user state merged into sessions and returned by list_user_states
is the legacy one overlaid by the HashIdx one in LEGACY/TRANSITION (§12.16); NONE mode ignores
a ``zset`` tag (§12.17); a legacy create never overwrites (§12.18).
"""

from __future__ import annotations

import msgspec
import pytest
from legacy_layout import GoLegacyWriter

from sessionstreams.common.compat import Engines, check_presence
from sessionstreams.common.errors import SessionNotFoundError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.models import (
    Event,
    Key,
    Session,
    SessionStateDoc,
    Summary,
    TrackEvent,
    UserKey,
    encode_summary_map,
)
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.settings import CompatMode

NONE, LEGACY, TRANSITION = CompatMode.NONE, CompatMode.LEGACY, CompatMode.TRANSITION
MODES = pytest.mark.parametrize("mode", [NONE, LEGACY, TRANSITION], ids=lambda m: m.name)
T0 = 1_735_787_045_000_000_000
USER = UserKey("app", "u")
L, H, B = (Key("app", "u", sid) for sid in ("legacy", "hashidx", "both"))


def msg(role: str, i: int, **kw) -> Event:
    return Event.message(role, f"{role} {i}", id=f"e{i:04d}",
                         timestamp=GoTime(T0 + i * 1_000_000), **kw)


@pytest.fixture
def go(redis_client, key_prefix) -> GoLegacyWriter:
    return GoLegacyWriter(redis_client, key_prefix)


@pytest.fixture
def keys(key_prefix) -> KeySpace:
    return KeySpace(key_prefix)


async def _world(make_service, go) -> None:
    """L only in legacy (events, a track, a summary), H only in HashIdx, B in both."""
    await go.create(L, {"where": b"legacy"})
    await go.append(L, msg("user", 1, request_id="q1"))
    await go.append(L, msg("assistant", 2, request_id="q1"))
    await go.track(L, TrackEvent(track="t", payload=b'{"n":1}', timestamp=GoTime(T0)))
    await go.summaries(L, {"": Summary(summary="legacy summary", updated_at=GoTime(T0))})
    writer = await make_service(compat_mode=NONE)
    h = await writer.create_session(H, {"where": b"hashidx"})
    await writer.append_event(h, msg("user", 3))
    await writer.create_session(B, {"where": b"hashidx"})
    await go.create(B, {"where": b"legacy"})


@MODES
async def test_existence_check(make_service, go, redis_client, keys, mode) -> None:
    """The existence check sees HashIdx always and the legacy layout only in compat modes."""
    await _world(make_service, go)
    compat = mode is not NONE
    for key, zset, hashidx in ((L, compat, False), (H, False, True), (B, compat, True)):
        presence = await check_presence(Scripts(), redis_client, keys, key, mode)
        assert (presence.zset, presence.hashidx) == (zset, hashidx)


@MODES
async def test_create_with_an_existing_id(make_service, go, keys, redis_client, mode) -> None:
    """An existing id returns the stored copy, legacy first; NONE ignores the legacy copy and
    creates a HashIdx duplicate."""
    await _world(make_service, go)
    svc = await make_service(compat_mode=mode)
    s = await svc.create_session(L, {"where": b"new"})
    if mode is NONE:
        assert (s.service_meta["storage_type"], s.state["where"]) == ("hashidx", b"new")
        assert (await go.doc(L)).state["where"] == b"legacy"
    else:
        assert (s.service_meta["storage_type"], s.state["where"]) == ("zset", b"legacy")
        assert [e.id for e in s.events] == ["e0001", "e0002"]
        assert not await redis_client.exists(keys.meta(L))
    s = await svc.create_session(H, {"where": b"new"})
    assert (s.service_meta["storage_type"], s.state["where"]) == ("hashidx", b"hashidx")
    s = await svc.create_session(B, {"where": b"new"})
    expected = ("hashidx", b"hashidx") if mode is NONE else ("zset", b"legacy")
    assert (s.service_meta["storage_type"], s.state["where"]) == expected


@MODES
async def test_create_new_goes_to_the_mode_target(make_service, go, keys, redis_client,
                                                  mode) -> None:
    """New sessions go to HashIdx, in TRANSITION to the legacy layout (a Go SessionState);
    app and HashIdx user state are merged into the returned session in every mode."""
    svc = await make_service(compat_mode=mode)
    await svc.update_app_state("app", {"theme": b"dark"})
    await svc.update_user_state(USER, {"lang": b"fr"})
    key = Key("app", "u", "new")
    s = await svc.create_session(key, {"k": b"v"})
    assert s.state == {"k": b"v", "app:theme": b"dark", "user:lang": b"fr"}
    in_legacy = mode is TRANSITION
    assert s.service_meta["storage_type"] == ("zset" if in_legacy else "hashidx")
    assert bool(await redis_client.exists(keys.meta(key))) is not in_legacy
    raw = await redis_client.hget(keys.legacy_sessions(key), "new")
    assert (raw is not None) is in_legacy
    if in_legacy:
        doc = SessionStateDoc.from_json(raw)
        assert (doc.id, doc.state, doc.generation) == ("new", {"k": b"v"}, s.service_meta[
            "incarnation"])
    got = await svc.get_session(key)
    assert got.state == s.state
    assert got.service_meta == s.service_meta


@MODES
async def test_get_session_prefers_the_legacy_copy(make_service, go, mode) -> None:
    """GetSession reads the legacy copy in compat modes (events, tracks, summaries, tag zset),
    and never sees it in NONE mode."""
    await _world(make_service, go)
    svc = await make_service(compat_mode=mode)
    got_l, got_h, got_b = [await svc.get_session(k) for k in (L, H, B)]
    assert got_h.service_meta["storage_type"] == "hashidx"
    assert [e.id for e in got_h.events] == ["e0003"]
    if mode is NONE:
        assert got_l is None
        assert got_b.state["where"] == b"hashidx"
        return
    assert got_l.service_meta["storage_type"] == "zset"
    assert [e.id for e in got_l.events] == ["e0001", "e0002"]
    assert got_l.events == await go.events(L)
    assert [t.payload for t in got_l.tracks["t"].events] == [b'{"n":1}']
    assert got_l.summaries[""].summary == "legacy summary"
    assert (got_b.service_meta["storage_type"], got_b.state["where"]) == ("zset", b"legacy")


@MODES
async def test_list_sessions_unions_the_layouts(make_service, go, mode) -> None:
    """ListSessions lists HashIdx sessions, plus legacy ones in compat modes, each id once
    with the legacy copy winning."""
    await _world(make_service, go)
    svc = await make_service(compat_mode=mode)
    for only_meta in (False, True):
        listed = {s.id: s for s in await svc.list_sessions(USER, only_meta=only_meta)}
        if mode is NONE:
            assert sorted(listed) == ["both", "hashidx"]
            assert listed["both"].service_meta["storage_type"] == "hashidx"
            continue
        assert sorted(listed) == ["both", "hashidx", "legacy"]
        assert listed["both"].service_meta["storage_type"] == "zset"
        assert listed["legacy"].state["where"] == b"legacy"
        if not only_meta:
            assert [e.id for e in listed["legacy"].events] == ["e0001", "e0002"]
            assert listed["legacy"].tracks["t"].events[0].payload == b'{"n":1}'
    app_wide = {s.id for s in await svc.list_app_sessions("app")}
    assert app_wide == ({"both", "hashidx"} if mode is NONE else {"both", "hashidx", "legacy"})


@MODES
async def test_delete_session_removes_both_copies_in_compat(make_service, go, redis_client,
                                                             keys, mode) -> None:
    """DeleteSession removes the HashIdx copy, and in compat modes the legacy copy with its
    events, tracks and summary; NONE leaves legacy data untouched."""
    await _world(make_service, go)
    svc = await make_service(compat_mode=mode)
    for key in (L, B):
        await svc.delete_session(key)
    assert not await redis_client.exists(keys.meta(B))
    legacy_left = await redis_client.hkeys(keys.legacy_sessions(USER))
    if mode is NONE:
        assert sorted(legacy_left) == [b"both", b"legacy"]
        assert await redis_client.exists(keys.legacy_events(L), keys.legacy_track(L, "t")) == 2
        return
    assert legacy_left == []
    assert await redis_client.exists(
        keys.legacy_events(L), keys.legacy_track(L, "t"), keys.legacy_track_names(L)) == 0
    assert await redis_client.hkeys(keys.legacy_summaries(USER)) == []
    assert await svc.get_session(L) is None
    assert [s.id for s in await svc.list_sessions(USER)] == ["hashidx"]


@MODES
async def test_appends_follow_the_tag_or_where_the_session_lives(
    make_service, go, redis_client, keys, mode
) -> None:
    """Appends and track appends go to the layout the session was read from (tag), or where
    it lives when untagged; NONE mode never writes the legacy layout."""
    await _world(make_service, go)
    svc = await make_service(compat_mode=mode)
    untagged = Session(id=L.session_id, app_name="app", user_id="u")
    tagged = Session(id=L.session_id, app_name="app", user_id="u",
                     service_meta={"storage_type": "zset"})
    track = TrackEvent(track="t", payload=b'{"n":2}', timestamp=GoTime(T0 + 5))
    if mode is NONE:
        for s in (untagged, tagged):
            with pytest.raises(SessionNotFoundError):
                await svc.append_event(s, msg("assistant", 9))
            with pytest.raises(SessionNotFoundError):
                await svc.append_track_event(s, track)
        assert len(await go.events(L)) == 2
        return
    s = await svc.get_session(L)
    await svc.append_event(s, msg("assistant", 7, state_delta={"n": b"7"}))
    await svc.append_event(untagged, msg("assistant", 8))
    await svc.append_track_event(s, track)
    assert [e.id for e in await go.events(L)] == ["e0001", "e0002", "e0007", "e0008"]
    assert (await go.doc(L)).state["n"] == b"7"
    assert not await redis_client.exists(keys.event_data(L), keys.meta(L))
    got = await svc.get_session(L)
    assert [e.id for e in got.events] == ["e0001", "e0002", "e0007", "e0008"]
    assert [t.payload for t in got.tracks["t"].events] == [b'{"n":1}', b'{"n":2}']
    h = await svc.get_session(H)
    await svc.append_event(h, msg("assistant", 9))
    assert not await redis_client.exists(keys.legacy_events(H))


@pytest.mark.parametrize("mode", [LEGACY, TRANSITION], ids=lambda m: m.name)
async def test_appended_deltas_on_a_legacy_session(make_service, go, redis_client, keys,
                                                   mode) -> None:
    """On a legacy session: temp: keys are not stored, app: goes to the shared app state,
    user: to the user-state keys the mode writes; storage is bounded by the limit."""
    await go.create(L)
    svc = await make_service(compat_mode=mode, session_event_storage_limit=2)
    s = await svc.get_session(L)
    delta = {"temp:t": b"1", "app:a": b"2", "user:u": b"3", "k": b"4"}
    await svc.append_event(s, msg("user", 1, state_delta=delta))
    for i in range(2, 5):
        await svc.append_event(s, msg("assistant", i))
    stored = await go.events(L)
    assert [e.id for e in stored] == ["e0001", "e0003", "e0004"]
    assert stored[0].state_delta == {"app:a": b"2", "user:u": b"3", "k": b"4"}
    assert (await go.doc(L)).state == {"k": b"4"}
    assert await redis_client.hgetall(keys.app_state("app")) == {b"a": b"2"}
    assert await redis_client.hgetall(keys.user_state(L)) == {b"u": b"3"}
    legacy_user = await redis_client.hgetall(keys.legacy_user_state(L))
    assert legacy_user == ({b"u": b"3"} if mode is TRANSITION else {})
    assert s.state["temp:t"] == b"1"


@MODES
async def test_update_state_and_trim_route_by_existence(make_service, go, mode) -> None:
    """UpdateSessionState and TrimConversations use the legacy copy in compat modes, HashIdx
    otherwise; in NONE mode a legacy-only session is not found."""
    await _world(make_service, go)
    svc = await make_service(compat_mode=mode)
    if mode is NONE:
        with pytest.raises(SessionNotFoundError):
            await svc.update_session_state(L, {"x": b"1"})
        assert await svc.trim_conversations(L) == []
    else:
        await svc.update_session_state(L, {"x": b"1"})
        assert (await go.doc(L)).state["x"] == b"1"
        trimmed = await svc.trim_conversations(L)
        assert [e.id for e in trimmed] == ["e0001", "e0002"]
        assert await go.events(L) == []
    await svc.update_session_state(H, {"x": b"2"})
    assert (await svc.get_session(H)).state["x"] == b"2"


@MODES
async def test_get_track_events_rule(make_service, go, redis_client, keys, mode) -> None:
    """GetTrackEvents: legacy if the session is there; HashIdx if it is there; else legacy
    when it holds events; else HashIdx (read even without a session)."""
    await _world(make_service, go)
    svc = await make_service(compat_mode=mode)
    got = await svc.get_track_events(L, "t")
    assert [t.payload for t in got.events] == ([] if mode is NONE else [b'{"n":1}'])
    orphan = Key("app", "u", "orphan")  # track data left after its session expired
    await go.create(orphan)
    await go.track(orphan, TrackEvent(track="t", payload=b"9", timestamp=GoTime(T0)))
    await redis_client.hdel(keys.legacy_sessions(orphan), "orphan")
    got = await svc.get_track_events(orphan, "t")
    assert [t.payload for t in got.events] == ([] if mode is NONE else [b"9"])
    h = await svc.get_session(H)
    await svc.append_track_event(h, TrackEvent(track="t", payload=b"7", timestamp=GoTime(T0)))
    assert [t.payload for t in (await svc.get_track_events(H, "t")).events] == [b"7"]
    assert (await svc.get_track_events(Key("app", "u", "none"), "t")).events == []


@MODES
async def test_app_state_is_shared(make_service, go, redis_client, keys, mode) -> None:
    """App state lives in the one shared key in every mode and is merged into sessions of
    both layouts."""
    await _world(make_service, go)
    svc = await make_service(compat_mode=mode)
    await svc.update_app_state("app", {"app:theme": b"dark"})
    assert await redis_client.hgetall(keys.app_state("app")) == {b"theme": b"dark"}
    assert await svc.list_app_states("app") == {"theme": b"dark"}
    sessions = [s for s in [await svc.get_session(k) for k in (L, H)] if s is not None]
    assert all(s.state["app:theme"] == b"dark" for s in sessions)
    await svc.delete_app_state("app", "theme")
    assert await svc.list_app_states("app") == {}


@MODES
async def test_update_user_state_targets(make_service, redis_client, keys, mode) -> None:
    """UpdateUserState writes HashIdx, and in TRANSITION the old key too (dual write)."""
    svc = await make_service(compat_mode=mode)
    await svc.update_user_state(USER, {"user:lang": b"fr"})
    assert await redis_client.hgetall(keys.user_state(USER)) == {b"lang": b"fr"}
    old = await redis_client.hgetall(keys.legacy_user_state(USER))
    assert old == ({b"lang": b"fr"} if mode is TRANSITION else {})


@MODES
async def test_list_and_delete_user_states(make_service, go, redis_client, keys, mode) -> None:
    """ListUserStates merges the old key under the HashIdx one in compat modes (NONE: HashIdx
    only); DeleteUserState removes the field from every key the mode reads."""
    await go.user_state(USER, {"a": b"old", "b": b"old"})
    svc = await make_service(compat_mode=mode)
    assert await svc.list_user_states(USER) == ({} if mode is NONE else {"a": b"old",
                                                                       "b": b"old"})
    await redis_client.hset(keys.user_state(USER), "b", b"new")
    expected = {"b": b"new"} if mode is NONE else {"a": b"old", "b": b"new"}
    assert await svc.list_user_states(USER) == expected
    await svc.delete_user_state(USER, "b")
    assert await redis_client.hget(keys.user_state(USER), "b") is None
    assert (await redis_client.hget(keys.legacy_user_state(USER), "b") is None) is (
        mode is not NONE)


@MODES
async def test_user_state_merged_into_sessions(make_service, go, redis_client, keys,
                                               mode) -> None:
    """Sessions of both layouts carry the same user state: in compat modes the old key
    overlaid by the HashIdx one; in NONE mode the HashIdx one."""
    await _world(make_service, go)
    await go.user_state(USER, {"a": b"old", "b": b"old"})
    await redis_client.hset(keys.user_state(USER), "b", b"new")
    svc = await make_service(compat_mode=mode)
    expected = {"user:b": b"new"} if mode is NONE else {"user:a": b"old", "user:b": b"new"}
    sessions = [s for s in [await svc.get_session(k) for k in (L, H)] if s is not None]
    sessions += await svc.list_sessions(USER)
    for s in sessions:
        assert {k: v for k, v in s.state.items() if k.startswith("user:")} == expected


@MODES
async def test_summaries_follow_the_session(make_service, go, redis_client, key_prefix,
                                            mode) -> None:
    """Stored summaries are read with the session from the layout it is read from (legacy
    ones only in compat modes); a newer summary written through the legacy engine replaces
    the stored one; a session without events gets none attached (as Go)."""
    await _world(make_service, go)
    keys = KeySpace(key_prefix)
    await redis_client.set(keys.summary(H), encode_summary_map(
        {"": Summary(summary="hashidx summary", updated_at=GoTime(T0))}))
    svc = await make_service(compat_mode=mode)
    assert (await svc.get_session(H)).summaries[""].summary == "hashidx summary"
    engines = Engines(redis_client, keys, Scripts(), mode)
    newer = Summary(summary="newer", updated_at=GoTime(T0 + 10**9))
    assert await engines.legacy.set_summary(L, filter_key="", summary=newer, ttl_ms=0) == (
        "applied")
    if mode is NONE:
        assert await svc.get_session(L) is None
        return
    assert (await svc.get_session(L)).summaries[""].summary == "newer"
    await go.summaries(B, {"": Summary(summary="b", updated_at=GoTime(T0))})
    assert (await svc.get_session(B)).summaries == {}


async def test_tracks_state_decodes_as_go_after_our_writes(make_service, go) -> None:
    """After our track append the legacy SessionState still decodes as Go's, tracks merged."""
    await go.create(L)
    await go.track(L, TrackEvent(track="a", payload=b"1", timestamp=GoTime(T0)))
    svc = await make_service(compat_mode=LEGACY)
    s = await svc.get_session(L)
    await svc.append_track_event(s, TrackEvent(track="b", payload=b"2", timestamp=GoTime(T0)))
    doc = await go.doc(L)
    assert msgspec.json.decode(doc.state["tracks"]) == ["a", "b"]
