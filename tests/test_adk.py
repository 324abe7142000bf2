"""The Google ADK adapter (sessionstreams.producer.adk) driven through ADK itself, on a real
redis-server.

An ADK ``Runner`` with an ``LlmAgent`` whose model is a deterministic fake (a tool call, then a
text answer) writes the session; what ADK reads back must equal what it appended, state scopes
follow ADK's rules, and a Go reader sees the conversation as chat messages. Tests on the
``adk`` fixture run in both persistence modes (``[sync]``, and ``[async]`` with a worker
process applying the streamed writes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest

pytest.importorskip("google.adk")

from adapter_modes import PersistMode
from google.adk.agents import LlmAgent
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError as AdkNotFound
from google.adk.events.event import Event as AdkEvent
from google.adk.events.event_actions import EventActions
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.tools.tool_context import ToolContext
from google.genai import types

from sessionstreams.common.errors import ConfigError
from sessionstreams.common.models import Event, Key
from sessionstreams.common.settings import CompatMode
from sessionstreams.producer import SessionService
from sessionstreams.producer.adk import SessionStreamsSessionService

APP, USER = "weather", "u1"


class FakeLlm(BaseLlm):
    """First turn: call get_weather; after the tool answered: say it is sunny."""

    model: str = "fake-llm"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1]
        if any(p.function_response for p in last.parts or []):
            part = types.Part(text="It is sunny in Zurich.")
        else:
            part = types.Part(function_call=types.FunctionCall(
                id="call-1", name="get_weather", args={"city": "Zurich"}))
        yield LlmResponse(content=types.Content(role="model", parts=[part]))


def get_weather(city: str, tool_context: ToolContext) -> dict[str, Any]:
    """Report the weather of a city."""
    tool_context.state["user:last_city"] = city
    tool_context.state["app:calls"] = 1
    tool_context.state["temp:scratch"] = "not persisted"
    return {"city": city, "weather": "sunny"}


@pytest.fixture
async def adk(persist_mode: PersistMode) -> SessionStreamsSessionService:
    """The adapter on a fresh SessionService (every event kept, user index on), in sync or
    async persistence mode."""
    svc = await persist_mode.service(session_event_storage_limit=0,
                                     enable_user_session_index=True)
    return SessionStreamsSessionService(svc)


def user_message(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


async def run_turn(runner: Runner, session_id: str, text: str) -> list[AdkEvent]:
    return [
        e async for e in runner.run_async(
            user_id=USER, session_id=session_id, new_message=user_message(text))
    ]


def text_event(text: str, author: str = "assistant", **kwargs: Any) -> AdkEvent:
    role = "user" if author == "user" else "model"
    return AdkEvent(invocation_id="inv-1", author=author,
                    content=types.Content(role=role, parts=[types.Part(text=text)]), **kwargs)


async def test_is_a_base_session_service() -> None:
    """The adapter is an ADK BaseSessionService with nothing left abstract."""
    assert issubclass(SessionStreamsSessionService, BaseSessionService)
    assert not getattr(SessionStreamsSessionService, "__abstractmethods__", None)


async def test_runner_round_trip(adk) -> None:
    """Events a Runner appended read back equal; state follows app:/user:/temp: rules."""
    agent = LlmAgent(name="assistant", model=FakeLlm(), tools=[get_weather], output_key="answer")
    runner = Runner(app_name=APP, agent=agent, session_service=adk)
    session = await adk.create_session(app_name=APP, user_id=USER, state={"lang": "de"})
    produced = await run_turn(runner, session.id, "Weather in Zurich?")
    assert [e.content.parts[0].text for e in produced if e.content.parts[0].text] == [
        "It is sunny in Zurich."]

    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    assert stored is not None
    assert stored.events[0].author == "user"
    assert stored.events[0].content == user_message("Weather in Zurich?")
    assert stored.events[1:] == produced
    assert stored.state == {
        "lang": "de", "answer": "It is sunny in Zurich.",
        "user:last_city": "Zurich", "app:calls": 1,
    }
    assert await adk.get_user_state(app_name=APP, user_id=USER) == {"last_city": "Zurich"}

    # A second turn reloads the session and appends after the first (no stale error).
    second = await run_turn(runner, session.id, "And tomorrow?")
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    assert stored.events[len(produced) + 2:] == second
    assert len(stored.events) == 2 * (len(produced) + 1)


async def test_go_reader_sees_chat_messages(adk) -> None:
    """Stored events carry roles, tool calls, tool results, author, ids and JSON deltas."""
    agent = LlmAgent(name="assistant", model=FakeLlm(), tools=[get_weather], output_key="answer")
    runner = Runner(app_name=APP, agent=agent, session_service=adk)
    session = await adk.create_session(app_name=APP, user_id=USER)
    produced = await run_turn(runner, session.id, "Weather?")
    ours = await adk.service.get_session(Key(APP, USER, session.id), exact_window=True)
    messages = [e.response.choices[0].message for e in ours.events]
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[0].content == "Weather?"
    call = messages[1].tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call-1", "get_weather", '{"city":"Zurich"}')
    assert (messages[2].tool_id, messages[2].tool_name) == ("call-1", "get_weather")
    assert messages[2].content == '{"city":"Zurich","weather":"sunny"}'
    assert messages[3].content == "It is sunny in Zurich."
    first = produced[0]
    event = ours.events[1]
    assert (event.author, event.invocation_id, event.request_id) == (
        "assistant", first.invocation_id, first.invocation_id)
    assert event.timestamp.unix_ns == round(first.timestamp * 1e9)
    assert ours.events[2].state_delta == {"user:last_city": b'"Zurich"', "app:calls": b"1"}
    assert ours.events[3].state_delta == {"answer": b'"It is sunny in Zurich."'}
    for e in ours.events:  # round trip through the Go JSON
        assert Event.from_json(e.to_json()) == e


async def test_create_with_scoped_json_state(adk) -> None:
    """create_session splits app:/user:/temp: and stores JSON values as their JSON bytes."""
    state = {
        "k": {"nested": [1, 2.5, None, True]}, "app:theme": "dark", "user:name": "Ann",
        "temp:t": 1,
    }
    session = await adk.create_session(app_name=APP, user_id=USER, state=state,
                                       session_id=" s1 ")
    assert session.id == "s1"
    assert session.events == []
    assert session.state["k"] == {"nested": [1, 2.5, None, True]}
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id="s1")
    assert stored.state == {"k": {"nested": [1, 2.5, None, True]}, "app:theme": "dark",
                            "user:name": "Ann"}
    assert stored.last_update_time == session.last_update_time
    assert await adk.service.list_app_states(APP) == {"theme": b'"dark"'}
    with pytest.raises(AlreadyExistsError):
        await adk.create_session(app_name=APP, user_id=USER, session_id="s1")


async def test_event_delta_scopes_and_temp(adk) -> None:
    """A delta's temp: key reaches the in-memory session only; app:/user: go to their scope."""
    session = await adk.create_session(app_name=APP, user_id=USER)
    event = text_event("hi", actions=EventActions(state_delta={
        "s": 1, "app:a": [1], "user:u": {"x": "y"}, "temp:t": "mem"}))
    returned = await adk.append_event(session, event)
    assert "temp:t" not in returned.actions.state_delta
    assert session.state["temp:t"] == "mem"
    assert session.events == [returned]
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    assert stored.state == {"s": 1, "app:a": [1], "user:u": {"x": "y"}}
    assert stored.events == [returned]


async def test_partial_event_is_skipped(adk) -> None:
    """A partial (streaming) event changes nothing, in memory or in storage."""
    session = await adk.create_session(app_name=APP, user_id=USER)
    event = text_event("chunk", partial=True, actions=EventActions(state_delta={"x": 1}))
    assert await adk.append_event(session, event) is event
    assert session.events == []
    assert "x" not in session.state
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    assert stored.events == []
    assert stored.state == {}


async def test_get_session_config_is_exact(adk) -> None:
    """num_recent_events and after_timestamp select exactly ADK's window, no Go filtering."""
    session = await adk.create_session(app_name=APP, user_id=USER)
    base = 1_800_000_000.0
    events = [text_event("question", author="user", timestamp=base)]
    events += [text_event(f"answer {i}", timestamp=base + i) for i in range(1, 6)]
    for e in events:
        await adk.append_event(session, e)

    async def window(**config: Any) -> list[AdkEvent]:
        got = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id,
                                    config=GetSessionConfig(**config))
        return got.events

    assert await window(num_recent_events=2) == events[-2:]  # no user message prepended
    assert await window(num_recent_events=0) == []
    assert await window(num_recent_events=100) == events
    assert await window(after_timestamp=base + 3) == events[3:]
    assert await window(after_timestamp=base + 3, num_recent_events=1) == events[-1:]
    assert await window() == events


async def test_content_less_and_parallel_tool_events(adk) -> None:
    """A state-only event and a two-response tool event are stored and read back equal."""
    session = await adk.create_session(app_name=APP, user_id=USER)
    state_only = AdkEvent(invocation_id="i", author="assistant",
                          actions=EventActions(state_delta={"done": True}, escalate=True))
    responses = AdkEvent(invocation_id="i", author="assistant", branch="root.sub",
                         content=types.Content(role="user", parts=[
                             types.Part(function_response=types.FunctionResponse(
                                 id=f"c{i}", name="tool", response={"n": i}))
                             for i in range(2)]))
    await adk.append_event(session, state_only)
    await adk.append_event(session, responses)
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    assert stored.events == [state_only, responses]
    ours = await adk.service.get_session(Key(APP, USER, session.id), exact_window=True)
    placeholder = ours.events[0].response.choices[0]
    assert placeholder.message.role == "assistant"
    assert not placeholder.message.content
    tool_choices = ours.events[1].response.choices
    assert [(c.message.role, c.message.tool_id) for c in tool_choices] == [
        ("tool", "c0"), ("tool", "c1")]
    assert ours.events[1].branch == "root.sub"


async def test_stale_session_and_missing_session(adk) -> None:
    """Appending through an outdated session object raises StaleSessionError, a deleted
    session SessionNotFoundError; nothing is written."""
    created = await adk.create_session(app_name=APP, user_id=USER)
    one = await adk.get_session(app_name=APP, user_id=USER, session_id=created.id)
    two = await adk.get_session(app_name=APP, user_id=USER, session_id=created.id)
    await adk.append_event(one, text_event("first"))
    await adk.append_event(one, text_event("second"))  # the writer itself stays current
    with pytest.raises(StaleSessionError):
        await adk.append_event(two, text_event("late", actions=EventActions(
            state_delta={"late": 1})))
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=created.id)
    assert [e.content.parts[0].text for e in stored.events] == ["first", "second"]
    assert "late" not in stored.state
    await adk.delete_session(app_name=APP, user_id=USER, session_id=created.id)
    with pytest.raises(AdkNotFound):
        await adk.append_event(one, text_event("gone"))


async def test_stale_append_leaves_the_session_and_event_as_they_were(adk) -> None:
    """A refused (stale) append changes neither the session object (no temp: state applied)
    nor the event's state delta."""
    created = await adk.create_session(app_name=APP, user_id=USER)
    one = await adk.get_session(app_name=APP, user_id=USER, session_id=created.id)
    two = await adk.get_session(app_name=APP, user_id=USER, session_id=created.id)
    await adk.append_event(one, text_event("first"))
    late = text_event("late", actions=EventActions(state_delta={"temp:t": 1, "k": 2}))
    with pytest.raises(StaleSessionError):
        await adk.append_event(two, late)
    assert two.state == {}
    assert late.actions.state_delta == {"temp:t": 1, "k": 2}


async def test_sync_append_checks_staleness_in_the_write_script(make_service) -> None:
    """In synchronous mode an append through a session this adapter returned is one script
    (the stale check inside it), not a read of the session followed by the write."""
    svc = await make_service(compat_mode=CompatMode.NONE)
    adk = SessionStreamsSessionService(svc)
    session = await adk.create_session(app_name=APP, user_id=USER)
    client = svc.store.client
    await client.config_resetstat()
    await adk.append_event(session, text_event("one"))
    stats = await client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1
    assert "cmdstat_zrange" not in stats  # no load script (it reads the window by rank)
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    assert [e.content.parts[0].text for e in stored.events] == ["one"]


async def test_session_deleted_by_another_process(adk, persist_mode) -> None:
    """A session another process deleted: appending raises SessionNotFoundError in both modes.
    An append still in flight when the delete happened (async mode, the worker paused) is
    dropped by the workers; that surfaces when it is awaited: the next get_session raises
    SessionNotFoundError, later ones return None. In sync mode it was stored, then deleted."""
    session = await adk.create_session(app_name=APP, user_id=USER)
    if persist_mode.worker:
        persist_mode.worker.pause()
    await adk.append_event(session, text_event("first"))  # returns at once in async mode
    other = await persist_mode.service()
    await other.delete_session(Key(APP, USER, session.id))
    with pytest.raises(AdkNotFound):
        await adk.append_event(session, text_event("second"))
    if persist_mode.worker:
        persist_mode.worker.resume()
        with pytest.raises(AdkNotFound, match="dropped"):
            await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    assert await adk.get_session(app_name=APP, user_id=USER, session_id=session.id) is None


@pytest.mark.slow
async def test_async_appends_do_not_wait_for_the_worker(pipeline_settings, start_worker) -> None:
    """In async mode append_event does not wait for the previous append to be applied: with
    the worker paused, appends return, and the stale check still counts this process's own
    appends (another session object loaded before them is stale). Once the worker runs again,
    get_session reads everything back (read-your-writes)."""
    settings = pipeline_settings(session_event_storage_limit=0, read_your_writes_wait_s=20)
    worker = start_worker(settings)
    adk = SessionStreamsSessionService(settings=settings)
    try:
        session = await adk.create_session(app_name=APP, user_id=USER)
        loaded = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
        worker.pause()
        events = [text_event(f"m{i}", timestamp=1_800_000_000.0 + i) for i in range(5)]
        started = time.monotonic()
        for event in events:
            await adk.append_event(session, event)
        assert time.monotonic() - started < 5  # a wait for the worker would take 20 s
        stored = await adk.service.get_session(Key(APP, USER, session.id), wait_own_writes=False)
        assert stored is not None
        assert stored.events == []  # nothing applied yet
        with pytest.raises(StaleSessionError):
            await adk.append_event(loaded, text_event("late"))
        worker.resume()
        got = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
        assert got.events == events
        assert got.last_update_time == session.last_update_time
        await adk.append_event(got, text_event("after reload"))  # a reloaded object is current
    finally:
        worker.resume()
        await adk.close()


async def test_concurrent_appends_are_serialised(adk) -> None:
    """Concurrent appends through one session object all land, in order, without stale errors."""
    session = await adk.create_session(app_name=APP, user_id=USER)
    events = [text_event(f"m{i}", timestamp=1_800_000_000.0 + i) for i in range(20)]
    await asyncio.gather(*(adk.append_event(session, e) for e in events))
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    assert stored.events == events


async def test_list_and_delete_sessions(adk) -> None:
    """list_sessions for a user and (user_id=None) for the app, oldest first, no events."""
    a = await adk.create_session(app_name=APP, user_id="ua", state={"user:x": 1})
    b = await adk.create_session(app_name=APP, user_id="ua")
    c = await adk.create_session(app_name=APP, user_id="ub")
    await adk.append_event(a, text_event("touch"))
    mine = (await adk.list_sessions(app_name=APP, user_id="ua")).sessions
    assert [s.id for s in mine] == [b.id, a.id]
    assert all(s.events == [] and s.state["user:x"] == 1 for s in mine)
    everyone = (await adk.list_sessions(app_name=APP)).sessions
    assert {s.id for s in everyone} == {a.id, b.id, c.id}
    assert [s.last_update_time for s in everyone] == sorted(
        s.last_update_time for s in everyone)
    await adk.delete_session(app_name=APP, user_id="ua", session_id=a.id)
    assert await adk.get_session(app_name=APP, user_id="ua", session_id=a.id) is None
    assert [s.id for s in (await adk.list_sessions(app_name=APP, user_id="ua")).sessions] == [
        b.id]
    await adk.delete_session(app_name=APP, user_id="ua", session_id="never-existed")


async def test_events_written_by_go_are_readable(adk) -> None:
    """An event stored without ADK's JSON (a Go writer) reads back as an ADK event."""
    session = await adk.create_session(app_name=APP, user_id=USER)
    ours = await adk.service.get_session(Key(APP, USER, session.id))
    await adk.service.append_event(ours, Event.message(
        "user", "hello from Go", invocation_id="go-1", state_delta={"raw": b"not json"}))
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    (event,) = stored.events
    assert event.author == "user"
    assert event.invocation_id == "go-1"
    assert event.content == user_message("hello from Go")
    assert event.actions.state_delta == {"raw": "not json"}
    assert stored.state["raw"] == "not json"


async def test_from_url_owns_its_service(redis_server, key_prefix) -> None:
    """from_url builds a service that close() closes."""
    adk = SessionStreamsSessionService.from_url(redis_server.url, key_prefix=key_prefix)
    async with adk:
        session = await adk.create_session(app_name=APP, user_id=USER)
        assert await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    with pytest.raises(Exception, match="closed"):
        await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)


async def test_state_values_become_json(adk) -> None:
    """Values JSON cannot hold are stored as ADK's database services store them."""
    import datetime as dt

    session = await adk.create_session(app_name=APP, user_id=USER)
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    await adk.append_event(session, text_event("x", actions=EventActions(state_delta={
        "when": when, "raw": b"\x00\xff", "nan": float("nan"), "none": None})))
    stored = await adk.get_session(app_name=APP, user_id=USER, session_id=session.id)
    assert stored.state == {"when": "2026-01-02T03:04:05Z", "raw": "AP8=", "nan": None,
                            "none": None}


async def test_service_on_a_caller_client_refuses_another_loop(make_settings, redis_client):
    """An adapter on a SessionService built around the caller's client serves that client's
    event loop and refuses another loop with ConfigError (it cannot copy the client)."""
    service = SessionService(make_settings(), client=redis_client)
    adk = SessionStreamsSessionService(service)
    await adk.create_session(app_name=APP, user_id=USER, state={"user:x": 1})
    assert await adk.get_user_state(app_name=APP, user_id=USER) == {"x": 1}

    def in_another_loop() -> Any:
        return asyncio.run(adk.get_user_state(app_name=APP, user_id=USER))

    with pytest.raises(ConfigError, match="several event loops"):
        await asyncio.to_thread(in_another_loop)
    await service.close()


@pytest.mark.parametrize("mode", list(CompatMode), ids=lambda m: m.name.lower())
async def test_concurrent_creates_one_wins_in_every_compat_mode(make_service, mode) -> None:
    """In every compat mode (create script, or create lock with both layouts) concurrent
    creates of one id from two services let exactly one win; the others raise
    AlreadyExistsError and the winner's state is stored."""
    adks = [SessionStreamsSessionService(await make_service(compat_mode=mode)) for _ in "ab"]
    results = await asyncio.gather(*(
        adk.create_session(app_name=APP, user_id=USER, session_id="race", state={"who": i})
        for i, adk in enumerate(adks * 2)
    ), return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1
    assert all(isinstance(r, AlreadyExistsError) for r in results if r not in won)
    stored = await adks[1].get_session(app_name=APP, user_id=USER, session_id="race")
    assert stored.state == won[0].state


def test_redelivered_events_are_found_as_the_events_list_changes() -> None:
    """A redelivered event is recognised however the session's events list changed since the
    last append (grown by the caller, replaced, its last event swapped), and an event only
    sharing an id is not taken for it."""
    from google.adk.sessions import Session as AdkSession

    from sessionstreams.producer.adk import _EventIds

    index = _EventIds()
    session = AdkSession(id="s", app_name=APP, user_id=USER)
    first, second, other = text_event("one"), text_event("two"), text_event("other")
    assert not index.redelivered(session, first)
    session.events.append(first)
    assert index.redelivered(session, first)
    session.events.append(second)  # grown by the caller
    assert index.redelivered(session, second)
    assert not index.redelivered(session, text_event("two, new id"))
    assert not index.redelivered(session, second.model_copy(update={"author": "x"}))
    session.events[-1] = other  # last event swapped
    assert index.redelivered(session, other)
    assert not index.redelivered(session, second)
    session.events = [second]  # list replaced
    assert index.redelivered(session, second)
    assert not index.redelivered(session, first)


async def test_two_services_appending_at_once_one_is_stale(make_service) -> None:
    """Two services (as two processes) append at the same instant through session objects of
    one revision: the check inside the write script lets exactly one through."""
    first = SessionStreamsSessionService(await make_service(compat_mode=CompatMode.NONE))
    second = SessionStreamsSessionService(await make_service(compat_mode=CompatMode.NONE))
    created = await first.create_session(app_name=APP, user_id=USER)
    one = await first.get_session(app_name=APP, user_id=USER, session_id=created.id)
    two = await second.get_session(app_name=APP, user_id=USER, session_id=created.id)
    results = await asyncio.gather(first.append_event(one, text_event("a")),
                                   second.append_event(two, text_event("b")),
                                   return_exceptions=True)
    assert sum(isinstance(r, StaleSessionError) for r in results) == 1
    stored = await first.get_session(app_name=APP, user_id=USER, session_id=created.id)
    assert len(stored.events) == 1
