"""Create, get, list and delete on the HashIdx layout, against a real redis-server.

Reference §11 edge cases covered here: 1, 2, 3, 4 (options only matter for existing
sessions: our create has no event options), 7, 8, 9, 11, 12, 18, 19, 20, 21, 22, 23, 24, 46,
47, 48, 55-58 (state, in test_state.py), 83 (test_connection.py).
Covered elsewhere: 13-17, 27-35, 40-45, 59-66, 80, 81, 84-86 (test_events.py, test_state.py,
test_tracks.py). Compat-mode cases (5, 6, 25, 26, 49-54) belong to the legacy engine.
Deliberate differences: 10 (no event-page option exists, so nothing to reject); 12 (binary
state values come back intact, Go mangles them through cjson); a lost create race returns the
existing session instead of "session already exists" (§12.18); a Redis error is an error,
never "not found" (§12.7); list_sessions limit 0 means "no limit" (§12.24).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sessionstreams.common.errors import ConnectionFailedError, DecodeError, InvalidKeyError
from sessionstreams.common.models import Event, Key, UserKey
from sessionstreams.producer import SessionService


async def test_create_generates_uuid_when_id_empty(make_service) -> None:
    """An empty session id gets a UUID and the meta is stored under it."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u1", ""))
    uuid.UUID(s.id)
    assert await svc.get_session(Key("app", "u1", s.id)) is not None
    assert s.service_meta["storage_type"] == "hashidx"


@pytest.mark.parametrize(
    ("key", "word"),
    [
        (Key("", "u", "s"), "appName"),
        (Key("a", "", "s"), "userID"),
        (Key("a{x}", "u", "s"), "appName"),
        (Key("a", "u}", "s"), "userID"),
        (Key("a", "u", "s{1}"), "sessionID"),
    ],
)
async def test_create_rejects_bad_keys(make_service, redis_client, key_prefix, key, word) -> None:
    """Empty ids and hash-tag braces are refused with a clear error; nothing is written."""
    svc = await make_service()
    with pytest.raises(InvalidKeyError, match=word):
        await svc.create_session(key, {"k": b"v"})
    assert [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*")] == []


async def test_create_with_nil_state_has_empty_state(make_service) -> None:
    """A nil state gives an empty state map (not None)."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s1"))
    assert s.state == {}


async def test_create_existing_returns_stored_session(make_service) -> None:
    """Creating an existing id returns the stored session; the new state is ignored."""
    svc = await make_service()
    key = Key("app", "u", "dup")
    await svc.create_session(key, {"k": b"old"})
    again = await svc.create_session(key, {"k": b"new"})
    assert again.state["k"] == b"old"


async def test_concurrent_creates_all_get_one_session(make_service) -> None:
    """Ten concurrent creates of one id all return the same stored session."""
    svc = await make_service()
    key = Key("app", "u", "race")
    results = await asyncio.gather(
        *(svc.create_session(key, {"n": str(i).encode()}) for i in range(10))
    )
    stored = await svc.get_session(key)
    assert stored is not None
    assert {r.state["n"] for r in results} == {stored.state["n"]}
    assert {r.created_at for r in results} == {stored.created_at}


async def test_create_merges_app_and_user_state(make_service) -> None:
    """App and user state show up as app:k and user:k next to a plain k."""
    svc = await make_service()
    await svc.update_app_state("app", {"k": b"A"})
    await svc.update_user_state(UserKey("app", "u"), {"k": b"U"})
    s = await svc.create_session(Key("app", "u", "s"), {"k": b"S"})
    assert s.state["k"] == b"S"
    assert s.state["app:k"] == b"A"
    assert s.state["user:k"] == b"U"
    got = await svc.get_session(s.key)
    assert got is not None
    assert (got.state["k"], got.state["app:k"], got.state["user:k"]) == (b"S", b"A", b"U")


async def test_create_splits_scoped_state(make_service) -> None:
    """app:/user: keys given at create go to the app/user HASH; temp: is never stored."""
    svc = await make_service()
    s = await svc.create_session(
        Key("app", "u", "s"), {"app:theme": b"dark", "user:lang": b"fr", "temp:x": b"1", "k": b"v"}
    )
    assert s.state["temp:x"] == b"1"
    assert await svc.list_app_states("app") == {"theme": b"dark"}
    assert await svc.list_user_states(UserKey("app", "u")) == {"lang": b"fr"}
    got = await svc.get_session(s.key)
    assert got is not None
    assert "temp:x" not in got.state
    assert got.state["k"] == b"v"
    assert got.state["app:theme"] == b"dark"


async def test_get_unknown_returns_none(make_service) -> None:
    """GetSession of an unknown id returns None, not an error."""
    svc = await make_service()
    assert await svc.get_session(Key("app", "u", "nope")) is None


@pytest.mark.parametrize("key", [Key("", "u", "s"), Key("a", "", "s"), Key("a", "u", "")])
async def test_get_rejects_empty_ids(make_service, key) -> None:
    """GetSession with an empty app, user or session id raises InvalidKeyError."""
    svc = await make_service()
    with pytest.raises(InvalidKeyError):
        await svc.get_session(key)


async def test_get_corrupt_meta_raises_decode_error(make_service, redis_client) -> None:
    """A meta that is not JSON is a DecodeError carrying the raw bytes."""
    svc = await make_service()
    key = Key("app", "u", "bad")
    await redis_client.set(svc.keys.meta(key), b"not json")
    with pytest.raises(DecodeError) as info:
        await svc.get_session(key)
    assert info.value.raw == b"not json"


async def test_get_wrong_type_index_is_an_error(make_service, redis_client) -> None:
    """An event index holding the wrong Redis type fails the read with our error."""
    from sessionstreams.common.errors import CorruptDataError

    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "wt"))
    await redis_client.set(svc.keys.event_index(s.key), b"x")
    with pytest.raises(CorruptDataError):
        await svc.get_session(s.key)


async def test_binary_app_and_user_state_round_trip(make_service) -> None:
    """Non-UTF-8 bytes in app and user state come back intact through get_session."""
    svc = await make_service()
    await svc.update_app_state("app", {"bin": b"\xff\x00\xfe"})
    await svc.update_user_state(UserKey("app", "u"), {"bin": b"\x80\x81"})
    s = await svc.create_session(Key("app", "u", "s"))
    got = await svc.get_session(s.key)
    assert got is not None
    assert got.state["app:bin"] == b"\xff\x00\xfe"
    assert got.state["user:bin"] == b"\x80\x81"


async def test_redis_down_is_an_error_not_none(make_settings) -> None:
    """With Redis unreachable, get_session raises ConnectionFailedError (never None)."""
    svc = SessionService(make_settings(url="redis://127.0.0.1:1/0", client_retries=0))
    try:
        with pytest.raises(ConnectionFailedError):
            await svc.get_session(Key("app", "u", "s"))
    finally:
        await svc.close()


@pytest.mark.parametrize("index", [False, True])
async def test_list_sessions_empty_user(make_service, index) -> None:
    """Listing a user without sessions returns []."""
    svc = await make_service(enable_user_session_index=index)
    assert await svc.list_sessions(UserKey("app", "nobody")) == []


@pytest.mark.parametrize("index", [False, True])
async def test_list_sessions_pages_newest_first(make_service, index) -> None:
    """Three sessions created in turn; page (1, 2) returns the middle and the oldest."""
    svc = await make_service(enable_user_session_index=index)
    ids = []
    for i in range(3):
        s = await svc.create_session(Key("app", "u", f"session{i}"))
        ids.append(s.id)
        await asyncio.sleep(0.002)
    page = await svc.list_sessions(UserKey("app", "u"), offset=1, limit=2)
    assert [s.id for s in page] == ["session1", "session0"]
    assert [s.id for s in await svc.list_sessions(UserKey("app", "u"), offset=5)] == []


async def test_list_sorts_by_updated_at_after_activity(make_service) -> None:
    """An append moves a session to the front: updatedAt follows the last write."""
    svc = await make_service()
    a = await svc.create_session(Key("app", "u", "a"))
    await asyncio.sleep(0.002)
    await svc.create_session(Key("app", "u", "b"))
    await asyncio.sleep(0.002)
    await svc.append_event(a, Event.message("user", "hi"))
    assert [s.id for s in await svc.list_sessions(UserKey("app", "u"))] == ["a", "b"]


async def test_list_only_meta_has_state_but_no_events(make_service) -> None:
    """only_meta: no events or tracks, state scopes merged, storage tag set."""
    svc = await make_service()
    await svc.update_app_state("app", {"a": b"1"})
    s = await svc.create_session(Key("app", "u", "s"), {"k": b"v"})
    await svc.append_event(s, Event.message("user", "hello"))
    (got,) = await svc.list_sessions(UserKey("app", "u"), only_meta=True)
    assert got.events == []
    assert got.tracks is None
    assert got.state["k"] == b"v"
    assert got.state["app:a"] == b"1"
    assert got.service_meta["storage_type"] == "hashidx"
    (full,) = await svc.list_sessions(UserKey("app", "u"))
    assert [e.id for e in full.events] == [e.id for e in s.events]


async def test_list_with_index_prunes_stale_and_skips_corrupt(make_service, redis_client) -> None:
    """An index entry without meta is removed; one with corrupt meta is skipped."""
    svc = await make_service(enable_user_session_index=True)
    await svc.create_session(Key("app", "u", "good"))
    bad = await svc.create_session(Key("app", "u", "bad"))
    gone = await svc.create_session(Key("app", "u", "gone"))
    await redis_client.delete(svc.keys.meta(gone.key))
    await redis_client.set(svc.keys.meta(bad.key), b"{broken")
    listed = await svc.list_sessions(UserKey("app", "u"))
    assert [s.id for s in listed] == ["good"]
    fields = await redis_client.hkeys(svc.keys.session_index(UserKey("app", "u")))
    assert sorted(fields) == [b"bad", b"good"]


async def test_scan_listing_escapes_glob_characters(make_service) -> None:
    """A user id with glob characters only lists its own sessions."""
    svc = await make_service()
    await svc.create_session(Key("app", "u*", "mine"))
    await svc.create_session(Key("app", "ux", "other"))
    assert [s.id for s in await svc.list_sessions(UserKey("app", "u*"))] == ["mine"]


async def test_list_app_sessions_spans_users(make_service) -> None:
    """list_app_sessions finds every user's sessions of one app, and only that app."""
    svc = await make_service()
    for user in ("u1", "u2"):
        await svc.create_session(Key("app", user, f"s-{user}"), {"k": user.encode()})
    await svc.create_session(Key("other", "u1", "x"))
    found = await svc.list_app_sessions("app")
    assert sorted((s.user_id, s.id) for s in found) == [("u1", "s-u1"), ("u2", "s-u2")]
    assert {s.state["k"] for s in found} == {b"u1", b"u2"}


async def test_delete_missing_session_is_fine(make_service) -> None:
    """Deleting a session that does not exist succeeds."""
    svc = await make_service()
    await svc.delete_session(Key("app", "u", "never"))


async def test_delete_removes_every_key(make_service, redis_client, key_prefix) -> None:
    """Delete removes meta, events, index, summaries, tracks, names, our keys and index entry."""
    from sessionstreams.common.gotime import GoTime
    from sessionstreams.common.models import TrackEvent

    svc = await make_service(enable_user_session_index=True)
    s = await svc.create_session(Key("app", "u", "s"))
    await svc.append_event(s, Event.message("user", "hi"))
    track = TrackEvent(track="t1", payload=b'{"a":1}', timestamp=GoTime.now())
    await svc.append_track_event(s, track)
    await redis_client.set(svc.keys.summary(s.key), b"{}")
    await svc.delete_session(s.key)
    left = [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*")]
    assert left == []
    assert await svc.get_session(s.key) is None


async def test_delete_without_meta_removes_tracks(make_service, redis_client, key_prefix) -> None:
    """Track keys named only in the names SET are deleted after the meta is gone."""
    from sessionstreams.common.gotime import GoTime
    from sessionstreams.common.models import TrackEvent

    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"))
    await svc.append_track_event(s, TrackEvent(track="t9", payload=b"1", timestamp=GoTime.now()))
    await redis_client.delete(svc.keys.meta(s.key))
    await svc.delete_session(s.key)
    assert [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*")] == []


async def test_list_with_index_sends_no_scan(make_service, redis_target) -> None:
    """With the user session index, listing uses HSCAN on one key and never SCAN."""
    svc = await make_service(enable_user_session_index=True)
    for i in range(3):
        await svc.create_session(Key("app", "u", f"s{i}"))
    await redis_target.reset_stats()  # on every primary
    assert len(await svc.list_sessions(UserKey("app", "u"))) == 3
    stats = await redis_target.command_stats()
    assert "scan" not in stats
    assert "hscan" in stats
