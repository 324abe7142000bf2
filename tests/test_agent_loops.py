"""Real agent loops of both frameworks on our store, with scripted models (no network).

An ADK ``Runner`` with an ``LlmAgent`` and an Agents SDK ``Runner`` with a handoff and a tool
each run several turns against our adapter and against the framework's own reference service
(ADK's InMemorySessionService, the SDK's SQLiteSession). The scripted model records every
request, so the tests prove that the model saw the same conversation on both stores, and that
the conversation read back from ours equals what the framework sees. The threaded tests run the
synchronous entry points (ADK ``Runner.run``, SDK ``Runner.run_sync``), which use an event
loop per thread. Every test runs in both persistence modes (``[async]`` with a worker).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.adk")
pytest.importorskip("agents")

from adapter_modes import OurBackend
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.memory import SQLiteSession
from agents.models.interface import Model
from agents.usage import Usage
from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner as AdkRunner
from google.adk.sessions import InMemorySessionService
from google.adk.sessions.base_session_service import BaseSessionService
from google.adk.tools.tool_context import ToolContext
from google.genai import types
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from pydantic import PrivateAttr

from sessionstreams.producer.adk import SessionStreamsSessionService
from sessionstreams.producer.openai_agents import SessionStreamsSession

APP, USER = "loops", "u1"
TURNS = ("Weather in Zurich?", "And in Bern?", "Thanks, and Geneva?")

modes = pytest.mark.parametrize(
    "mode", ["sync", pytest.param("async", marks=pytest.mark.slow)])


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    """The Agents SDK would try to export traces; nothing leaves this machine."""
    set_tracing_disabled(True)


# -- ADK -------------------------------------------------------------------------------------
class ScriptedLlm(BaseLlm):
    """Calls ``look_up`` with the city of the user's question, then answers from the tool's
    result; records the conversation of every request."""

    model: str = "scripted"
    _seen: list[list[types.Content]] = PrivateAttr(default_factory=list)
    _calls: Any = PrivateAttr(default_factory=lambda: itertools.count(1))

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self._seen.append([c.model_copy(deep=True) for c in llm_request.contents])
        last = llm_request.contents[-1]
        answer = next((p.function_response for p in last.parts or [] if p.function_response),
                       None)
        if answer is not None:
            part = types.Part(text=f"It is {answer.response['weather']} in "
                                   f"{answer.response['city']}.")
        else:
            city = (last.parts[0].text or "").rstrip("?").split()[-1]
            part = types.Part(function_call=types.FunctionCall(
                id=f"call-{next(self._calls)}", name="look_up", args={"city": city}))
        yield LlmResponse(content=types.Content(role="model", parts=[part]))


def look_up(city: str, tool_context: ToolContext) -> dict[str, Any]:
    """Report the weather of a city."""
    tool_context.state["user:last_city"] = city
    tool_context.state["app:lookups"] = tool_context.state.get("app:lookups", 0) + 1
    tool_context.state["temp:scratch"] = city
    return {"city": city, "weather": "sunny" if city != "Bern" else "foggy"}


def adk_runner(service: BaseSessionService) -> tuple[AdkRunner, ScriptedLlm]:
    model = ScriptedLlm()
    agent = LlmAgent(name="assistant", model=model, tools=[look_up], output_key="answer")
    return AdkRunner(app_name=APP, agent=agent, session_service=service), model


async def adk_conversation(service: BaseSessionService) -> tuple[Any, ScriptedLlm, list[Any]]:
    """Run every turn; returns the stored session, the model and the events the runner
    yielded."""
    runner, model = adk_runner(service)
    session = await service.create_session(app_name=APP, user_id=USER, state={"lang": "en"})
    produced = []
    for text in TURNS:
        message = types.Content(role="user", parts=[types.Part(text=text)])
        produced += [e async for e in runner.run_async(
            user_id=USER, session_id=session.id, new_message=message)]
    stored = await service.get_session(app_name=APP, user_id=USER, session_id=session.id)
    return stored, model, produced


def dialogue(events: list[Any]) -> list[tuple[str, Any, Any]]:
    """What a conversation is made of, without ids and times: author, content, delta."""
    return [(e.author, e.content, e.actions.state_delta) for e in events]


@modes
async def test_adk_runner_turns_match_the_in_memory_service(
    mode: str, our_backend: Callable[..., OurBackend]
) -> None:
    """Three turns of a tool-using LlmAgent: the model sees the same conversation on our
    store as on ADK's in-memory service, the stored events equal the events the runner
    yielded (plus the user messages), and the state ends the same."""
    backend = our_backend(mode, session_event_storage_limit=0)
    ours, our_model, produced = await adk_conversation(
        SessionStreamsSessionService(backend.service()))
    theirs, their_model, _ = await adk_conversation(InMemorySessionService())
    assert our_model._seen == their_model._seen
    assert len(our_model._seen) == 2 * len(TURNS)
    assert [e for e in ours.events if e.author != "user"] == produced
    assert dialogue(ours.events) == dialogue(theirs.events)
    assert ours.state == theirs.state == {
        "lang": "en", "answer": "It is sunny in Geneva.", "user:last_city": "Geneva",
        "app:lookups": 3}
    # The last request held the whole conversation as stored, before the final answer.
    final = our_model._seen[-1]
    assert final == [e.content for e in ours.events[:-1]]


@modes
def test_adk_sync_runner_across_event_loops(
    mode: str, our_backend: Callable[..., OurBackend]
) -> None:
    """ADK's synchronous Runner.run runs each call on a new thread with a new event loop:
    several turns that way, on one adapter, read back complete."""
    backend = our_backend(mode, session_event_storage_limit=0)
    service = SessionStreamsSessionService(settings=backend.settings)
    runner, model = adk_runner(service)
    session = asyncio.run(service.create_session(app_name=APP, user_id=USER))
    produced = []
    for text in TURNS:
        message = types.Content(role="user", parts=[types.Part(text=text)])
        produced += list(runner.run(user_id=USER, session_id=session.id, new_message=message))
    stored = asyncio.run(service.get_session(app_name=APP, user_id=USER,
                                             session_id=session.id))
    assert stored is not None
    assert [e for e in stored.events if e.author != "user"] == produced
    assert model._seen[-1] == [e.content for e in stored.events[:-1]]


# -- Agents SDK ------------------------------------------------------------------------------
class ScriptedModel(Model):
    """Triage hands off to the weather agent, which calls ``look_up`` and then answers;
    records the input of every request."""

    def __init__(self) -> None:
        self.seen: list[list[Any]] = []
        self._ids = itertools.count(1)

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any,
                           tools: list[Any], output_schema: Any, handoffs: list[Any],
                           *args: Any, **kwargs: Any) -> ModelResponse:
        items = input if isinstance(input, list) else [{"role": "user", "content": input}]
        self.seen.append(copy.deepcopy(items))
        n = next(self._ids)
        last = items[-1]
        if handoffs:  # the triage agent
            output: list[Any] = [ResponseFunctionToolCall(
                id=f"fc_{n}", type="function_call", call_id=f"handoff-{n}",
                name=handoffs[0].tool_name, arguments="{}", status="completed")]
        elif str(last.get("call_id", "")).startswith("tool-"):
            output = [ResponseOutputMessage(
                id=f"msg_{n}", type="message", role="assistant", status="completed",
                content=[ResponseOutputText(type="output_text", annotations=[],
                                            text=f"Answer: {last['output']}")])]
        else:
            question = next(i for i in reversed(items) if i.get("role") == "user")
            city = str(question["content"]).rstrip("?").split()[-1]
            output = [ResponseFunctionToolCall(
                id=f"fc_{n}", type="function_call", call_id=f"tool-{n}", name="look_up",
                arguments=json.dumps({"city": city}), status="completed")]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


@function_tool(name_override="look_up")
def look_up_weather(city: str) -> str:
    """Report the weather of a city."""
    return f"sunny in {city}"


def triage(model: ScriptedModel) -> Agent[Any]:
    weather = Agent(name="weather", model=model, tools=[look_up_weather])
    return Agent(name="triage", model=model, handoffs=[weather])


async def agents_conversation(session: Any) -> tuple[ScriptedModel, list[Any]]:
    """Run every turn; returns the model and the last run's output items."""
    model = ScriptedModel()
    agent = triage(model)
    result = None
    for text in TURNS:
        result = await Runner.run(agent, text, session=session)
    assert result is not None
    assert result.final_output == "Answer: sunny in Geneva"
    return model, [i.to_input_item() for i in result.new_items][-1:]


@modes
async def test_agents_runner_turns_match_the_sqlite_session(
    mode: str, our_backend: Callable[..., OurBackend], tmp_path: Path
) -> None:
    """Three turns with a handoff and a tool call: the model sees the same input on our
    store as on the SDK's SQLiteSession, both store the same items, and the items read back
    are the last request's input plus its answer."""
    backend = our_backend(mode, session_event_storage_limit=0)
    ours = SessionStreamsSession("conv", backend.service(), app_name=APP, user_id=USER)
    theirs = SQLiteSession("conv", tmp_path / "agents.db")
    our_model, last = await agents_conversation(ours)
    their_model, _ = await agents_conversation(theirs)
    assert our_model.seen == their_model.seen
    items = await ours.get_items()
    assert items == await theirs.get_items()
    assert len(items) == 6 * len(TURNS)
    assert items == our_model.seen[-1] + last
    theirs.close()


@modes
def test_agents_run_sync_from_threads_with_their_own_loops(
    mode: str, our_backend: Callable[..., OurBackend]
) -> None:
    """Runner.run_sync from several threads (each with its own event loop) at once, and one
    conversation continued from another thread: every turn is stored."""
    backend = our_backend(mode, session_event_storage_limit=0)
    errors: list[BaseException] = []

    def run(session: SessionStreamsSession, turns: tuple[str, ...]) -> None:
        try:
            agent = triage(ScriptedModel())
            for text in turns:
                Runner.run_sync(agent, text, session=session)
        except BaseException as exc:
            errors.append(exc)
        finally:  # run_sync leaves the thread's loop open: end it as asyncio.run would
            loop = asyncio.get_event_loop_policy().get_event_loop()
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.close()

    def in_threads(*jobs: tuple[SessionStreamsSession, tuple[str, ...]]) -> None:
        threads = [threading.Thread(target=run, args=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

    def session(sid: str) -> SessionStreamsSession:
        return SessionStreamsSession(sid, settings=backend.settings, app_name=APP, user_id=USER)

    parallel = [session(f"conv-{i}") for i in range(3)]
    in_threads(*((s, TURNS[:2]) for s in parallel))
    shared = session("shared")
    in_threads((shared, TURNS[:1]))
    in_threads((shared, TURNS[1:]))

    async def read(s: SessionStreamsSession) -> list[Any]:
        return await s.get_items()

    for s in parallel:
        assert len(asyncio.run(read(s))) == 12
    items = asyncio.run(read(shared))
    assert [i["content"] for i in items if i.get("role") == "user"] == list(TURNS)
