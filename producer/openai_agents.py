"""OpenAI Agents SDK session on sessionstreams (``pip install sessionstreams[openai-agents]``).

One line in an Agents SDK app::

    from sessionstreams.producer.openai_agents import SessionStreamsSession
    session = SessionStreamsSession.from_url("conversation-1", "redis://localhost:6379/0")
    result = await Runner.run(agent, "Hello", session=session)

It implements the SDK's ``Session`` protocol (``get_items(limit)``, ``add_items``,
``pop_item``, ``clear_session``). Each item is one stored event of the session
``Key(app_name, user_id, session_id)``: the event's message is what a Go reader understands,
and the item's JSON is kept in ``extensions["openai_item"]`` when the message does not give
it back exactly (a plain ``{"role", "content"}`` message needs nothing more), so an item read
back equals the one added. The message: user/assistant/system text, ``function_call`` items as
``tool_calls``, ``function_call_output`` items as ``tool`` messages, reasoning summaries as
reasoning content. Events stored by another writer (a Go service) are read back as items built
from their message. Only :class:`~sessionstreams.producer.service.SessionService` methods are
called, so both persistence modes work. In asynchronous mode reads wait for this session's
writes, and ``add_items`` reads the stored session beside its stream write: items added after
another process cleared the conversation start it again, as in synchronous mode (otherwise the
workers would drop them). Items in flight when another process clears the conversation are
cleared with it. Each running event loop gets its own service (see
:class:`~sessionstreams.producer._interop.LoopServices`), so ``Runner.run_sync`` works from any
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec
from agents.memory.session_settings import (
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)

from sessionstreams.common.errors import ClosedError, DecodeError, SessionNotFoundError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Choice,
    Event,
    FunctionDef,
    Key,
    Message,
    Response,
    Session,
    ToolCall,
)
from sessionstreams.common.readpath import INCARNATION
from sessionstreams.common.receipt import Receipt
from sessionstreams.common.settings import Settings
from sessionstreams.producer._interop import (
    ALL_EVENTS,
    LoopServices,
    PendingWrites,
    placeholder_choice,
)
from sessionstreams.producer.service import SessionService

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["OPENAI_EXTENSION", "SessionStreamsSession"]

#: The extensions key holding the item's own JSON.
OPENAI_EXTENSION = "openai_item"

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = ("input_text", "output_text", "text", "refusal", "summary_text")


class SessionStreamsSession:
    """An OpenAI Agents SDK session stored in sessionstreams.

    Args:
        session_id: the conversation id (the sessionstreams session id).
        service: the sessionstreams service to use (not closed by :meth:`close`).
        settings: build and own a service from these settings instead.
        app_name: the sessionstreams app the conversation belongs to.
        user_id: the sessionstreams user the conversation belongs to.
        session_settings: the SDK's session settings (``limit`` for :meth:`get_items`), or a
            dict of them (an unknown key raises TypeError).
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        service: SessionService | None = None,
        *,
        settings: Settings | None = None,
        app_name: str = "openai-agents",
        user_id: str = "default",
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        if (service is None) == (settings is None):
            raise ValueError("pass exactly one of service or settings")
        self.session_id = session_id
        self.session_settings = (
            SessionSettings() if session_settings is None
            else coerce_session_settings(session_settings)
        )
        self._owned = service is None
        self._closed = False
        self.service: SessionService = service if service is not None else SessionService(
            cast(Settings, settings)
        )
        self._services = LoopServices(self.service, owned=self._owned)
        self.key = Key(app_name, user_id, session_id)
        self._pending = PendingWrites()
        self._carrier: Session | None = None
        self._tool_names: dict[str, str] = {}

    @classmethod
    def from_url(cls, session_id: str, url: str, **kwargs: Any) -> SessionStreamsSession:
        """A session owning a :class:`SessionService` on ``url``.

        ``app_name``, ``user_id`` and ``session_settings`` go to the session; any other keyword
        is a :class:`~sessionstreams.common.settings.Settings` field.
        """
        own = {k: kwargs.pop(k) for k in ("app_name", "user_id", "session_settings")
               if k in kwargs}
        return cls(session_id, settings=Settings(url=url, **kwargs), **own)

    async def close(self) -> None:
        """Close this event loop's service if this session built it.

        A session that built its service is then closed for good: every later call raises
        :class:`~sessionstreams.common.errors.ClosedError` (a RuntimeError). A session on a
        caller's service stays usable (the caller closes the service).
        """
        if self._owned:
            self._closed = True
        await self._services.close_current()

    # -- the Session protocol -------------------------------------------------------------
    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The conversation, oldest first; with ``limit`` only the newest ``limit`` items
        (none for ``limit`` <= 0)."""
        svc = await self._service()
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is not None and wanted <= 0:
            return []
        await self._wait_own_writes(svc)
        documents = await svc.get_event_documents(
            self.key, num_events=ALL_EVENTS if wanted is None else wanted
        )
        if not documents:
            return []
        items = [item for document in documents for item in _items_of_document(document)]
        return items if wanted is None else items[-wanted:]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append items, in order, in one write.

        Raises:
            TypeError: an item is not JSON (nothing is written).
        """
        svc = await self._service()
        if not items:
            return
        events = [self._event_for(cast(Mapping[str, Any], item)) for item in items]
        carrier = await self._session(svc)
        try:
            receipts = await self._append(svc, carrier, events)
        except SessionNotFoundError:
            # Cleared by someone else since we created it: start it again.
            self._carrier = None
            carrier = await self._session(svc)
            receipts = await svc.append_events(carrier, events)
        carrier.events.clear()
        self._pending.add(receipts)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item (None when the conversation is empty)."""
        svc = await self._service()
        await self._wait_own_writes(svc)
        removed = await svc.trim_conversations(self.key, count=1)
        for event in reversed(removed):
            items = _items_of(event)
            if items:
                return items[-1]
        return None

    async def clear_session(self) -> None:
        """Delete the conversation."""
        svc = await self._service()
        self._pending.forget(self.key)
        self._carrier = None
        await svc.delete_session(self.key)

    # -- helpers --------------------------------------------------------------------------
    async def _service(self) -> SessionService:
        """This event loop's service; ClosedError once this session was closed."""
        if self._closed:
            raise ClosedError(f"session {self.session_id} is closed")
        return await self._services.current()

    async def _session(self, svc: SessionService) -> Session:
        if self._carrier is None:
            carrier = await svc.create_session(self.key)
            carrier.events.clear()
            self._carrier = carrier
        return self._carrier

    async def _append(
        self, svc: SessionService, carrier: Session, events: Sequence[Event]
    ) -> list[Receipt]:
        """Append ``events``; SessionNotFoundError when the conversation was cleared.

        In synchronous mode the write script checks the session. In asynchronous mode the
        stored session is read beside the stream write (no extra round trip in sequence): when
        it is gone or re-created, the workers will drop the write, so the write is awaited
        (dropped) and the caller starts the conversation again.
        """
        if not svc.settings.enable_async_persist:
            return await svc.append_events(carrier, events)
        incarnation = carrier.service_meta.get(INCARNATION)
        receipts, stored = await asyncio.gather(
            svc.append_events(carrier, events),
            svc.get_session(self.key, num_events=1, exact_window=True, wait_own_writes=False),
        )
        if stored is not None and stored.service_meta.get(INCARNATION) == incarnation:
            return receipts
        timeout = svc.settings.read_your_writes_wait_s
        for receipt in receipts:
            with contextlib.suppress(SessionNotFoundError):
                await svc.wait_persisted(receipt, timeout)
        raise SessionNotFoundError(f"conversation {self.key} was cleared")

    async def _wait_own_writes(self, svc: SessionService) -> None:
        try:
            await self._pending.wait(svc, self.key)
        except SessionNotFoundError:
            self._carrier = None  # cleared meanwhile: those writes were dropped with it

    def _event_for(self, item: Mapping[str, Any]) -> Event:
        event_id = str(uuid.uuid4())
        choice = self._choice_for(item)
        role = choice.message.role or "assistant"
        kind = "tool.response" if role == "tool" else "chat.completion"
        event = Event(
            response=Response(object=kind, choices=[choice], done=True, timestamp=GoTime.now()),
            # One request per item: trim_conversations(count=1) then removes exactly it.
            request_id=event_id,
            author="user" if role == "user" else "assistant",
            id=event_id,
        )
        # The item's JSON is kept only when its message does not give it back exactly.
        encoded = msgspec.json.encode(item, enc_hook=_enc_hook)
        if _items_of(event) != [msgspec.json.decode(encoded)]:
            event.extensions = {OPENAI_EXTENSION: encoded}
        return event

    def _choice_for(self, item: Mapping[str, Any]) -> Choice:
        kind = item.get("type", "message")
        if kind == "function_call":
            call_id = str(item.get("call_id", ""))
            name = str(item.get("name", ""))
            self._tool_names[call_id] = name
            call = ToolCall(type="function", id=call_id, function=FunctionDef(
                name=name, arguments=str(item.get("arguments", "")),
            ))
            return Choice(message=Message(role="assistant", tool_calls=[call]))
        if kind == "function_call_output":
            call_id = str(item.get("call_id", ""))
            return Choice(message=Message(
                role="tool", content=_text_of(item.get("output")), tool_id=call_id,
                tool_name=self._tool_names.get(call_id, ""),
            ))
        if kind == "reasoning":
            summary = _text_of(item.get("summary"))
            if summary:
                return Choice(message=Message(role="assistant", reasoning_content=summary))
        if kind == "message" and "role" in item:
            role = _ROLES.get(str(item["role"]), "assistant")
            text = _text_of(item.get("content"))
            if text:
                return Choice(message=Message(role=role, content=text))
            return placeholder_choice(role)
        return placeholder_choice("assistant")



# -- reading: only the fields an item is built from ------------------------------------------
# Every key Go writes is declared (the ones items do not need as unparsed Raw) and any other
# key is refused, so a document spelling a key in another case (Go accepts it) is decoded whole.
_Skip = msgspec.Raw
_SKIPPED = msgspec.Raw(b"null")


class _View(msgspec.Struct, forbid_unknown_fields=True):
    pass


class _FunctionView(_View):
    name: str = ""
    arguments: str = ""
    strict: _Skip = _SKIPPED
    description: _Skip = _SKIPPED


class _CallView(_View):
    id: str = ""
    function: _FunctionView = msgspec.field(default_factory=_FunctionView)
    type: _Skip = _SKIPPED
    index: _Skip = _SKIPPED
    extra_fields: _Skip = _SKIPPED


class _PartView(_View):
    text: str | None = None
    type: _Skip = _SKIPPED
    image: _Skip = _SKIPPED
    audio: _Skip = _SKIPPED
    video: _Skip = _SKIPPED
    file: _Skip = _SKIPPED
    content_ref: _Skip = _SKIPPED


class _MessageView(_View):
    role: str = ""
    content: str = ""
    content_parts: list[_PartView] | None = None
    tool_id: str = ""
    tool_calls: list[_CallView] | None = None
    tool_name: _Skip = _SKIPPED
    reasoning_content: _Skip = _SKIPPED
    reasoning_signature: _Skip = _SKIPPED


class _ChoiceView(_View):
    message: _MessageView = msgspec.field(default_factory=_MessageView)
    index: _Skip = _SKIPPED
    delta: _Skip = _SKIPPED
    finish_reason: _Skip = _SKIPPED
    logprobs: _Skip = _SKIPPED


class _EventView(_View, rename={"request_id": "requestID", "invocation_id": "invocationId",
                                "parent_invocation_id": "parentInvocationId",
                                "parent_metadata": "parentMetadata",
                                "requires_completion": "requiresCompletion",
                                "long_running_tool_ids": "longRunningToolIDs",
                                "state_delta": "stateDelta", "filter_key": "filterKey"}):
    """What items are read from in a stored event; the other keys are skipped unparsed."""

    choices: list[_ChoiceView] | None = None
    extensions: dict[str, msgspec.Raw] | None = None
    object: _Skip = _SKIPPED
    created: _Skip = _SKIPPED
    model: _Skip = _SKIPPED
    usage: _Skip = _SKIPPED
    system_fingerprint: _Skip = _SKIPPED
    error: _Skip = _SKIPPED
    done: _Skip = _SKIPPED
    is_partial: _Skip = _SKIPPED
    response: _Skip = _SKIPPED
    request_id: _Skip = _SKIPPED
    invocation_id: _Skip = _SKIPPED
    parent_invocation_id: _Skip = _SKIPPED
    parent_metadata: _Skip = _SKIPPED
    author: _Skip = _SKIPPED
    id: _Skip = _SKIPPED
    timestamp: _Skip = _SKIPPED
    branch: _Skip = _SKIPPED
    tag: _Skip = _SKIPPED
    requires_completion: _Skip = _SKIPPED
    long_running_tool_ids: _Skip = _SKIPPED
    state_delta: _Skip = _SKIPPED
    actions: _Skip = _SKIPPED
    filter_key: _Skip = _SKIPPED
    version: _Skip = _SKIPPED


_decode_view = msgspec.json.Decoder(_EventView).decode


def _items_of_document(document: bytes) -> list[TResponseInputItem]:
    """The items of one stored event, as :func:`_items_of` its decoded event gives them.

    Only the fields items come from are decoded. A document that gives no item that way
    (one with a key the view does not know, e.g. spelt in another case, which Go accepts)
    is decoded whole as Go would; one Go refuses gives no item (get_session skips it too).
    """
    try:
        view = _decode_view(document)
    except msgspec.DecodeError:
        view = None
    if view is not None:
        ext = view.extensions
        items = (ext and _kept_item(ext)) or _items_from_choices(view.choices or ())
        if items:
            return cast("list[TResponseInputItem]", items)
    try:
        return _items_of(Event.from_json(document))
    except DecodeError:
        return []


def _items_of(event: Event) -> list[TResponseInputItem]:
    """The items of one event: its kept item JSON, or items built from its message."""
    choices = event.response.choices if event.response is not None else None
    items = _kept_item(event.extensions) or _items_from_choices(choices or ())
    return cast("list[TResponseInputItem]", items)


def _kept_item(extensions: Mapping[str, Any] | None) -> list[Any]:
    """The item kept in ``extensions`` (empty when none or unreadable)."""
    raw = (extensions or {}).get(OPENAI_EXTENSION)
    if raw:
        try:
            return [msgspec.json.decode(raw)]
        except msgspec.DecodeError:
            pass
    return []


def _enc_hook(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_unset=True)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _text_of(value: Any) -> str:
    """The text of an item's ``content``/``output``/``summary`` (str or a list of parts)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            str(p.get("text", "")) for p in value
            if isinstance(p, Mapping) and p.get("type") in _TEXT_PARTS
        )
    return msgspec.json.encode(value, enc_hook=_enc_hook).decode()


def _items_from_choices(choices: Sequence[_ChoiceView | Choice]) -> list[dict[str, Any]]:
    """Items for an event stored by another writer, from its message."""
    items: list[dict[str, Any]] = []
    for choice in choices:
        m = choice.message
        if m.role == "tool":
            items.append({"type": "function_call_output", "call_id": m.tool_id,
                          "output": m.content})
            continue
        text = m.content or "".join(p.text or "" for p in m.content_parts or ())
        if text and m.role in _ROLES:
            items.append({"role": m.role, "content": text})
        if m.tool_calls:
            items.extend(
                {"type": "function_call", "call_id": c.id, "name": c.function.name,
                 "arguments": c.function.arguments}
                for c in m.tool_calls
            )
    return items
