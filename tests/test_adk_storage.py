"""How the ADK adapter stores an ADK event beside the Go event: only what the Go event cannot
give back, and every event reads back equal (through the stored Go JSON)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("google.adk")

from google.adk.events.event import Event as AdkEvent
from google.adk.events.event_actions import EventActions
from google.genai import types

from sessionstreams.common.models import Event
from sessionstreams.producer._adk_events import (
    ADK_EXTENSION,
    ADK_PATCH,
    from_store_event,
    to_store_event,
)


def _content(role: str, *parts: types.Part) -> types.Content:
    return types.Content(role=role, parts=list(parts))


def _event(**kwargs: Any) -> AdkEvent:
    values: dict[str, Any] = {"invocation_id": "inv-1", "author": "assistant"}
    values.update(kwargs)
    return AdkEvent(**values)


PLAIN = {
    "user text": _event(author="user", content=_content("user", types.Part(text="hi"))),
    "model text": _event(content=_content("model", types.Part(text="hello"))),
    "text with delta": _event(
        content=_content("model", types.Part(text="ok")),
        actions=EventActions(state_delta={"n": 1, "s": "x", "nested": {"a": [1, 2.5, None]}})),
    "thought and text": _event(content=_content(
        "model", types.Part(text="thinking", thought=True), types.Part(text="answer"))),
    "function call": _event(content=_content("model", types.Part(
        function_call=types.FunctionCall(id="c1", name="f", args={"city": "Zurich"})))),
    "function response": _event(author="user", content=_content("user", types.Part(
        function_response=types.FunctionResponse(id="c1", name="f",
                                                 response={"weather": "sunny"})))),
    "branch": _event(branch="root.child", content=_content("model", types.Part(text="b"))),
}

RICH = {
    "usage and model": _event(
        content=_content("model", types.Part(text="x")), model_version="gemini-x",
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=3, candidates_token_count=4, total_token_count=7)),
    "custom metadata": _event(content=_content("model", types.Part(text="x")),
                              custom_metadata={"k": [1, {"v": True}]}),
    "error": _event(error_code="E1", error_message="boom"),
    "actions": _event(actions=EventActions(skip_summarization=True, transfer_to_agent="other",
                                           artifact_delta={"file": 2})),
    "long running tool": _event(
        content=_content("model", types.Part(
            function_call=types.FunctionCall(id="c2", name="slow", args={}))),
        long_running_tool_ids={"c2", "c3"}),
    "inline bytes": _event(content=_content("model", types.Part(
        inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG\x00\xff")))),
    "no content": _event(),
    "developer role": _event(author="user", content=_content("system", types.Part(text="s"))),
    "odd timestamp": _event(content=_content("model", types.Part(text="t")),
                            timestamp=1_700_000_000.123456789),
    "turn flags": _event(content=_content("model", types.Part(text="t")), turn_complete=True,
                         interrupted=False, finish_reason=types.FinishReason.STOP),
}


def _through_storage(stored: Event) -> Event:
    return Event.from_json(stored.to_json())


@pytest.mark.parametrize("name", list(PLAIN))
def test_plain_events_keep_nothing_beside_the_go_event(name: str) -> None:
    """Text, thoughts, tool calls and results, deltas and branches live in the Go event
    alone, and read back equal."""
    event = PLAIN[name]
    stored = to_store_event(event)
    assert stored.extensions is None
    assert from_store_event(_through_storage(stored)) == event


@pytest.mark.parametrize("name", list(RICH))
def test_other_fields_are_kept_as_a_patch(name: str) -> None:
    """Fields the Go event cannot carry are kept (a patch, never the whole event) and the
    event reads back equal."""
    event = RICH[name]
    stored = to_store_event(event)
    back = from_store_event(_through_storage(stored))
    assert back == event
    assert back.model_dump_json() == event.model_dump_json()
    assert ADK_EXTENSION not in (stored.extensions or {})


def test_patch_is_smaller_than_the_whole_event() -> None:
    """A patch holds only the differing fields, not the message the Go event carries."""
    event = RICH["usage and model"]
    stored = to_store_event(event)
    assert stored.extensions is not None
    patch = stored.extensions[ADK_PATCH] or b""
    assert b"usage_metadata" in patch
    assert b'"text"' not in patch
    assert len(patch) < len(event.model_dump_json(exclude_none=True))


def test_events_of_earlier_versions_read_back_from_their_whole_json() -> None:
    """An event stored with the whole ADK JSON (earlier versions) reads back from it."""
    event = RICH["usage and model"]
    stored = to_store_event(event)
    stored.extensions = {ADK_EXTENSION: event.model_dump_json(exclude_none=True).encode()}
    stored.response.choices[0].message.content = "a Go writer's different text"  # type: ignore[union-attr]
    assert from_store_event(_through_storage(stored)) == event


@pytest.mark.parametrize("patch", [b"[1,2]", b'{"timestamp":"not a time"}'])
def test_an_unusable_patch_falls_back_to_the_message(patch: bytes) -> None:
    """A patch that is not an object, or does not validate, is ignored: the event is rebuilt
    from its message."""
    stored = to_store_event(PLAIN["model text"])
    stored.extensions = {ADK_PATCH: patch}
    back = from_store_event(_through_storage(stored))
    assert back.content == PLAIN["model text"].content
    assert back.id == PLAIN["model text"].id


def test_an_unreadable_whole_event_json_falls_back_to_the_message() -> None:
    """A kept whole-event JSON that does not validate is logged and skipped (the warning
    itself used to fail) and the event is rebuilt from its message."""
    stored = to_store_event(PLAIN["model text"])
    stored.extensions = {ADK_EXTENSION: b'{"timestamp":"not a time"}'}
    back = from_store_event(_through_storage(stored))
    assert back.content == PLAIN["model text"].content
