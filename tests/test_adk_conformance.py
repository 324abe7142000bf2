"""ADK's session-service contract, proved on our adapter and on ADK's own services alike.

Each test runs on ``SessionStreamsSessionService`` in both persistence modes (``[sync]``, and
``[async]`` with a worker process applying the streamed writes) and, where the behaviour is
theirs too, on ADK's reference services: ``[adk-memory]`` (InMemorySessionService),
``[adk-database]`` (DatabaseSessionService on SQLite through aiosqlite) and ``[adk-sqlite]``
(SqliteSessionService). A subset also runs on a Redis Cluster (``[sync-cluster]``,
``[async-cluster]``, slow). Where the reference services disagree among themselves, a test
names the ones it follows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.adk")

from adapter_modes import OurBackend, against
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError as AdkNotFound
from google.adk.events.event import Event as AdkEvent
from google.adk.events.event_actions import EventActions
from google.adk.sessions import DatabaseSessionService, InMemorySessionService, Session
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types

from sessionstreams.producer.adk import SessionStreamsSessionService

APP = "conformance"
MEMORY, DATABASE, SQLITE = "adk-memory", "adk-database", "adk-sqlite"
REFERENCES = (MEMORY, DATABASE, SQLITE)
SQL = (DATABASE, SQLITE)
BASE = 1_900_000_000.0  # event timestamps later than any clock reading of these tests


@dataclass
class Impl:
    """One session service under test, and how to get another one on the same storage."""

    name: str
    service: BaseSessionService
    other: Callable[[], Awaitable[BaseSessionService]]  # a second instance (another process)

    @property
    def ours(self) -> bool:
        return isinstance(self.service, SessionStreamsSessionService)


@pytest.fixture
async def impl(
    request: pytest.FixtureRequest, tmp_path: Path, our_backend: Callable[..., OurBackend]
) -> AsyncIterator[Impl]:
    """The service named by the test's parameter (see :func:`against`)."""
    name: str = request.param
    built: list[Any] = []

    async def reference() -> BaseSessionService:
        service: BaseSessionService
        if name == DATABASE:
            service = DatabaseSessionService(f"sqlite+aiosqlite:///{tmp_path / 'adk.db'}")
            await service.prepare_tables()  # two instances must not race to make the schema
        else:
            service = SqliteSessionService(str(tmp_path / "adk-sqlite.db"))
        built.append(service)
        return service

    if name == MEMORY:
        yield Impl(name, InMemorySessionService(), missing)
    elif name in REFERENCES:
        yield Impl(name, await reference(), reference)
        for service in built:
            await service.close()
    else:
        backend = our_backend(name, session_event_storage_limit=0,
                              enable_user_session_index=True)

        async def ours() -> BaseSessionService:
            return SessionStreamsSessionService(backend.service())

        yield Impl(name, await ours(), ours)


async def missing() -> BaseSessionService:
    raise AssertionError("the in-memory service has no second instance on its storage")


def text_event(text: str, *, ts: float | None = None, author: str = "assistant",
               **kwargs: Any) -> AdkEvent:
    role = "user" if author == "user" else "model"
    if ts is not None:
        kwargs["timestamp"] = ts
    return AdkEvent(invocation_id="inv-1", author=author,
                    content=types.Content(role=role, parts=[types.Part(text=text)]), **kwargs)


def texts(session: Session | None) -> list[str]:
    assert session is not None
    return [e.content.parts[0].text for e in session.events]


async def get(svc: BaseSessionService, session: Session, **config: Any) -> Session:
    got = await svc.get_session(app_name=session.app_name, user_id=session.user_id,
                                session_id=session.id,
                                config=GetSessionConfig(**config) if config else None)
    assert got is not None
    return got


# -- create ----------------------------------------------------------------------------------
@against(MEMORY, SQLITE)
async def test_create_without_id_generates_one(impl: Impl) -> None:
    """create_session without an id (or a blank one) makes a new id each time, no events
    (ADK's database service stores a blank id as given)."""
    a = await impl.service.create_session(app_name=APP, user_id="u")
    b = await impl.service.create_session(app_name=APP, user_id="u", session_id=" ")
    assert a.id
    assert b.id
    assert a.id != b.id
    assert a.events == b.events == []


@against(*REFERENCES, cluster=True)
async def test_create_returns_merged_state_without_temp(impl: Impl) -> None:
    """The created session shows session, app: and user: state (temp: dropped), as
    get_session does; get_user_state shows the user: part unprefixed."""
    state = {"s": 1, "app:a": {"x": [1, 2]}, "user:u": "v", "temp:t": "gone"}
    created = await impl.service.create_session(app_name=APP, user_id="u", state=state)
    expected = {"s": 1, "app:a": {"x": [1, 2]}, "user:u": "v"}
    assert created.state == expected
    got = await get(impl.service, created)
    assert got.state == expected
    assert got.last_update_time == created.last_update_time
    assert await impl.service.get_user_state(app_name=APP, user_id="u") == {"u": "v"}


@against(*REFERENCES)
async def test_create_with_a_taken_id_raises_already_exists(impl: Impl) -> None:
    """A second create with an existing id raises AlreadyExistsError and changes nothing."""
    await impl.service.create_session(app_name=APP, user_id="u", session_id="s1",
                                      state={"who": "first"})
    with pytest.raises(AlreadyExistsError):
        await impl.service.create_session(app_name=APP, user_id="u", session_id="s1",
                                          state={"who": "second", "user:x": 1})
    got = await impl.service.get_session(app_name=APP, user_id="u", session_id="s1")
    assert got is not None
    assert got.state == {"who": "first"}


def one_winner(results: list[Any]) -> Session:
    """Exactly one create succeeded and the others raised AlreadyExistsError."""
    won = [r for r in results if isinstance(r, Session)]
    lost = [r for r in results if not isinstance(r, Session)]
    assert len(won) == 1, results
    assert lost, results
    assert all(isinstance(r, AlreadyExistsError) for r in lost), results
    return won[0]


@against(*REFERENCES, cluster=True)
async def test_concurrent_creates_of_one_id_one_wins(impl: Impl) -> None:
    """Concurrent creates of one id: exactly one wins, the others raise AlreadyExistsError,
    and the stored state is the winner's."""
    results = await asyncio.gather(*(
        impl.service.create_session(app_name=APP, user_id="u", session_id="race",
                                    state={"who": who})
        for who in ("a", "b", "c")
    ), return_exceptions=True)
    winner = one_winner(results)
    got = await get(impl.service, winner)
    assert got.state == winner.state


@against(*SQL, cluster=True)
async def test_creates_from_two_services_one_wins(impl: Impl) -> None:
    """Two service instances on one store (two processes) creating one id at once: exactly
    one wins, the other raises AlreadyExistsError, the winner's state is stored."""
    services = [impl.service, await impl.other()]
    results = await asyncio.gather(*(
        svc.create_session(app_name=APP, user_id="u", session_id="race", state={"who": i})
        for i, svc in enumerate(services)
    ), return_exceptions=True)
    winner = one_winner(results)
    for svc in services:
        assert (await get(svc, winner)).state == winner.state


# -- get -------------------------------------------------------------------------------------
@against(*REFERENCES)
async def test_get_missing_session_returns_none(impl: Impl) -> None:
    """get_session of an unknown id, or of a known id under another user or app, is None."""
    created = await impl.service.create_session(app_name=APP, user_id="u")
    for app, user, sid in ((APP, "u", "nope"), (APP, "other", created.id),
                           ("other-app", "u", created.id)):
        assert await impl.service.get_session(app_name=app, user_id=user, session_id=sid) is None


@against(*REFERENCES, cluster=True)
async def test_get_session_config_windows(impl: Impl) -> None:
    """GetSessionConfig: num_recent_events newest N (0 none), after_timestamp inclusive,
    both combined, no config everything; no user message is prepended."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    events = [text_event("question", author="user", ts=BASE)]
    events += [text_event(f"answer {i}", ts=BASE + i) for i in range(1, 6)]
    for event in events:
        await impl.service.append_event(session, event)

    async def window(**config: Any) -> list[AdkEvent]:
        return (await get(impl.service, session, **config)).events

    assert await window() == events
    assert await window(num_recent_events=2) == events[-2:]
    assert await window(num_recent_events=0) == []
    assert await window(num_recent_events=100) == events
    assert await window(after_timestamp=BASE + 3) == events[3:]
    assert await window(after_timestamp=BASE + 3, num_recent_events=1) == events[-1:]
    assert await window(after_timestamp=BASE + 10) == []


@against(MEMORY, SQLITE)
async def test_equal_timestamps_keep_append_order(impl: Impl) -> None:
    """Events with one timestamp read back in append order, and the window takes the last
    appended (ADK's database service orders such ties by event id instead)."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    events = [text_event(f"m{i}", ts=BASE) for i in range(6)]
    for event in events:
        await impl.service.append_event(session, event)
    assert texts(await get(impl.service, session)) == [f"m{i}" for i in range(6)]
    assert texts(await get(impl.service, session, num_recent_events=2)) == ["m4", "m5"]


@against(*SQL)
async def test_back_dated_event_reads_in_time_order(impl: Impl) -> None:
    """An event appended with an earlier timestamp than the one before it is read back in
    timestamp order (the in-memory service keeps append order)."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    await impl.service.append_event(session, text_event("later", ts=BASE + 2))
    await impl.service.append_event(session, text_event("earlier", ts=BASE + 1))
    assert texts(await get(impl.service, session)) == ["earlier", "later"]
    assert texts(await get(impl.service, session, num_recent_events=1)) == ["later"]


@against(*REFERENCES)
async def test_event_round_trips_field_for_field(impl: Impl) -> None:
    """An event with many fields set reads back equal to the appended one."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    event = AdkEvent(
        invocation_id="inv-9", author="planner", branch="root.planner", timestamp=BASE,
        content=types.Content(role="model", parts=[
            types.Part(text="thinking", thought=True),
            types.Part(text="Let me check."),
            types.Part(function_call=types.FunctionCall(id="c1", name="look", args={"q": 1})),
        ]),
        actions=EventActions(state_delta={"k": [1, {"a": None}]}, transfer_to_agent="helper",
                             artifact_delta={"file.txt": 2}, skip_summarization=True),
        long_running_tool_ids={"c1"}, custom_metadata={"trace": "t-1"},
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=3, candidates_token_count=4, total_token_count=7),
        finish_reason=types.FinishReason.STOP, model_version="fake-1", turn_complete=True,
    )
    await impl.service.append_event(session, event)
    assert (await get(impl.service, session)).events == [event]


# -- append ----------------------------------------------------------------------------------
@against(*REFERENCES)
async def test_append_sets_last_update_time_to_the_event_time(impl: Impl) -> None:
    """After append_event the session's last_update_time is the event's timestamp, also for
    an older (replayed) event, and appending goes on through the same object; a stored
    session read afterwards shows the latest event's time."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    first = text_event("first", ts=session.last_update_time + 1)
    await impl.service.append_event(session, first)
    assert session.last_update_time == first.timestamp
    assert (await get(impl.service, session)).last_update_time == first.timestamp
    replayed = text_event("replayed", ts=session.last_update_time - 3600)
    await impl.service.append_event(session, replayed)
    assert session.last_update_time == replayed.timestamp
    last = text_event("last", ts=first.timestamp + 1)
    await impl.service.append_event(session, last)
    assert session.last_update_time == last.timestamp
    reloaded = await get(impl.service, session)
    assert reloaded.last_update_time == last.timestamp
    assert sorted(texts(reloaded)) == ["first", "last", "replayed"]
    await impl.service.append_event(reloaded, text_event("after reload", ts=BASE))
    assert reloaded.last_update_time == BASE


@against(*REFERENCES)
async def test_append_returns_the_event_and_updates_the_session(impl: Impl) -> None:
    """append_event returns the event, adds it to session.events and applies its delta."""
    session = await impl.service.create_session(app_name=APP, user_id="u", state={"a": 1})
    event = text_event("hi", actions=EventActions(state_delta={"a": 2, "b": [3]}))
    returned = await impl.service.append_event(session, event)
    assert returned is event
    assert session.events == [event]
    assert session.state == {"a": 2, "b": [3]}
    assert (await get(impl.service, session)).state == {"a": 2, "b": [3]}


@against(MEMORY)
async def test_redelivered_event_is_appended_once(impl: Impl) -> None:
    """Appending the same event again (a retried call) changes nothing (ADK's SQL services
    raise their database's integrity error instead)."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    event = text_event("once", actions=EventActions(state_delta={"n": 1}))
    await impl.service.append_event(session, event)
    assert await impl.service.append_event(session, event) is event
    assert session.events == [event]
    assert (await get(impl.service, session)).events == [event]


@against()
async def test_an_event_id_is_stored_once(impl: Impl) -> None:
    """A second, different event with a stored event's id is not stored: the first stays
    (a difference: ADK's SQL services raise an integrity error, its in-memory service keeps
    both)."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    await impl.service.append_event(session, text_event("one", id="same"))
    await impl.service.append_event(session, text_event("two", id="same"))
    assert texts(await get(impl.service, session)) == ["one"]


@against(*REFERENCES)
async def test_partial_event_changes_nothing(impl: Impl) -> None:
    """A partial (streaming) event is returned as is and changes nothing, in memory or in
    storage."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    event = text_event("chunk", partial=True, actions=EventActions(state_delta={"x": 1}))
    assert await impl.service.append_event(session, event) is event
    assert session.events == []
    assert "x" not in session.state
    got = await get(impl.service, session)
    assert got.events == []
    assert got.state == {}


@against(*REFERENCES)
async def test_temp_state_lives_on_the_session_object_only(impl: Impl) -> None:
    """A temp: key reaches the in-memory session, is trimmed from the event and is stored
    nowhere."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    event = text_event("x", actions=EventActions(state_delta={"temp:t": 1, "s": 2}))
    returned = await impl.service.append_event(session, event)
    assert returned.actions.state_delta == {"s": 2}
    assert session.state == {"temp:t": 1, "s": 2}
    got = await get(impl.service, session)
    assert got.state == {"s": 2}
    assert got.events[0].actions.state_delta == {"s": 2}


@against(*REFERENCES, cluster=True)
async def test_app_and_user_state_are_shared_at_once(impl: Impl) -> None:
    """app: and user: state written through one session shows at once in another session's
    get_session, in get_user_state and in list_sessions (same user only for user:); in every
    scope a dict value replaces the stored one and a None value is stored as None."""
    svc = impl.service
    a = await svc.create_session(app_name=APP, user_id="u1")
    b = await svc.create_session(app_name=APP, user_id="u1")
    c = await svc.create_session(app_name=APP, user_id="u2")
    await svc.append_event(a, text_event("x", actions=EventActions(state_delta={
        "app:flag": {"on": True}, "user:pref": {"lang": "de"}, "user:gone": None,
        "s": {"x": 1}})))
    assert (await get(svc, b)).state == {
        "app:flag": {"on": True}, "user:pref": {"lang": "de"}, "user:gone": None}
    assert (await get(svc, c)).state == {"app:flag": {"on": True}}
    assert await svc.get_user_state(app_name=APP, user_id="u1") == {
        "pref": {"lang": "de"}, "gone": None}
    assert await svc.get_user_state(app_name=APP, user_id="u2") == {}
    listed = (await svc.list_sessions(app_name=APP, user_id="u1")).sessions
    assert {s.id: s.state.get("user:pref") for s in listed} == {
        a.id: {"lang": "de"}, b.id: {"lang": "de"}}
    await svc.append_event(a, text_event("y", actions=EventActions(state_delta={
        "user:pref": {"tz": "UTC"}, "app:flag": None, "s": {"y": 2}, "n": None})))
    assert await svc.get_user_state(app_name=APP, user_id="u1") == {
        "pref": {"tz": "UTC"}, "gone": None}
    assert (await get(svc, c)).state == {"app:flag": None}
    assert (await get(svc, a)).state == {
        "app:flag": None, "user:pref": {"tz": "UTC"}, "user:gone": None, "s": {"y": 2},
        "n": None}


@against(*SQL)
async def test_state_values_are_stored_as_json(impl: Impl) -> None:
    """State values read back as their JSON: nested values as they were, a datetime as its
    ISO text (as ADK's SQL services store them)."""
    session = await impl.service.create_session(app_name=APP, user_id="u")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    delta = {"n": {"a": [1, 2.5, None, True, "ü"]}, "big": 2**60, "when": when}
    await impl.service.append_event(session, text_event("x", actions=EventActions(
        state_delta=delta)))
    got = await get(impl.service, session)
    assert got.state == {"n": {"a": [1, 2.5, None, True, "ü"]}, "big": 2**60,
                         "when": "2026-01-02T03:04:05Z"}


@against(*REFERENCES)
async def test_append_to_a_missing_session_raises_not_found(impl: Impl) -> None:
    """Appending to a session never created, or deleted, raises ADK's SessionNotFoundError."""
    never = Session(id="never", app_name=APP, user_id="u", last_update_time=0.0)
    with pytest.raises(AdkNotFound):
        await impl.service.append_event(never, text_event("x"))
    session = await impl.service.create_session(app_name=APP, user_id="u")
    await impl.service.delete_session(app_name=APP, user_id="u", session_id=session.id)
    with pytest.raises(AdkNotFound):
        await impl.service.append_event(session, text_event("y"))


@against(*SQL, cluster=True)
async def test_stale_session_object_is_refused(impl: Impl) -> None:
    """Appending through a session object loaded before another object's append raises
    StaleSessionError and writes nothing."""
    created = await impl.service.create_session(app_name=APP, user_id="u")
    one, two = await get(impl.service, created), await get(impl.service, created)
    await impl.service.append_event(one, text_event("first"))
    with pytest.raises(StaleSessionError):
        await impl.service.append_event(two, text_event("late", actions=EventActions(
            state_delta={"late": 1})))
    got = await get(impl.service, created)
    assert texts(got) == ["first"]
    assert "late" not in got.state


@against(*SQL)
async def test_stale_after_another_process_appended(impl: Impl) -> None:
    """A session object is stale once another process's append (applied) changed the
    session; reloading it makes it current again."""
    mine = await impl.service.create_session(app_name=APP, user_id="u")
    other = await impl.other()
    theirs = await get(other, mine)
    await other.append_event(theirs, text_event("theirs"))
    await other.flush()  # async mode: applied by the workers
    with pytest.raises(StaleSessionError):
        await impl.service.append_event(mine, text_event("mine"))
    reloaded = await get(impl.service, mine)
    await impl.service.append_event(reloaded, text_event("mine"))
    await impl.service.flush()
    assert texts(await get(other, mine)) == ["theirs", "mine"]


# -- list, delete, user state ----------------------------------------------------------------
@against(*REFERENCES, cluster=True)
async def test_list_sessions_oldest_update_first_without_events(impl: Impl) -> None:
    """list_sessions: one user's or (user_id=None) every user's sessions, oldest update
    first, without events, with merged state; an unknown app or user lists nothing."""
    svc = impl.service
    a = await svc.create_session(app_name=APP, user_id="u1", state={"user:x": 1})
    b = await svc.create_session(app_name=APP, user_id="u1")
    c = await svc.create_session(app_name=APP, user_id="u2", state={"app:y": 2})
    await svc.append_event(a, text_event("touch"))
    mine = (await svc.list_sessions(app_name=APP, user_id="u1")).sessions
    assert [s.id for s in mine] == [b.id, a.id]
    assert all(s.events == [] and s.state == {"user:x": 1, "app:y": 2} for s in mine)
    everyone = (await svc.list_sessions(app_name=APP)).sessions
    assert {s.id for s in everyone} == {a.id, b.id, c.id}
    order = [(s.last_update_time, s.user_id, s.id) for s in everyone]
    assert order == sorted(order)
    assert (await svc.list_sessions(app_name="no-app")).sessions == []
    assert (await svc.list_sessions(app_name=APP, user_id="nobody")).sessions == []


@against(*REFERENCES)
async def test_delete_session(impl: Impl) -> None:
    """delete_session removes the session and its events (a missing one is fine); user
    state stays; the id can be created again, empty."""
    svc = impl.service
    await svc.delete_session(app_name=APP, user_id="u", session_id="never-existed")
    session = await svc.create_session(app_name=APP, user_id="u", session_id="s",
                                       state={"k": 1, "user:keep": True})
    await svc.append_event(session, text_event("x"))
    await svc.delete_session(app_name=APP, user_id="u", session_id="s")
    assert await svc.get_session(app_name=APP, user_id="u", session_id="s") is None
    assert (await svc.list_sessions(app_name=APP, user_id="u")).sessions == []
    assert await svc.get_user_state(app_name=APP, user_id="u") == {"keep": True}
    again = await svc.create_session(app_name=APP, user_id="u", session_id="s")
    got = await get(svc, again)
    assert got.events == []
    assert got.state == {"user:keep": True}


@against(*REFERENCES)
async def test_get_user_state_of_an_unknown_user_is_empty(impl: Impl) -> None:
    """get_user_state of a user without state is {}."""
    assert await impl.service.get_user_state(app_name=APP, user_id="nobody") == {}
