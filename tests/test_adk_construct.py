"""The ADK objects the adapter builds without validation are those validation gives: same
values and types, nested models as model instances, defaults, set fields, private state."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("google.adk")

import msgspec
import pydantic
from google.adk.events.event import Event as AdkEvent
from google.adk.sessions import Session as AdkSession
from google.genai import types
from test_adk_storage import PLAIN, RICH, _through_storage

from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Choice,
    ContentPart,
    Event,
    EventActions,
    FunctionDef,
    Message,
    Response,
    Session,
    ToolCall,
)
from sessionstreams.producer._adk_construct import construct
from sessionstreams.producer._adk_events import (
    ADK_PATCH,
    _direct,
    _rebuilt,
    from_store_event,
    to_store_event,
)
from sessionstreams.producer.adk import _adk_session


def assert_same(built: Any, validated: Any, path: str = "$") -> None:
    """Equal values of identical types all the way down, and for every model the same field
    order, set fields, extra and private attributes."""
    assert type(built) is type(validated), path
    if isinstance(built, pydantic.BaseModel):
        assert built.model_fields_set == validated.model_fields_set, path
        assert built.__pydantic_extra__ == validated.__pydantic_extra__, path
        assert built.__pydantic_private__ == validated.__pydantic_private__, path
        assert list(built.__dict__) == list(validated.__dict__), path
        for name, value in built.__dict__.items():
            assert_same(value, validated.__dict__[name], f"{path}.{name}")
    elif isinstance(built, dict):
        assert list(built) == list(validated), path
        for name, value in built.items():
            assert_same(value, validated[name], f"{path}[{name!r}]")
    elif isinstance(built, list | tuple):
        assert len(built) == len(validated), path
        for i, (a, b) in enumerate(zip(built, validated, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    else:
        assert built == validated, path


def _validated(stored: Event) -> AdkEvent:
    """What reading gave by validating the rebuilt event's JSON (patch laid over it)."""
    fields = _rebuilt(stored)
    patch = (stored.extensions or {}).get(ADK_PATCH)
    if patch:
        fields.update(msgspec.json.decode(patch))
    return AdkEvent.model_validate_json(msgspec.json.encode(fields))


def _go_event(*messages: Message, **kwargs: Any) -> Event:
    """An event as a Go service writes it: a response with one choice per message."""
    choices = [Choice(index=i, message=m) for i, m in enumerate(messages)]
    return Event(response=Response(object="chat.completion", choices=choices, done=True),
                 invocation_id="go-3", author="agent", **kwargs)


GO_WRITTEN = {
    "go user message": Event.message("user", "hi from Go", invocation_id="go-1",
                                     state_delta={"raw": b"not json", "n": b"2"}),
    "go assistant message": Event.message("assistant", "hello", invocation_id="go-2"),
    "go reasoning, parts and tool calls": _go_event(
        Message(role="assistant", content="calling", reasoning_content="think first",
                content_parts=[ContentPart(type="text", text="more"),
                               ContentPart(type="text", text="")],
                tool_calls=[ToolCall(type="function", id="t1", function=FunctionDef(
                    name="f", arguments='{"city": "Zurich", "n": [1, 2.5]}')),
                            ToolCall(type="function", function=FunctionDef(
                                name="g", arguments="not json"))]),
        branch="root.sub", long_running_tool_ids={"t1"},
        actions=EventActions(skip_summarization=True)),
    "go tool responses": _go_event(
        Message(role="tool", content='{"temp": 21}', tool_id="t1", tool_name="f"),
        Message(role="tool", content="plain text", tool_name="g")),
    "go empty response": Event(invocation_id="go-4", author=""),
}


@pytest.mark.parametrize("name", [*PLAIN, *RICH])
def test_read_events_are_the_validated_ones(name: str) -> None:
    """Every stored ADK event reads back as the object validating its JSON gives."""
    stored = _through_storage(to_store_event({**PLAIN, **RICH}[name]))
    assert_same(from_store_event(stored), _validated(stored))


@pytest.mark.parametrize("name", list(GO_WRITTEN))
def test_go_written_events_are_the_validated_ones(name: str) -> None:
    """An event of another writer (no patch) reads back as validation builds it."""
    stored = _through_storage(GO_WRITTEN[name])
    assert_same(from_store_event(stored), _validated(stored))


def test_plain_events_are_built_without_validation() -> None:
    """The rebuilt fields of plain events (and the usual patches) need no validation."""
    for event in [*PLAIN.values(), RICH["usage and model"], RICH["custom metadata"]]:
        stored = _through_storage(to_store_event(event))
        fields = _rebuilt(stored)
        fields.update(msgspec.json.decode((stored.extensions or {}).get(ADK_PATCH) or b"{}"))
        assert construct(AdkEvent, fields) is not None
    for stored in [*(_through_storage(to_store_event(e)) for e in PLAIN.values()),
                   *(_through_storage(e) for e in GO_WRITTEN.values())]:
        assert _direct(stored) is not None


@pytest.mark.parametrize("fields", [
    {"finish_reason": "STOP"},  # an enum field
    {"timestamp": "soon"},  # a value not of its field's type
    {"author": None},  # None for a non-optional field
    {"no_such_field": 1},  # a key naming no field
    {"content": {"parts": [{"text": None}]}},  # None given to a class's own __init__
    {"content": {"parts": [{"thought_signature": "AAE="}]}},  # bytes
])
def test_other_values_are_left_to_validation(fields: dict[str, Any]) -> None:
    """Values outside the JSON types handled are refused (the caller validates)."""
    assert construct(AdkEvent, {"author": "a", **fields}) is None


def test_a_class_with_unknown_validators_is_left_to_validation() -> None:
    """A model whose validators are not known to keep values unchanged is not built."""

    class Shouting(pydantic.BaseModel):
        text: str

        @pydantic.field_validator("text")
        @classmethod
        def upper(cls, value: str) -> str:
            return value.upper()

    assert construct(Shouting, {"text": "hi"}) is None
    assert construct(types.Content, {"role": "model"}) is not None


def test_sessions_are_the_validated_ones() -> None:
    """A listed or read session is the one validation builds, revision marker included."""
    stored = Session(id="s1", app_name="app", user_id="u",
                     state={"a": b'{"x": [1, 2]}', "temp:t": b"1", "raw": b"text"},
                     updated_at=GoTime(1_700_000_000_123_456_789))
    events = [from_store_event(_through_storage(to_store_event(PLAIN["model text"])))]
    built = _adk_session(stored, events)
    validated = AdkSession.model_validate({
        "id": "s1", "app_name": "app", "user_id": "u", "state": {"a": {"x": [1, 2]},
                                                                 "raw": "text"},
        "events": events, "last_update_time": 1_700_000_000.1234567})
    validated._storage_update_marker = built._storage_update_marker
    assert_same(built, validated)
    assert built.events[0] is events[0]
