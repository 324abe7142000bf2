"""append_event / get_session event semantics on the HashIdx layout (real redis-server).

Reference §11 cases: 13, 14 (equal timestamps: we keep append order, see below), 15, 16, 17,
27 (partial: differs on purpose, nothing is stored), 28, 29 (we store null, as Go on real
Redis), 30, 31, 32, 33, 40, 41, 42, 80, 81, 84, 85, 86.
Deliberate differences: storage is bounded by session_event_storage_limit with the anchoring
user message kept (§12.1); equal timestamps keep append order instead of id order (§12.10);
a re-appended event id is a no-op, not an overwrite (§12.9); temp: delta keys are not stored;
app:/user: delta keys go to app/user state.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sessionstreams.common.errors import (
    InvalidArgumentError,
    SessionChangedError,
    SessionNotFoundError,
)
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, Key, Session, UserKey
from sessionstreams.common.settings import CompatMode

T0 = 1_735_787_045_000_000_000  # 2025-01-02T03:04:05Z in ns


def msg(role: str, text: str, i: int, **kw) -> Event:
    """A message event with a fixed, increasing timestamp."""
    return Event.message(role, text, id=f"e{i:04d}", timestamp=GoTime(T0 + i * 1_000_000), **kw)


async def _session(svc, sid: str = "s") -> Session:
    return await svc.create_session(Key("app", "u", sid))


async def test_append_then_get_round_trips_event_json(make_service, redis_client) -> None:
    """The stored event JSON is the event's Go JSON, and reads decode to an equal event."""
    svc = await make_service()
    s = await _session(svc)
    e = msg("user", "hello <b>&</b>", 1, request_id="r1", state_delta={"k": b"v"})
    await svc.append_event(s, e)
    stored = await redis_client.hget(svc.keys.event_data(s.key), e.id)
    assert stored == e.to_json()
    got = await svc.get_session(s.key)
    assert got is not None
    assert got.events == [e]
    assert got.state["k"] == b"v"


async def test_append_updates_caller_session(make_service) -> None:
    """The caller's Session sees its event and state delta at once."""
    svc = await make_service()
    s = await _session(svc)
    await svc.append_event(s, msg("user", "hi", 1, state_delta={"a": b"1", "temp:t": b"2"}))
    assert [e.id for e in s.events] == ["e0001"]
    assert s.state["a"] == b"1"
    assert s.state["temp:t"] == b"2"


async def test_out_of_order_timestamps_read_sorted(make_service) -> None:
    """Events appended out of timestamp order come back in timestamp order."""
    svc = await make_service()
    s = await _session(svc)
    for i in (3, 1, 2):
        await svc.append_event(s, msg("user", f"m{i}", i))
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == ["e0001", "e0002", "e0003"]


async def test_equal_timestamps_keep_append_order(make_service) -> None:
    """Events with one timestamp come back in append order, not by id."""
    svc = await make_service()
    s = await _session(svc)
    ts = GoTime(T0)
    ids = ["z", "b", "m", "a"]
    for i, eid in enumerate(ids):
        e = Event.message("user", eid, id=eid, timestamp=ts, state_delta={"seq": str(i).encode()})
        await svc.append_event(s, e)
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == ids
    assert got.state["seq"] == b"3"


async def test_read_limit_returns_newest(make_service) -> None:
    """Event limit 3 with five user events: a read with num_events=0 returns e3..e5."""
    svc = await make_service(session_event_limit=3, session_event_storage_limit=0)
    s = await _session(svc)
    for i in range(1, 6):
        await svc.append_event(s, msg("user", f"m{i}", i))
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == ["e0003", "e0004", "e0005"]


async def test_leading_non_user_events_dropped(make_service) -> None:
    """[assistant, assistant, user, assistant] reads back as [user, assistant]."""
    svc = await make_service()
    s = await _session(svc)
    for i, role in enumerate(["assistant", "assistant", "user", "assistant"]):
        await svc.append_event(s, msg(role, "x", i))
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == ["e0002", "e0003"]
    (listed,) = await svc.list_sessions(UserKey("app", "u"))
    assert [e.id for e in listed.events] == ["e0002", "e0003"]


async def test_user_first_returns_all(make_service) -> None:
    """[user, assistant, assistant] reads back whole."""
    svc = await make_service()
    s = await _session(svc)
    for i, role in enumerate(["user", "assistant", "assistant"]):
        await svc.append_event(s, msg(role, "x", i))
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == ["e0000", "e0001", "e0002"]


async def test_window_without_user_prepends_last_user(make_service) -> None:
    """A window with no user message gets the newest earlier user message prepended."""
    svc = await make_service()
    s = await _session(svc)
    roles = ["user", "assistant", "user"] + ["assistant"] * 5
    for i, role in enumerate(roles):
        await svc.append_event(s, msg(role, "x", i))
    got = await svc.get_session(s.key, num_events=3)
    assert [e.id for e in got.events] == ["e0002", "e0005", "e0006", "e0007"]


async def test_only_assistant_events_read_empty(make_service) -> None:
    """A session holding only assistant events returns no events (reference rule)."""
    svc = await make_service()
    s = await _session(svc)
    for i in range(3):
        await svc.append_event(s, msg("assistant", "x", i))
    got = await svc.get_session(s.key)
    assert got.events == []


async def test_after_filter_and_prepend(make_service) -> None:
    """after= keeps events at or after the time; the earlier user message is prepended."""
    svc = await make_service()
    s = await _session(svc)
    for i, role in enumerate(["user", "assistant", "assistant", "assistant"]):
        await svc.append_event(s, msg(role, "x", i))
    got = await svc.get_session(s.key, after=GoTime(T0 + 2_000_000))
    assert [e.id for e in got.events] == ["e0000", "e0002", "e0003"]
    after_dt = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(milliseconds=3)
    got = await svc.get_session(s.key, after=after_dt)
    assert [e.id for e in got.events] == ["e0000", "e0003"]


async def test_user_like_text_in_extensions_is_not_a_user_message(make_service) -> None:
    """An assistant event with "role":"user" inside its extensions is not a user message."""
    svc = await make_service()
    s = await _session(svc)
    await svc.append_event(s, msg("user", "q", 0))
    await svc.append_event(s, msg("assistant", "a", 1))
    fake = msg("assistant", "b", 2)
    fake.extensions = {"adk": b'{"content":{"role":"user"}}'}
    await svc.append_event(s, fake)
    got = await svc.get_session(s.key, num_events=1)
    assert [e.id for e in got.events] == ["e0000", "e0002"]


async def test_storage_limit_trims_oldest(make_service, redis_client) -> None:
    """With storage limit 5, only the newest 5 events stay in Redis."""
    svc = await make_service(session_event_limit=5)
    s = await _session(svc)
    for i in range(12):
        await svc.append_event(s, msg("user", "x", i))
    assert await redis_client.zcard(svc.keys.event_index(s.key)) == 5
    assert await redis_client.hlen(svc.keys.event_data(s.key)) == 5
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == [f"e{i:04d}" for i in range(7, 12)]


async def test_storage_limit_keeps_anchor_user_message(make_service, redis_client) -> None:
    """Trimming keeps the newest user message when no kept event is one: reads are unchanged."""
    svc = await make_service(session_event_limit=4)
    s = await _session(svc)
    await svc.append_event(s, msg("user", "question", 0))
    for i in range(1, 10):
        await svc.append_event(s, msg("assistant", "step", i))
    assert await redis_client.zcard(svc.keys.event_index(s.key)) == 5
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == ["e0000", "e0006", "e0007", "e0008", "e0009"]
    await svc.append_event(s, msg("user", "again", 10))
    await svc.append_event(s, msg("assistant", "ok", 11))
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == ["e0010", "e0011"]


async def test_read_window_matches_untrimmed_reference(make_service) -> None:
    """A trimmed session reads like the reference filtering over the full history."""
    from sessionstreams.common.readpath import apply_event_filtering

    roles = ["user", "assistant", "tool", "assistant", "user", "assistant"] * 6 + ["assistant"] * 7
    events = [msg(r, "x", i) for i, r in enumerate(roles)]
    svc = await make_service(session_event_limit=6)
    s = await _session(svc)
    for e in events:
        await svc.append_event(s, e)
    for n in (0, 1, 3, 6):
        got = await svc.get_session(s.key, num_events=n)
        want = apply_event_filtering(events, n or 6)
        assert [e.id for e in got.events] == [e.id for e in want], n


async def test_partial_event_changes_nothing(make_service, redis_client) -> None:
    """A partial event is neither stored nor applied (state delta ignored)."""
    svc = await make_service()
    s = await _session(svc)
    await svc.append_event(s, msg("assistant", "par", 1, partial=True, state_delta={"k": b"v"}))
    got = await svc.get_session(s.key)
    assert got.state.get("k") is None
    assert await redis_client.exists(svc.keys.event_data(s.key)) == 0


async def test_event_without_response_not_stored_but_delta_applied(make_service) -> None:
    """An event without a response is not stored; its state delta still applies."""
    svc = await make_service()
    s = await _session(svc)
    await svc.append_event(s, Event(id="x", timestamp=GoTime(T0), state_delta={"k": b"v"}))
    got = await svc.get_session(s.key)
    assert got.events == []
    assert got.state["k"] == b"v"


async def test_nil_delta_value_stored_as_null(make_service) -> None:
    """A delta setting a key to None leaves the key present with a None value."""
    svc = await make_service()
    s = await svc.create_session(Key("app", "u", "s"), {"k": b"old"})
    await svc.append_event(s, msg("user", "x", 1, state_delta={"k": None}))
    got = await svc.get_session(s.key)
    assert "k" in got.state
    assert got.state["k"] is None


async def test_delta_values_are_normalised_or_refused(make_service) -> None:
    """A str delta value is stored as its UTF-8 bytes (as create_session does); a value of
    another type is refused with InvalidArgumentError before anything is written."""
    svc = await make_service()
    s = await _session(svc)
    ev = msg("user", "x", 1, state_delta={"k": "héllo", "n": None})
    await svc.append_event(s, ev)
    assert ev.state_delta == {"k": "héllo".encode(), "n": None}
    got = await svc.get_session(s.key)
    assert got.state["k"] == "héllo".encode()
    assert got.events[0].state_delta == {"k": "héllo".encode(), "n": None}
    with pytest.raises(InvalidArgumentError, match="must be bytes, str or None"):
        await svc.append_event(s, msg("user", "y", 2, state_delta={"k": 3}))
    got = await svc.get_session(s.key)
    assert len(got.events) == 1


async def test_concurrent_deltas_all_land(make_service) -> None:
    """Ten concurrent appends, each with its own delta key: all ten keys are present."""
    svc = await make_service()
    s = await _session(svc)
    await asyncio.gather(
        *(svc.append_event(s, msg("user", "x", i, state_delta={f"k{i}": b"1"})) for i in range(10))
    )
    got = await svc.get_session(s.key)
    assert all(got.state[f"k{i}"] == b"1" for i in range(10))


async def test_caller_state_not_mutated(make_service) -> None:
    """The state map passed to create_session is not changed by the service."""
    svc = await make_service()
    state = {"k": b"v"}
    s = await svc.create_session(Key("app", "u", "s"), state)
    await svc.append_event(s, msg("user", "x", 1, state_delta={"k": b"w"}))
    assert state == {"k": b"v"}


async def test_nil_event_and_session_rejected(make_service) -> None:
    """append_event with None session or event raises InvalidArgumentError."""
    svc = await make_service()
    s = await _session(svc)
    with pytest.raises(InvalidArgumentError, match="session is nil"):
        await svc.append_event(None, msg("user", "x", 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="event is nil"):
        await svc.append_event(s, None)  # type: ignore[arg-type]


async def test_append_to_missing_session_fails(make_service, redis_client) -> None:
    """Appending to a session that does not exist raises SessionNotFoundError; no orphan events."""
    svc = await make_service()
    ghost = Session(id="ghost", app_name="app", user_id="u")
    with pytest.raises(SessionNotFoundError):
        await svc.append_event(ghost, msg("user", "x", 1))
    assert await redis_client.exists(svc.keys.event_data(ghost.key)) == 0


async def test_event_without_id_gets_uuid(make_service) -> None:
    """An event with an empty id gets a UUID before it is stored."""
    svc = await make_service()
    s = await _session(svc)
    e = msg("user", "x", 1)
    e.id = ""
    await svc.append_event(s, e)
    assert len(e.id) == 36
    got = await svc.get_session(s.key)
    assert got.events[0].id == e.id


async def test_reappended_event_id_is_a_no_op(make_service) -> None:
    """Appending a second event with an existing id keeps the first (no overwrite)."""
    svc = await make_service()
    s = await _session(svc)
    await svc.append_event(s, msg("user", "first", 1))
    await svc.append_event(s, msg("user", "second", 1))
    got = await svc.get_session(s.key)
    assert [e.response.choices[0].message.content for e in got.events] == ["first"]


async def test_retried_request_applies_once(make_service, redis_client) -> None:
    """Re-running the same apply entry (a client retry) is reported duplicate, applied once."""
    from sessionstreams.common.hashidx import AppendEntry

    svc = await make_service()
    s = await _session(svc)
    entry = AppendEntry(
        rid="rid-1", event_id="e1", event_json=msg("user", "x", 1).to_json(), ts_ns=T0,
        is_user=True, producer_ts="", session_delta=b'{"n":"MQ=="}', user_pairs=(("c", b"1"),),
    )
    opts = {"ttl_ms": 0, "storage_limit": 0, "user_state_ttl_ms": 0}
    assert await svc.engine.append(s.key, [entry], **opts) == ["applied"]
    second = AppendEntry(**{**{f: getattr(entry, f) for f in entry.__struct_fields__},
                            "event_id": "e2"})
    assert await svc.engine.append(s.key, [second], **opts) == ["duplicate"]
    assert await redis_client.zcard(svc.keys.event_index(s.key)) == 1


async def test_app_and_user_deltas_go_to_their_hashes(make_service) -> None:
    """app:/user: delta keys land in the app/user state; temp: is not stored anywhere."""
    svc = await make_service()
    s = await _session(svc)
    e = msg("user", "x", 1, state_delta={"app:a": b"1", "user:b": b"2", "temp:c": b"3", "d": b"4"})
    await svc.append_event(s, e)
    assert await svc.list_app_states("app") == {"a": b"1"}
    assert await svc.list_user_states(UserKey("app", "u")) == {"b": b"2"}
    got = await svc.get_session(s.key)
    assert got.state["app:a"] == b"1"
    assert got.state["user:b"] == b"2"
    assert got.state["d"] == b"4"
    assert "temp:c" not in got.state
    assert "temp:c" not in (got.events[0].state_delta or {})


async def test_session_ttl_set_and_refreshed_by_append(make_service, redis_client) -> None:
    """With a session TTL, meta and event keys expire; an append refreshes them."""
    svc = await make_service(session_ttl=5)
    s = await _session(svc)
    await svc.append_event(s, msg("user", "x", 1))
    for k in (svc.keys.meta(s.key), svc.keys.event_index(s.key), svc.keys.event_data(s.key)):
        assert 0 < await redis_client.pttl(k) <= 5000


async def test_get_does_not_refresh_ttl(make_service, redis_client) -> None:
    """A read leaves TTLs alone, and gives no TTL to a summary key without one."""
    svc = await make_service(session_ttl=30)
    s = await _session(svc)
    await svc.append_event(s, msg("user", "x", 1))
    await redis_client.pexpire(svc.keys.meta(s.key), 10_000)
    await redis_client.set(svc.keys.summary(s.key), b"{}")
    await svc.get_session(s.key)
    assert await redis_client.pttl(svc.keys.meta(s.key)) <= 10_000
    assert await redis_client.pttl(svc.keys.summary(s.key)) == -1


async def test_ttl_less_writer_keeps_existing_ttl(make_service, redis_client) -> None:
    """A service without TTL writing to a session with a TTL keeps that TTL."""
    with_ttl = await make_service(session_ttl=10)
    s = await _session(with_ttl)
    no_ttl = await make_service()
    await no_ttl.append_event(s, msg("user", "x", 1, state_delta={"k": b"v"}))
    await no_ttl.update_session_state(s.key, {"j": b"w"})
    assert 0 < await redis_client.pttl(no_ttl.keys.meta(s.key)) <= 10_000


async def test_hooks_run_in_onion_order_and_can_abort(make_service, redis_client) -> None:
    """Hooks run h1-before, h2-before, h2-after, h1-after; skipping next stores nothing."""
    calls: list[str] = []

    def hook(name: str, call_next: bool = True):
        async def h(ctx, nxt):
            calls.append(f"{name}-before")
            result = await nxt() if call_next else None
            calls.append(f"{name}-after")
            return result

        return h

    svc = await make_service(append_event_hooks=(hook("h1"), hook("h2")))
    s = await _session(svc)
    await svc.append_event(s, msg("user", "x", 1))
    assert calls == ["h1-before", "h2-before", "h2-after", "h1-after"]
    blocked = await make_service(append_event_hooks=(hook("stop", call_next=False),))
    s2 = await _session(blocked, "s2")
    await blocked.append_event(s2, msg("user", "x", 2))
    assert await redis_client.exists(blocked.keys.event_data(s2.key)) == 0
    assert s2.events == []


async def test_get_session_hook_can_change_result(make_service) -> None:
    """A GetSession hook can add state and filter events of the returned session."""

    async def hook(ctx, nxt):
        session = await nxt()
        if session is not None:
            session.state["hooked"] = b"1"
            session.events = [e for e in session.events if e.id != "e0001"]
        return session

    svc = await make_service(get_session_hooks=(hook,))
    s = await _session(svc)
    for i in range(3):
        await svc.append_event(s, msg("user", "x", i))
    got = await svc.get_session(s.key)
    assert got.state["hooked"] == b"1"
    assert [e.id for e in got.events] == ["e0000", "e0002"]


async def test_disable_script_cache_uses_eval(make_service, redis_target) -> None:
    """With disable_script_cache every script runs through EVAL (no EVALSHA)."""
    await redis_target.reset_stats()  # on every primary
    svc = await make_service(disable_script_cache=True)
    s = await _session(svc)
    await svc.append_event(s, msg("user", "x", 1))
    await svc.get_session(s.key)
    stats = await redis_target.command_stats()
    assert "eval" in stats
    assert "evalsha" not in stats


async def test_script_cache_flush_is_survived(make_service, redis_client) -> None:
    """After SCRIPT FLUSH the service reloads its scripts (NOSCRIPT fallback)."""
    svc = await make_service()
    s = await _session(svc)
    await svc.append_event(s, msg("user", "x", 1))
    await redis_client.script_flush()
    await svc.append_event(s, msg("user", "y", 2))
    got = await svc.get_session(s.key)
    assert len(got.events) == 2


async def test_append_events_batch_in_order(make_service) -> None:
    """append_events applies a batch in order in one call, with every delta."""
    svc = await make_service()
    s = await _session(svc)
    batch = [msg("user" if i % 2 == 0 else "assistant", "x", i,
                 state_delta={"seq": str(i).encode()}) for i in range(20)]
    receipts = await svc.append_events(s, batch)
    assert len(receipts) == 20
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == [e.id for e in batch]
    assert got.state["seq"] == b"19"


async def test_trim_conversations(make_service) -> None:
    """trim removes every event of the newest request(s); events without requestID survive."""
    svc = await make_service()
    s = await _session(svc)
    plan = ["r1", "r1", "", "r2", "r2", "r2", "r3"]
    for i, rq in enumerate(plan):
        await svc.append_event(s, msg("user", "x", i, request_id=rq))
    removed = await svc.trim_conversations(s.key)
    assert [e.id for e in removed] == ["e0006"]
    removed = await svc.trim_conversations(s.key, count=0)
    assert [e.id for e in removed] == ["e0003", "e0004", "e0005"]
    got = await svc.get_session(s.key)
    assert [e.id for e in got.events] == ["e0000", "e0001", "e0002"]
    assert await svc.trim_conversations(Key("app", "u", "unknown")) == []


async def test_trim_spans_batches(make_service) -> None:
    """A request with more than 100 events is removed whole (no batch cut-off)."""
    svc = await make_service(session_event_limit=0)
    s = await _session(svc)
    await svc.append_events(s, [msg("user", "x", i, request_id="old") for i in range(5)])
    await svc.append_events(s, [msg("user", "x", i, request_id="big") for i in range(5, 160)])
    removed = await svc.trim_conversations(s.key)
    assert len(removed) == 155
    got = await svc.get_session(s.key)
    assert len(got.events) == 5


async def test_wrong_type_meta_reports_and_writes_nothing(make_service, redis_client) -> None:
    """A meta key of the wrong Redis type: CorruptDataError, and no event key is created."""
    from sessionstreams.common.errors import CorruptDataError

    svc = await make_service()
    s = await _session(svc)
    await redis_client.delete(svc.keys.meta(s.key))
    await redis_client.hset(svc.keys.meta(s.key), "x", "y")
    with pytest.raises(CorruptDataError, match="wrong Redis type"):
        await svc.append_event(s, msg("user", "x", 1, state_delta={"k": b"v"}))
    assert await redis_client.exists(svc.keys.event_data(s.key)) == 0
    assert await redis_client.exists(svc.keys.applied(s.key)) == 0


async def test_corrupt_meta_json_reports_and_writes_nothing(make_service, redis_client) -> None:
    """A meta that is not JSON fails the append as CorruptDataError; nothing is written."""
    from sessionstreams.common.errors import CorruptDataError

    svc = await make_service()
    s = await _session(svc)
    await redis_client.set(svc.keys.meta(s.key), b"{oops")
    with pytest.raises(CorruptDataError, match="not a JSON object"):
        await svc.append_event(s, msg("user", "x", 1))
    assert await redis_client.exists(svc.keys.event_data(s.key)) == 0


@pytest.mark.parametrize("mode", [CompatMode.NONE, CompatMode.TRANSITION])
async def test_conditional_append_refuses_a_session_updated_later(
    make_service, redis_client, mode
) -> None:
    """append_event(unless_updated_after=t) writes nothing and raises SessionChangedError when
    the stored session was updated after t (both layouts); with a current t it appends."""
    svc = await make_service(compat_mode=mode)
    s = await _session(svc, "guarded")
    seen = s.updated_at
    later = GoTime.from_unix_ns(seen.unix_ns + 5_000_000_000)
    await svc.append_event(s, Event.message("user", "first"), updated_at=later)
    late = Event.message("user", "late", state_delta={"late": b"1"})
    with pytest.raises(SessionChangedError):
        await svc.append_event(s, late, unless_updated_after=seen)
    stored = await svc.get_session(s.key)
    assert [e.response.choices[0].message.content for e in stored.events] == ["first"]
    assert "late" not in stored.state
    assert late.id not in [e.id for e in s.events]  # the caller's session is untouched
    await svc.append_event(s, Event.message("user", "now"), unless_updated_after=later)
    stored = await svc.get_session(s.key)
    assert [e.response.choices[0].message.content for e in stored.events] == ["first", "now"]


async def test_conditional_append_needs_synchronous_mode(make_service) -> None:
    """unless_updated_after is refused in asynchronous mode (the write is applied later)."""
    svc = await make_service(enable_async_persist=True)
    s = await _session(svc, "async-guard")
    with pytest.raises(InvalidArgumentError, match="synchronous"):
        await svc.append_event(s, Event.message("user", "x"), unless_updated_after=s.updated_at)
