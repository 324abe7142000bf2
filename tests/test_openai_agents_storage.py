"""How the OpenAI Agents SDK adapter stores an item beside the Go event: the item's JSON only
when the message does not give it back exactly, and every item reads back equal."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("agents")

from sessionstreams.common.models import Event, FunctionDef, ToolCall
from sessionstreams.producer.openai_agents import OPENAI_EXTENSION, SessionStreamsSession

PLAIN: list[Any] = [
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": "It is sunny."},
    {"role": "system", "content": "Be brief."},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
]
KEPT: list[Any] = [
    {"role": "developer", "content": "Be brief."},  # its message says "system"
    {"type": "message", "role": "user", "content": "typed"},
    {"role": "user", "content": [{"type": "input_text", "text": "parts"}]},
    {"type": "function_call", "call_id": "c1", "name": "get_weather",
     "arguments": '{"city":"Zurich"}', "id": "fc_1", "status": "completed"},
    {"type": "reasoning", "id": "rs_1", "summary": []},
    {"role": "user", "content": ""},
]


@pytest.fixture
async def session(make_service) -> SessionStreamsSession:
    """The adapter on a fresh SessionService (sync mode, every event kept)."""
    svc = await make_service(session_event_storage_limit=0)
    return SessionStreamsSession("conv-1", svc, app_name="agents", user_id="u1")


async def _stored(session: SessionStreamsSession) -> list[Event]:
    got = await session.service.get_session(session.key, exact_window=True)
    assert got is not None
    return [Event.from_json(e.to_json()) for e in got.events]


async def test_plain_items_keep_nothing_beside_the_go_event(session) -> None:
    """Plain messages, tool calls and tool outputs live in the Go event alone and read back
    equal."""
    await session.add_items(PLAIN)
    assert [e.extensions for e in await _stored(session)] == [None] * len(PLAIN)
    assert await session.get_items() == PLAIN


async def test_other_items_keep_their_json(session) -> None:
    """Items whose message does not give them back keep their JSON and read back equal."""
    await session.add_items(KEPT)
    stored = await _stored(session)
    assert all(OPENAI_EXTENSION in (e.extensions or {}) for e in stored)
    assert await session.get_items() == KEPT


def _golden_events() -> list[bytes]:
    import json
    from pathlib import Path

    golden = Path(__file__).resolve().parent / "golden"
    cases = json.loads((golden / "index.json").read_text())["cases"]
    return [(golden / f"{c['name']}.json").read_bytes() for c in cases if c["kind"] == "event"]


def test_items_read_from_documents_equal_the_items_of_decoded_events() -> None:
    """Reading items from the stored JSON (only the fields items come from) gives the items
    of the whole decoded event, for every golden event Go accepts and for keys spelt in
    another case (which Go accepts)."""
    from sessionstreams.common.errors import DecodeError
    from sessionstreams.producer.openai_agents import _decode_view, _items_of, _items_of_document

    documents = _golden_events()
    message = Event.message("user", "Weather?").to_json()
    documents.append(message.replace(b'"choices"', b'"Choices"'))
    documents.append(message.replace(b'"content"', b'"Content"'))
    call = Event.message("assistant", "Let me look.")
    call.response.choices[0].message.tool_calls = [
        ToolCall(type="function", id="c1", function=FunctionDef(name="f", arguments="{}"))]
    documents.append(call.to_json().replace(b'"content"', b'"Content"'))
    assert _decode_view(message).choices  # plain documents take the short path
    with_items = 0
    for document in documents:
        try:
            event = Event.from_json(document)
        except DecodeError:
            continue
        assert _items_of_document(document) == _items_of(event), document
        with_items += bool(_items_of(event))
    assert with_items >= 5
    assert _items_of_document(documents[-3]) == [{"role": "user", "content": "Weather?"}]
    assert len(_items_of_document(documents[-1])) == 2  # the text and the call


def _message_event(choices: list[Any], extensions: dict[str, bytes] | None = None) -> bytes:
    from sessionstreams.common.models import Response

    event = Event(response=Response(object="chat.completion", choices=choices, done=True),
                  author="user", id="e1")
    event.extensions = extensions
    return event.to_json()


def _plain_and_near_plain_documents() -> list[bytes]:
    """Plain text messages and the documents just beside them: every role, text in parts
    only, empty text, tool calls, two choices, an item kept beside the message."""
    from sessionstreams.common.models import Choice, ContentPart, Message

    def choice(**message: Any) -> Choice:
        return Choice(message=Message(**message))

    call = ToolCall(type="function", id="c1", function=FunctionDef(name="f", arguments="{}"))
    docs = [_message_event([choice(role=role, content="hi")])
            for role in ("user", "assistant", "system", "developer", "tool", "", "other")]
    docs += [
        _message_event([choice(role="user", content="",
                               content_parts=[ContentPart(type="text", text="in parts")])]),
        _message_event([choice(role="user", content="")]),
        _message_event([choice(role="assistant", content="calling", tool_calls=[call])]),
        _message_event([choice(role="tool", content="sunny", tool_id="c1")]),
        _message_event([choice(role="user", content="one"), choice(role="assistant",
                                                                  content="two")]),
        _message_event([]),
        _message_event([choice(role="user", content="hi")],
                       {OPENAI_EXTENSION: b'{"type":"message","role":"user","content":"hi"}'}),
        _message_event([choice(role="user", content="hi")], {"other": b'{"x":1}'}),
    ]
    return docs


@pytest.mark.parametrize("index", range(len(_plain_and_near_plain_documents())))
def test_plain_and_near_plain_messages_give_the_items_of_the_decoded_event(index: int) -> None:
    """Reading only the fields items come from gives what the whole decoded event gives, for
    one-choice text messages and the documents just beside them."""
    from sessionstreams.producer.openai_agents import _items_of, _items_of_document

    document = _plain_and_near_plain_documents()[index]
    assert _items_of_document(document) == _items_of(Event.from_json(document))
