"""The OpenAI Agents SDK adapter (sessionstreams.producer.openai_agents) on a real redis-server.

The session is used directly through the SDK's ``Session`` protocol and by the SDK's
``Runner`` with a deterministic fake model (a tool call, then a text answer). Tests on the
``session`` fixture run in both persistence modes (``[sync]``, and ``[async]`` with a worker
process applying the streamed writes).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("agents")

from adapter_modes import PersistMode
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.memory import Session as SessionProtocol
from agents.memory import SessionSettings
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from sessionstreams.common.models import Event
from sessionstreams.producer.openai_agents import SessionStreamsSession


class FakeModel(Model):
    """Calls get_weather first; once the tool answered, replies with text."""

    async def get_response(self, system_instructions: Any, input: Any, *args: Any,
                           **kwargs: Any) -> ModelResponse:
        last = input[-1] if isinstance(input, list) else {}
        if isinstance(last, dict) and last.get("type") == "function_call_output":
            output: list[Any] = [ResponseOutputMessage(
                id="msg_1", type="message", role="assistant", status="completed",
                content=[ResponseOutputText(type="output_text", text="It is sunny.",
                                            annotations=[])])]
        else:
            output = [ResponseFunctionToolCall(
                id="fc_1", type="function_call", call_id="call_1", name="get_weather",
                arguments=json.dumps({"city": "Zurich"}), status="completed")]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


@function_tool
def get_weather(city: str) -> str:
    """Report the weather of a city."""
    return f"sunny in {city}"


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    """The SDK would try to export traces; nothing leaves this machine."""
    set_tracing_disabled(True)


@pytest.fixture
async def session(persist_mode: PersistMode) -> SessionStreamsSession:
    """The adapter on a fresh SessionService in sync or async persistence mode."""
    svc = await persist_mode.service(session_event_storage_limit=0)
    return SessionStreamsSession("conv-1", svc, app_name="agents", user_id="u1")


ITEMS: list[Any] = [
    {"role": "user", "content": "Weather?"},
    {"type": "function_call", "call_id": "c1", "name": "get_weather",
     "arguments": '{"city":"Zurich"}', "id": "fc_1", "status": "completed"},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {"type": "reasoning", "id": "rs_1", "summary": []},
    {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "It is sünny <b>.", "annotations": []}]},
]


async def test_implements_the_session_protocol(make_service) -> None:
    """The SDK's runtime-checkable Session protocol accepts the adapter."""
    session = SessionStreamsSession("conv-1", await make_service())
    assert isinstance(session, SessionProtocol)
    assert session.session_id == "conv-1"


async def test_items_round_trip_and_limits(session) -> None:
    """Items read back equal in order; limit returns the newest; empty reads are []."""
    assert await session.get_items() == []
    await session.add_items(ITEMS[:2])
    await session.add_items(ITEMS[2:])
    assert await session.get_items() == ITEMS
    assert await session.get_items(limit=2) == ITEMS[-2:]
    assert await session.get_items(limit=0) == []
    assert await session.get_items(limit=100) == ITEMS
    session.session_settings = SessionSettings(limit=1)
    assert await session.get_items() == ITEMS[-1:]


async def test_go_reader_sees_messages(session) -> None:
    """Each item is one stored event with a message a Go reader understands."""
    await session.add_items(ITEMS)
    stored = await session.service.get_session(session.key, exact_window=True)
    messages = [e.response.choices[0].message for e in stored.events]
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant", "assistant"]
    assert messages[0].content == "Weather?"
    assert messages[1].tool_calls[0].function.name == "get_weather"
    assert (messages[2].tool_id, messages[2].tool_name, messages[2].content) == (
        "c1", "get_weather", "sunny")
    assert not messages[3].content  # an empty reasoning item: stored, nothing to show
    assert messages[4].content == "It is sünny <b>."
    for e in stored.events:
        assert Event.from_json(e.to_json()) == e


async def test_pop_item_and_clear(session) -> None:
    """pop_item removes and returns the newest item; clear_session deletes everything."""
    assert await session.pop_item() is None
    await session.add_items(ITEMS)
    assert await session.pop_item() == ITEMS[-1]
    assert await session.pop_item() == ITEMS[-2]
    assert await session.get_items() == ITEMS[:-2]
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.service.get_session(session.key) is None
    await session.add_items(ITEMS[:1])  # a cleared conversation starts again
    assert await session.get_items() == ITEMS[:1]


async def test_cleared_by_another_process(session, persist_mode) -> None:
    """Adding after another client deleted the conversation re-creates it (in async mode too,
    where the workers would drop a write to the deleted session: add_items sees it gone)."""
    await session.add_items(ITEMS[:1])
    other = SessionStreamsSession("conv-1", await persist_mode.service(), app_name="agents",
                                  user_id="u1")
    await other.clear_session()
    await session.add_items(ITEMS[1:2])
    assert await session.get_items() == ITEMS[1:2]
    await session.add_items(ITEMS[2:3])  # the re-created conversation goes on
    assert await session.get_items() == ITEMS[1:3]


async def test_cleared_while_items_in_flight(session, persist_mode) -> None:
    """Items added before another client's clear are cleared with it. In async mode they are
    still in the stream when the clear happens (the worker is paused): the workers drop them,
    get_items then reads the cleared conversation without an error, and adding starts it
    again."""
    if persist_mode.worker:
        persist_mode.worker.pause()
    await session.add_items(ITEMS[:2])  # returns without the worker in async mode
    other = SessionStreamsSession("conv-1", await persist_mode.service(), app_name="agents",
                                  user_id="u1")
    await other.clear_session()
    if persist_mode.worker:
        persist_mode.worker.resume()
    assert await session.get_items() == []
    await session.add_items(ITEMS[2:3])
    assert await session.get_items() == ITEMS[2:3]


async def test_go_written_events_read_as_items(session) -> None:
    """Events stored without the item JSON (a Go writer) come back as items."""
    await session.add_items(ITEMS[:1])
    carrier = await session.service.get_session(session.key)
    await session.service.append_event(carrier, Event.message("assistant", "from Go"))
    assert (await session.get_items())[-1] == {"role": "assistant", "content": "from Go"}


async def test_runner_with_session(session) -> None:
    """Runner.run with the session stores the turn and feeds it back on the next turn."""
    agent = Agent(name="assistant", model=FakeModel(), tools=[get_weather])
    result = await Runner.run(agent, "Weather?", session=session)
    assert result.final_output == "It is sunny."
    items = await session.get_items()
    assert items[0] == {"content": "Weather?", "role": "user"}
    assert [i.get("type") for i in items[1:]] == [
        "function_call", "function_call_output", "message"]
    assert items[2]["output"] == "sunny in Zurich"
    result = await Runner.run(agent, "Again?", session=session)
    assert len(await session.get_items()) == 8


async def test_from_url_owns_its_service(redis_server, key_prefix) -> None:
    """from_url passes session fields to the session and the rest to Settings."""
    s = SessionStreamsSession.from_url("c", redis_server.url, key_prefix=key_prefix,
                                       app_name="a", user_id="b")
    await s.add_items(ITEMS[:1])
    assert s.key.app_name == "a"
    assert s.service.settings.key_prefix == key_prefix
    await s.close()
    with pytest.raises(Exception, match="closed"):
        await s.get_items()
