"""Google ADK events and state <-> sessionstreams events and state.

An ADK event becomes an event a Go reader understands: its text as the message content (role
``user`` or ``assistant``), thoughts as reasoning content, function calls as ``tool_calls``,
function responses as ``tool`` messages (one choice each), with author, invocation id (also
the request id), branch, timestamp (ns) and state delta (JSON bytes per key). Only what the
stored event cannot give back is kept beside it: ``extensions["adk_patch"]``, the fields of the
ADK event's JSON that differ from the ADK event rebuilt from the stored one (none at all for a
plain text message), so an event read back equals the one appended at little more than the
Go event's size. Reading rebuilds the ADK event from the message and lays the patch over it;
events another writer stored (a Go service) are read the same way, without a patch. Events
stored by earlier versions keep the whole ADK event JSON in ``extensions["adk_event"]``,
which reading still prefers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pydantic
import pydantic_core
from google.adk.events.event import Event as AdkEvent
from google.adk.events.event_actions import EventActions as AdkActions
from google.genai import types

from sessionstreams.common.gotime import GoTime
from sessionstreams.common.logs import get_logger
from sessionstreams.common.models import (
    Choice,
    Event,
    EventActions,
    FunctionDef,
    Message,
    Response,
    ResponseError,
    ToolCall,
    Usage,
)
from sessionstreams.producer._adk_construct import construct, convert, make
from sessionstreams.producer._adk_plain import is_plain
from sessionstreams.producer._interop import (
    decode_json_state,
    gotime_from_seconds,
    placeholder_choice,
    seconds_from_ns,
)

__all__ = ["ADK_EXTENSION", "ADK_PATCH", "encode_state", "from_store_event", "to_store_event"]

#: The extensions key holding an ADK event's whole JSON (events stored by earlier versions).
ADK_EXTENSION = "adk_event"
#: The extensions key holding the fields of an ADK event's JSON the stored event cannot give
#: back (a JSON object laid over the ADK event rebuilt from the stored one).
ADK_PATCH = "adk_patch"

log = get_logger("sessionstreams.adk")

_ROLES = {"user": "user", "model": "assistant", "system": "system"}


def json_bytes(value: Any) -> bytes:
    """An ADK state value as JSON bytes (what ADK's database service stores for it).

    Values JSON cannot hold exactly are converted as ADK converts them: NaN and infinities
    become null, bytes base64, anything unknown its ``str``.
    """
    return pydantic_core.to_json(value, inf_nan_mode="null", bytes_mode="base64", fallback=str)


def encode_state(state: Mapping[str, Any] | None) -> dict[str, bytes | None]:
    """An ADK state map (or delta) as JSON bytes per key."""
    return {k: json_bytes(v) for k, v in (state or {}).items()}


def to_store_event(event: AdkEvent) -> Event:
    """The sessionstreams event stored for a (non-partial) ADK event."""
    ts = gotime_from_seconds(event.timestamp)
    delta = event.actions.state_delta if event.actions else None
    response = Response(
        object="tool.response" if _function_responses(event) else "chat.completion",
        created=int(event.timestamp),
        model=event.model_version or "",
        choices=_choices(event),
        usage=_usage(event.usage_metadata),
        error=_error(event),
        timestamp=ts,
        done=True,
    )
    stored = Event(
        response=response,
        request_id=event.invocation_id,
        invocation_id=event.invocation_id,
        author=event.author,
        id=event.id,
        timestamp=ts,
        branch=event.branch or "",
        long_running_tool_ids=set(event.long_running_tool_ids or ()) or None,
        state_delta=encode_state(delta) or None,
        actions=(
            EventActions(skip_summarization=True)
            if event.actions and event.actions.skip_summarization else None
        ),
        version=1,
    )
    stored.extensions = _kept(event, stored)
    return stored


def _kept(event: AdkEvent, stored: Event) -> dict[str, bytes | None] | None:
    """The extensions keeping what ``stored`` cannot give back of ``event`` (None: nothing).

    A patch holds each top-level field of the event's JSON that differs from the rebuilt one
    (null: the event has no value there). A value msgspec cannot write as pydantic would
    keeps the whole event JSON instead.
    """
    if is_plain(event):
        return None  # the JSON equals the rebuilt one: known without dumping it
    return _kept_by_dump(event, stored)


def _kept_by_dump(event: AdkEvent, stored: Event) -> dict[str, bytes | None] | None:
    """:func:`_kept`, found by comparing the event's JSON with the rebuilt one."""
    full = event.model_dump(mode="json", exclude_none=True)
    rebuilt = _rebuilt(stored)
    patch = {k: v for k, v in full.items() if rebuilt.get(k, _ABSENT) != v}
    patch.update({k: None for k in rebuilt if k not in full})
    if not patch:
        return None
    try:
        return {ADK_PATCH: msgspec.json.encode(patch)}
    except (TypeError, ValueError, OverflowError):
        return {ADK_EXTENSION: event.model_dump_json(exclude_none=True).encode()}


def from_store_event(event: Event) -> AdkEvent:
    """The ADK event of a stored event: rebuilt from its message with the kept patch laid
    over it (or, for earlier versions' events, the whole kept ADK JSON)."""
    ext = event.extensions or {}
    raw = ext.get(ADK_EXTENSION)
    if raw:
        try:
            return AdkEvent.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            log.warning("unreadable ADK event kept, using its message", event_id=event.id,
                        error=str(exc))
    patch = ext.get(ADK_PATCH)
    if patch:
        fields = _rebuilt(event)
        try:
            fields.update(_decode_patch(patch))
            return construct(AdkEvent, fields) or AdkEvent.model_validate_json(
                msgspec.json.encode(fields))
        except (msgspec.DecodeError, TypeError, pydantic.ValidationError) as exc:
            log.warning("unreadable ADK patch kept, using the message", event_id=event.id,
                        error=str(exc))
    # A rebuilt event holds only JSON values of the declared types: built as validating its
    # JSON would build it (validated when a newer ADK declares fields otherwise).
    return _direct(event) or AdkEvent.model_validate(_rebuilt(event))


_decode_patch = msgspec.json.Decoder(dict[str, Any]).decode
_ABSENT = object()


# -- ADK -> stored --------------------------------------------------------------------------
def _parts(event: AdkEvent) -> list[types.Part]:
    return list(event.content.parts or []) if event.content else []


def _function_responses(event: AdkEvent) -> list[types.FunctionResponse]:
    return [p.function_response for p in _parts(event) if p.function_response]


def _role(event: AdkEvent) -> str:
    role = event.content.role if event.content else None
    if role in _ROLES:
        return _ROLES[role]
    return "user" if event.author == "user" else "assistant"


def _json_text(value: Any) -> str:
    return json_bytes(value).decode()


def _choices(event: AdkEvent) -> list[Choice]:
    responses = _function_responses(event)
    if responses:
        return [
            Choice(index=i, message=Message(
                role="tool", content=_json_text(r.response or {}), tool_id=r.id or "",
                tool_name=r.name or "",
            ))
            for i, r in enumerate(responses)
        ]
    parts = _parts(event)
    role = _role(event)
    text = "".join(p.text for p in parts if p.text and not p.thought)
    thought = "".join(p.text for p in parts if p.text and p.thought)
    calls = [
        ToolCall(type="function", id=p.function_call.id or "", function=FunctionDef(
            name=p.function_call.name or "", arguments=_json_text(p.function_call.args or {}),
        ))
        for p in parts if p.function_call
    ]
    if not (text or thought or calls):
        return [placeholder_choice(role)]
    finish = event.finish_reason.value.lower() if event.finish_reason else None
    message = Message(role=role, content=text, reasoning_content=thought,
                      tool_calls=calls or None)
    return [Choice(index=0, message=message, finish_reason=finish)]


def _usage(meta: types.GenerateContentResponseUsageMetadata | None) -> Usage | None:
    if meta is None:
        return None
    return Usage(
        prompt_tokens=meta.prompt_token_count or 0,
        completion_tokens=meta.candidates_token_count or 0,
        total_tokens=meta.total_token_count or 0,
    )


def _error(event: AdkEvent) -> ResponseError | None:
    if not (event.error_code or event.error_message):
        return None
    return ResponseError(message=event.error_message or "", type="error",
                         code=event.error_code or "")


# -- stored by another writer -> ADK --------------------------------------------------------
def _as_object(text: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _message_parts(message: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if message.reasoning_content:
        parts.append({"text": message.reasoning_content, "thought": True})
    if message.content:
        parts.append({"text": message.content})
    parts.extend({"text": p.text} for p in message.content_parts or () if p.text)
    for c in message.tool_calls or ():
        call: dict[str, Any] = {"args": _as_object(c.function.arguments or "{}"),
                                "name": c.function.name}
        if c.id:
            call["id"] = c.id
        parts.append({"function_call": call})
    return parts


def _tool_part(message: Message) -> dict[str, Any]:
    response: dict[str, Any] = {"name": message.tool_name,
                                "response": _as_object(message.content)}
    if message.tool_id:
        response["id"] = message.tool_id
    return {"function_response": response}


def _content(event: Event) -> tuple[str, list[dict[str, Any]]]:
    """The role and the parts (JSON) of the content a stored event's message carries."""
    choices = event.response.choices or [] if event.response else []
    if choices and choices[0].message.role == "tool":
        return "user", [_tool_part(c.message) for c in choices if c.message.role == "tool"]
    if choices:
        message = choices[0].message
        return "user" if message.role == "user" else "model", _message_parts(message)
    return "model", []


def _head(event: Event, into: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Set in ``into`` the fields an ADK event takes from the stored one (ids, author, time,
    branch); return the role and the JSON parts of its content."""
    role, parts = _content(event)
    into["id"] = event.id
    into["invocation_id"] = event.invocation_id
    into["author"] = event.author or ("user" if role == "user" else "")
    into["timestamp"] = seconds_from_ns(event.timestamp.unix_ns)
    if event.branch:
        into["branch"] = event.branch
    return role, parts


def _rebuilt(event: Event) -> dict[str, Any]:
    """The JSON (as pydantic dumps it, without nulls) of the ADK event a stored event gives
    back: ids, author, branch, time, state delta and the content its message carries."""
    fields = dict(_EVENT_DEFAULTS)
    role, parts = _head(event, fields)
    if parts:
        fields["content"] = {"parts": parts, "role": role}
    actions = dict(_ACTIONS_DEFAULTS)
    actions["state_delta"] = decode_json_state(event.state_delta or {})
    if event.actions is not None and event.actions.skip_summarization:
        actions["skip_summarization"] = True
    fields["actions"] = actions
    if event.long_running_tool_ids:
        fields["long_running_tool_ids"] = sorted(event.long_running_tool_ids)
    return fields


def _direct(event: Event) -> AdkEvent | None:
    """The ADK event of :func:`_rebuilt` built without the JSON of the event around it (what
    validating that JSON gives; the stored event is a decoded one, its values of their
    declared types); None when a class is not one :func:`make` builds."""
    values = convert(AdkEvent, _EVENT_DEFAULTS)
    if values is None:
        return None
    role, parts = _head(event, values)
    if parts:
        built = [_part(p) for p in parts]
        if None in built:
            return None
        values["content"] = make(types.Content, {"parts": built, "role": role})
    actions = _actions_defaults()
    actions["state_delta"] = decode_json_state(event.state_delta or {})
    if event.actions is not None and event.actions.skip_summarization:
        actions["skip_summarization"] = True
    values["actions"] = make(AdkActions, actions)
    if values["actions"] is None or values.get("content", True) is None:
        return None
    if event.long_running_tool_ids:
        values["long_running_tool_ids"] = set(event.long_running_tool_ids)
    return make(AdkEvent, values)


def _part(part: dict[str, Any]) -> types.Part | None:
    """A content part of its JSON; text parts hold only ``str`` and ``bool`` values, which
    need no converting."""
    return make(types.Part, part) if "text" in part else construct(types.Part, part)


#: What ADK writes for the fields a stored event does not set (taken from ADK itself, so a
#: newer ADK's defaults are followed).
_EVENT_DEFAULTS: dict[str, Any] = {
    k: v for k, v in AdkEvent(author="", invocation_id="").model_dump(
        mode="json", exclude_none=True).items()
    if k not in ("id", "timestamp", "invocation_id", "author", "actions")
}
_ACTIONS_DEFAULTS: dict[str, Any] = AdkActions().model_dump(mode="json", exclude_none=True)


def _actions_defaults() -> dict[str, Any]:
    """The field values of :data:`_ACTIONS_DEFAULTS`, fresh (empty maps made directly)."""
    if _EMPTY_ACTIONS_DEFAULTS:
        return {k: {} for k in _ACTIONS_DEFAULTS}
    return convert(AdkActions, _ACTIONS_DEFAULTS) or {}


_EMPTY_ACTIONS_DEFAULTS = all(v == {} for v in _ACTIONS_DEFAULTS.values())


def session_seconds(value: GoTime) -> float:
    """A stored time as the float seconds of ADK's ``last_update_time``."""
    return seconds_from_ns(value.unix_ns)
