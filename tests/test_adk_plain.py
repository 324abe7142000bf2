"""ADK events found plain without dumping them are stored exactly as comparing their dumps
stores them: the same bytes for every event, plain or not."""

from __future__ import annotations

import enum
from typing import Any

import pytest

pytest.importorskip("google.adk")

from google.adk.events.event import Event as AdkEvent
from google.adk.events.event_actions import EventActions
from google.genai import types
from test_adk_storage import PLAIN, RICH, _content, _event

from sessionstreams.producer._adk_events import _kept_by_dump, to_store_event
from sessionstreams.producer._adk_plain import is_plain


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 1


class Custom(AdkEvent):
    pass


def _text(text: str = "t", role: str = "model", **kwargs: Any) -> AdkEvent:
    return _event(content=_content(role, types.Part(text=text)), **kwargs)


def _delta(**delta: Any) -> AdkEvent:
    return _text(actions=EventActions(state_delta=delta))


def _changed(event: AdkEvent, **values: Any) -> AdkEvent:
    """``event`` with attributes set after validation (as application code may set them)."""
    for name, value in values.items():
        setattr(event, name, value)
    return event


EDGES = {
    "plain delta values": _delta(s="x", i=-3, f=1.0, b=False, n=None, l=[1, [2.5, "a"]],
                                 d={"k": {"z": None}}),
    "empty text": _text(""),
    "user role, user author": _text(role="user", author="user"),
    "system role": _text(role="system"),
    "no role": _event(content=types.Content(parts=[types.Part(text="t")])),
    "two parts": _event(content=_content("model", types.Part(text="a"), types.Part(text="b"))),
    "no parts": _event(content=types.Content(role="model", parts=[])),
    "thought false": _event(content=_content("model", types.Part(text="a", thought=False))),
    "thought true": _event(content=_content("model", types.Part(text="a", thought=True))),
    "empty author": _text(author=""),
    "empty branch": _text(branch=""),
    "empty invocation id": _text(invocation_id=""),
    "skip summarization false": _text(actions=EventActions(skip_summarization=False)),
    "skip summarization true": _text(actions=EventActions(skip_summarization=True)),
    "no actions": _changed(_text(), actions=None),
    "empty custom metadata": _text(custom_metadata={}),
    "finish reason": _text(finish_reason=types.FinishReason.STOP),
    "partial false": _text(partial=False),
    "changed node info": _changed(_text(), node_info=types.Content()),
    "artifact delta": _text(actions=EventActions(artifact_delta={"f": 1})),
    "tuple value": _delta(v=(1, 2)),
    "set value": _delta(v={1}),
    "bytes value": _delta(v=b"\x00"),
    "nan value": _delta(v=float("nan")),
    "infinite value": _delta(v=float("inf")),
    "huge int": _delta(v=1 << 70),
    "int keys": _delta(v={1: "a"}),
    "enum value": _delta(v=Color.RED),
    "int enum value": _delta(v=Level.HIGH),
    "object value": _delta(v=object()),
    "int timestamp": _changed(_text(), timestamp=1_700_000_000),
    "subclass": Custom(invocation_id="inv-1", author="a",
                       content=_content("model", types.Part(text="t"))),
}

ALL = {**PLAIN, **RICH, **EDGES}


@pytest.mark.parametrize("name", list(ALL))
def test_stored_bytes_are_those_of_the_dump_comparison(name: str) -> None:
    """Every event is stored byte for byte as comparing its dump with the rebuilt event
    stores it (a plain one keeps nothing beside the Go event)."""
    event = ALL[name]
    stored = to_store_event(event)
    expected = to_store_event(event)
    expected.extensions = _kept_by_dump(event, expected)
    assert stored.to_json() == expected.to_json()
    if is_plain(event):
        assert stored.extensions is None


def test_common_messages_are_found_plain() -> None:
    """Text messages, with or without state deltas and branches, skip the dump."""
    found = {name for name, event in ALL.items() if is_plain(event)}
    assert {"user text", "model text", "text with delta", "branch", "plain delta values",
            "user role, user author", "skip summarization true"} <= found
    assert not found & {"empty text", "system role", "two parts", "thought false",
                        "empty branch", "tuple value", "huge int", "enum value", "subclass"}
